"""Search: one `Query` type, checked once, and one engine that every surface calls."""

from vitrine.search.engine import SAME_PRODUCT, ImageQuery, SearchEngine
from vitrine.search.query import Filters, Query, QueryError, checked_filters, parse_filters

__all__ = [
    "SAME_PRODUCT", "Filters", "ImageQuery", "Query", "QueryError", "SearchEngine", "checked_filters", "parse_filters",
]
