"""vitrine: an open fashion vision-language toolkit."""

__version__ = "0.1.0"

# The Python API (vitrine.api) loads torch, so its names are imported when first used (PEP 562): `import vitrine`
# stays cheap for the CLI and the service, which read only __version__ here.
_API = ("create_model_and_transforms", "get_tokenizer", "Index", "Tagger")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from vitrine import api

        return getattr(api, name)
    raise AttributeError(f"module 'vitrine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
