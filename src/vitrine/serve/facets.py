"""The fields a shopper filters by (the web UI's chips): the catalog's categorical columns from the schema saved with
the index, then the predicted tags that stand in for columns the catalog lacks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vitrine.data.schema import CatalogSchema
from vitrine.data.schema_infer import ColumnProfile
from vitrine.data.tagged import PREDICTED_FIELDS, PREDICTED_PREFIX
from vitrine.index.build import index_schema

Values = Mapping[str, Sequence[tuple[str, int]]]  # field -> (value, products), as `Ranker.catalog_values` gives them


def catalog_facets(store, values: Values) -> dict:
    """`facets_from` for an open store: its saved schema (None for an index built before schemas were saved)."""
    return facets_from(index_schema(store), values)


def facets_from(schema: CatalogSchema | None, values: Values) -> dict:
    """`{"source", "attributes", "facets": [{"field", "predicted", "filled"}]}`: the catalog's own categorical columns
    in column order, then the fields only the tagger filled in (`predicted`); `filled` counts the products whose value
    the tagger filled in. `source` says where the columns came from: "index" (the saved schema) or "fields" (an older
    index: its stored fields, numbers and free text left out)."""
    stored = [
        name
        for name in values
        if name not in ("id", "title", PREDICTED_FIELDS) and not name.startswith(PREDICTED_PREFIX)
    ]
    filled = _filled_counts(values)
    if schema is not None:
        attributes = list(schema.attributes)
        own = [name for name in schema.facet_fields if name in values]
        predicted = [name for name in stored if name not in schema.attributes and PREDICTED_PREFIX + name in values]
    else:
        predicted = [
            name
            for name in stored
            if PREDICTED_PREFIX + name in values and filled.get(name, 0) >= _products(values[name])
        ]
        attributes = sorted(name for name in stored if name not in predicted)
        own = [name for name in attributes if ColumnProfile.from_counts(name, values[name]).kind == "category"]
    facets = [{"field": name, "predicted": False, "filled": filled.get(name, 0)} for name in own]
    facets += [
        {"field": name, "predicted": True, "filled": filled.get(name, 0)} for name in _tagger_order(predicted, values)
    ]
    return {"source": "fields" if schema is None else "index", "attributes": attributes, "facets": facets}


def _products(counts: Sequence[tuple[str, int]]) -> int:
    return sum(n for _, n in counts)


def _filled_counts(values: Values) -> dict[str, int]:
    """How many products had each field filled in by the tagger (from their `predicted_fields` lists)."""
    filled: dict[str, int] = {}
    for listed, n in values.get(PREDICTED_FIELDS, ()):
        for name in filter(None, listed.split(",")):
            filled[name] = filled.get(name, 0) + n
    return filled


def _tagger_order(names: Sequence[str], values: Values) -> list[str]:
    """`names` in the tagger vocabulary's order, as the commonest `predicted_fields` lists give it (then by name)."""
    order: list[str] = []
    for listed, _ in values.get(PREDICTED_FIELDS, ()):
        order += [name for name in listed.split(",") if name and name not in order]
    return sorted(names, key=lambda name: (order.index(name) if name in order else len(order), name))
