"""Attribute filters checked against what the catalog holds: a filter no product can match is refused with the reason,
the same words on every surface (HTTP 400, the CLI's `error:` line, the Python API's exception)."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence

from vitrine.data.tagged import PREDICTED_FIELDS, PREDICTED_PREFIX
from vitrine.errors import InvalidInput

NEAR_MATCHES = 3  # values named as "did you mean"
COMMONEST = 5  # values named when none is near


class FilterError(InvalidInput):
    """A filter on a field the catalog lacks, or on a value no product has; the message names what would match."""

    code = "unknown_filter"


class UnknownFilterField(FilterError):
    """A filter on a field the catalog lacks; the message lists the fields it has."""

    code = "unknown_filter_field"


class UnknownFilterValue(FilterError):
    """A filter on a value no product has; the message names the nearest held values ("did you mean 'Women'?")."""

    code = "unknown_filter_value"


def check_filters(
    filters: Mapping[str, Sequence[str]] | None, fields: Collection[str],
    values: Mapping[str, Sequence[tuple[str, int]]], listing: str | None = None,
) -> None:
    """Raise `FilterError` unless every filtered field is one of `fields` and every value one some product has.

    `values` is each field's values with counts, commonest first; `listing` (with `{field}`) says where the user can
    see them all ("GET /attributes?field={field} lists all")."""
    if not filters:
        return
    unknown = sorted(set(filters) - set(fields))
    if unknown:
        # predicted tags can be filtered on, but the catalog's own fields are what the user should be told about
        known = sorted(n for n in fields if not n.startswith(PREDICTED_PREFIX) and n != PREDICTED_FIELDS)
        raise UnknownFilterField(f"unknown filter field(s) {unknown}; this catalog has: {', '.join(known)}")
    for name, wanted in filters.items():
        rows = values.get(name, [])
        held = {v for v, _ in rows}
        for value in wanted:
            if value not in held:
                raise UnknownFilterValue(f"no product has {name}={value!r}{_hint(value, rows, name, listing)}")


def _hint(value: str, rows: Sequence[tuple[str, int]], name: str, listing: str | None) -> str:
    """The nearest held values (any case), or else the commonest ones."""
    by_case = {v.casefold(): v for v, _ in rows}
    near = [by_case[v] for v in difflib.get_close_matches(value.casefold(), list(by_case), n=NEAR_MATCHES, cutoff=0.5)]
    if near:
        return f"; did you mean {', '.join(repr(v) for v in near)}?"
    where = f" ({listing.format(field=name)})" if listing else ""
    return f"; its commonest values: {', '.join(repr(v) for v, _ in rows[:COMMONEST])}{where}"
