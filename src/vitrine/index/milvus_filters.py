"""Attribute filters as Milvus boolean expressions, with every value a quoted literal (never expression syntax)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from vitrine.data.text import is_unicode
from vitrine.errors import InvalidInput, WrongType

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KEYWORDS = {
    "and", "or", "not", "in", "like", "true", "false", "exists", "AND", "OR", "NOT", "IN", "LIKE", "TRUE", "FALSE",
    "EXISTS",
}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """A Milvus string literal equal to `value`: quotes, backslashes and control characters escaped."""
    if not isinstance(value, str):
        raise WrongType(f"filter values are strings, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput("filter values cannot contain NUL characters")
    if not is_unicode(value):
        raise InvalidInput("filter values must be Unicode text; this one holds a lone surrogate")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def field_reference(name: str, declared: Collection[str]) -> str:
    """A declared scalar field by name; any other attribute through the dynamic field, `$meta["name"]`."""
    if name in declared and _IDENTIFIER.match(name) and name not in _KEYWORDS:
        return name
    return f"$meta[{quote(name)}]"


def filter_expression(filters: Mapping[str, str | Sequence[str]], declared: Collection[str]) -> str | None:
    """`{"gender": ["Men", "Boys"], "articleType": "Shirts"}` -> `(gender == "Men" or gender == "Boys") and (...)`.

    Returns None when some field lists no values (nothing can match).
    """
    clauses = []
    for name, values in sorted(filters.items()):
        values = [values] if isinstance(values, str) else list(values)
        if not values:
            return None
        try:
            reference = field_reference(name, declared)
            literals = [quote(v) for v in dict.fromkeys(values)]
        except ValueError as exc:
            raise InvalidInput(f"filter {name!r}: {exc}") from None
        clauses.append("(" + " or ".join(f"{reference} == {literal}" for literal in literals) + ")")
    return " and ".join(clauses)
