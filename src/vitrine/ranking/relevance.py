"""Is anything in the catalog a close match? Judged against what queries for products the catalog has score there
(`vitrine.ranking.calibrate` measures it), and by whether the query's words name what the catalog has."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# "shopper": shopper-like queries from the catalog's values, image queries judged, the words rules below; "titles":
# the catalog's titles, text queries only (the judgement before, kept to compare: README, "Ranking")
METHODS = ("shopper", "titles")
CALIBRATION_TITLES = 256  # the catalog titles encoded to calibrate (spread over the catalog)
# A query whose best cosine is below this share of the catalog's own titles' is "no close match" (unless its words
# all named catalog values). 0.1 measured best of 0 / 0.01 / 0.02 / 0.05 / 0.1 (README, "Ranking").
QUIET_ABOVE = 0.1
# With shopper queries: 0.05 measured best of 0.02 / 0.05 / 0.1 / 0.15 (at 0.1 the "backpack for college"
# was "no close match" again; docs/ranking.md).
SHOPPER_QUIET_ABOVE = 0.05
# An image query is "no close match" when the mean of its two levels (its best cosine to a product among the sampled
# products' best cosine to another product; its best cosine to a calibration query among theirs) is at most this:
# 0.05 measured best of 0.02 / 0.05 / 0.1 / 0.15 / 0.2: above it, photos of products the catalog has fire
# (docs/ranking.md)
IMAGE_QUIET_ABOVE = 0.05


@dataclass(frozen=True)
class Evidence:
    """What one ranked query tells about its match, read off the ranking."""

    similarity: float | None  # the best cosine of a product (under the hard filters) to the query
    named_all: bool = False  # every word named a catalog value, and some product (under the filters) has them all
    catalog_words: bool = False  # a value said what the product is, and the other words are words of the catalog
    image: bool = False  # an image query: judged against the catalog's images, not words
    text_similarity: float | None = None  # an image query's best cosine to the calibration's shopper queries


@dataclass(frozen=True)
class Calibration:
    """What a query for a product this catalog has scores: its best cosine, sorted, for the sampled queries."""

    scores: np.ndarray
    products: int  # the catalog's size when calibrated
    method: str = "titles"  # the rules in force (METHODS)
    calibrated_on: str = "titles"  # what the text scores come from: "shopper" queries, or the catalog's "titles"
    quiet_above: float = QUIET_ABOVE
    image_quiet_above: float = IMAGE_QUIET_ABOVE
    words: frozenset[str] = field(default_factory=frozenset)  # the folded words of the catalog's titles and values
    kind_fields: frozenset[str] = field(default_factory=frozenset)  # the fields whose values say what a product is
    # images (None: not judged): sampled products' best cosine to another product, and to a calibration query (both
    # sorted), and the calibration queries' vectors, which an image query is compared with
    images: np.ndarray | None = None
    image_texts: np.ndarray | None = None
    queries: np.ndarray | None = None

    @classmethod
    def from_store(
        cls, store, encode: Callable[[list[str]], np.ndarray], n: int = CALIBRATION_TITLES
    ) -> "Calibration | None":
        titles = [row["title"] for row in store.sample(n) if (row.get("title") or "").strip()]
        if len(titles) < 8:
            return None  # too few titles to say what a good match scores
        vectors = np.asarray(encode(titles), dtype=np.float32)
        best = [hits[0].score for hits in store.search(vectors, 1) if hits]
        return cls(np.sort(np.asarray(best, dtype=np.float32)), int(store.stats()["products"]))

    def level(self, similarity: float) -> float:
        """The share of the calibration queries whose best match scores below `similarity` (0 to 1): a binary search."""
        return _share(self.scores, similarity)

    def image_level(self, similarity: float, text_similarity: float) -> float:
        """An image query's level: the mean of its shares among the sampled products' images (best cosine to another
        product, and to a calibration query); one product of its vector with the queries' is all it costs."""
        return (_share(self.images, similarity) + _share(self.image_texts, text_similarity)) / 2

    def text_similarity(self, vector: np.ndarray) -> float | None:
        """An image query's best cosine to the calibration queries (None when images are not judged)."""
        return (
            None
            if self.queries is None
            else float(np.max(self.queries @ np.asarray(vector, dtype=np.float32).reshape(-1)))
        )

    def stale(self, products: int) -> bool:
        return abs(products - self.products) > max(16, self.products // 4)


def judge(calibration: Calibration | None, evidence: Evidence) -> dict:
    """The response's relevance: `close_match` false when the best cosine is below what nearly every calibration query
    reaches, unless the words vouch for the query (they all named values some product has; or, with the shopper
    method, one named what the product is and the others are words of the catalog). Images are judged against images."""
    # judged on the cosines as shown (4 decimals): a batch's forward pass differs from a lone query's in the last
    # bits, and on a catalog of identical photos that alone moved a level (tests/test_one_query_path.py)
    similarity, named = (
        (None if evidence.similarity is None else round(float(evidence.similarity), 4)),
        evidence.named_all,
    )
    image = (
        evidence.image
        and calibration is not None
        and calibration.images is not None
        and evidence.text_similarity is not None
    )
    if similarity is None or calibration is None or (evidence.image and not image):
        return {
            "close_match": True if named else None, "level": None, "top_similarity": similarity,
            "basis": "words" if named else "none", "words_named": named,
        }
    if image:
        quiet, level = (
            calibration.image_quiet_above,
            calibration.image_level(similarity, round(float(evidence.text_similarity), 4)),
        )
    else:
        quiet, level = calibration.quiet_above, calibration.level(similarity)
    words = named or (calibration.method == "shopper" and evidence.catalog_words)
    return {
        "close_match": bool(level > quiet or words),
        "level": round(level, 4),
        "top_similarity": round(float(similarity), 4),
        "basis": "words" if words and level <= quiet else "similarity",
        "words_named": named,
    }


def _share(scores: np.ndarray, similarity: float) -> float:
    return float(np.searchsorted(scores, similarity, side="right") / len(scores))
