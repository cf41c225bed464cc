"""vitrine: an open fashion vision-language toolkit."""

__version__ = "0.1.0"
