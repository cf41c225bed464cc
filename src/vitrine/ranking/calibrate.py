"""What a close match scores in one catalog, measured once per index generation (never per query): shopper-like queries
made from the catalog's own values, its product images against the catalog minus themselves, and the words it knows."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from vitrine.data.roles import column_roles, shopper_queries
from vitrine.data.schema import CatalogSchema
from vitrine.data.tagged import PREDICTED_FIELDS, PREDICTED_PREFIX
from vitrine.data.words import stem, words
from vitrine.errors import InvalidInput
from vitrine.index.build import index_schema
from vitrine.ranking.relevance import METHODS, QUIET_ABOVE, SHOPPER_QUIET_ABOVE, Calibration

CALIBRATION_PRODUCTS = 256  # products sampled (spread over the catalog) to make queries from and to query with
MAX_QUERIES = (
    1024  # shopper-like queries encoded, at most (several templates per product: a finer scale than 256 titles)
)
# products whose title and values words count as the catalog's words (all of a catalog up to this); Milvus answers
# at most 16,384 rows a query
VOCABULARY_ROWS = 16_384
MIN_SAMPLES = 8  # fewer calibration queries than this cannot say what a good match scores
# Roles (`vitrine.data.roles`) whose values say how a product is, not what it is: "black heel" names a colour only,
# and a catalog without heels still has "heel" in some title, so its words cannot vouch for it (docs/ranking.md)
DESCRIPTIVE_ROLES = ("colour", "gender", "brand", "material", "pattern", "season", "usage")

Encode = Callable[[list[str]], np.ndarray]


def calibrate(store, encode: Encode, method: str = "shopper", n: int = CALIBRATION_PRODUCTS) -> Calibration | None:
    """The store's calibration by `method`: "shopper" (queries from the catalog's values, images, words) or "titles"
    (the catalog's titles, text only: the judgement before shopper queries, kept to compare)."""
    if method not in METHODS:
        raise InvalidInput(f"relevance calibration must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "titles":
        return Calibration.from_store(store, encode, n)
    rows = store.sample(n)
    schema = _schema(store)
    queries = shopper_texts(schema, rows)
    on, quiet = "shopper", SHOPPER_QUIET_ABOVE
    if len(queries) < MIN_SAMPLES:  # no role columns (or too few filled): what the catalog calls its products
        queries, on, quiet = _titles(rows), "titles", QUIET_ABOVE
    if len(queries) < MIN_SAMPLES:
        return None
    vectors = np.asarray(encode(queries), dtype=np.float32)
    images, image_texts = image_scores(store, [row["id"] for row in rows], vectors)
    return Calibration(
        _best_scores(store, vectors), int(store.stats()["products"]), method="shopper", calibrated_on=on,
        quiet_above=quiet, words=catalog_words(store.sample(VOCABULARY_ROWS)), kind_fields=kind_fields(schema),
        images=images, image_texts=image_texts, queries=vectors if images is not None else None,
    )


def shopper_texts(schema: CatalogSchema, rows: Sequence[dict], limit: int = MAX_QUERIES) -> list[str]:
    """The distinct shopper-like queries the sampled products answer (a seeded sample of `limit` when there are
    more)."""
    texts = sorted({text for row in rows for text in shopper_queries(schema, row)})
    return sorted(random.Random(0).sample(texts, limit)) if len(texts) > limit else texts


def image_scores(store, ids: Sequence[str], queries: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """What an image of something the catalog has scores, sorted, over the sampled products: the best cosine of each
    one's image to another product, and to one of the calibration's shopper `queries` (None, None: too few images)."""
    found, vectors = store.vectors_of(list(ids))
    if len(found) < MIN_SAMPLES:
        return None, None
    best = [next((h.score for h in hits if h.id != own), None) for own, hits in zip(found, store.search(vectors, 2))]
    kept = [i for i, b in enumerate(best) if b is not None]
    if len(kept) < MIN_SAMPLES:
        return None, None
    to_texts = (vectors[kept] @ queries.T).max(axis=1)
    return np.sort(np.asarray([best[i] for i in kept], dtype=np.float32)), np.sort(to_texts.astype(np.float32))


def kind_fields(schema: CatalogSchema) -> frozenset[str]:
    """The categorical columns whose values say what a product is: its type column, and those with no descriptive
    role."""
    roles = column_roles(schema)
    describe = {roles[role] for role in DESCRIPTIVE_ROLES if role in roles}
    return frozenset(name for name in schema.facet_fields if name not in describe)


def catalog_words(rows: Sequence[dict]) -> frozenset[str]:
    """The folded words of the products' titles and values: a query word among them names something the catalog has."""
    out: set[str] = set()
    for row in rows:
        for name, value in row.items():
            if (
                name != "id"
                and name != PREDICTED_FIELDS
                and not name.startswith(PREDICTED_PREFIX)
                and isinstance(value, str)
            ):
                out.update(stem(word) for word in words(value))
    return frozenset(out)


def _best_scores(store, vectors: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray([hits[0].score for hits in store.search(vectors, 1) if hits], dtype=np.float32))


def _schema(store) -> CatalogSchema:
    """The schema saved with the index, or (an index built before schemas were saved) one over its stored fields."""
    saved = index_schema(store)
    if saved is not None:
        return saved
    names = sorted(
        n for n in store.fields() if not n.startswith(PREDICTED_PREFIX) and n not in (PREDICTED_FIELDS, "title")
    )
    return CatalogSchema(name="stored", attributes=tuple(names))


def _titles(rows: Sequence[dict]) -> list[str]:
    return [row["title"] for row in rows if (row.get("title") or "").strip()]
