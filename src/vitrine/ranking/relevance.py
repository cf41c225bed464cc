"""Is anything in the catalog a close match? Judged against how well the catalog's own titles find their products."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CALIBRATION_TITLES = 256  # the catalog titles encoded to calibrate (spread over the catalog)
# A query whose best cosine is below this share of the catalog's own titles' is "no close match" (unless its words
# all named catalog values). 0.1 measured best of 0 / 0.01 / 0.02 / 0.05 / 0.1 (README, "Ranking").
QUIET_ABOVE = 0.1


@dataclass(frozen=True)
class Calibration:
    """The best cosine each sampled catalog title reaches in the catalog, sorted: what a query for a product this
    catalog has scores."""

    scores: np.ndarray
    products: int  # the catalog's size when calibrated

    @classmethod
    def from_store(cls, store, encode: Callable[[list[str]], np.ndarray], n: int = CALIBRATION_TITLES) -> "Calibration | None":
        titles = [row["title"] for row in store.sample(n) if (row.get("title") or "").strip()]
        if len(titles) < 8:
            return None  # too few titles to say what a good match scores
        vectors = np.asarray(encode(titles), dtype=np.float32)
        best = [hits[0].score for hits in store.search(vectors, 1) if hits]
        return cls(np.sort(np.asarray(best, dtype=np.float32)), int(store.stats()["products"]))

    def level(self, similarity: float) -> float:
        """The share of the catalog's own titles whose best match scores below `similarity` (0 to 1)."""
        return float(np.searchsorted(self.scores, similarity, side="right") / len(self.scores))

    def stale(self, products: int) -> bool:
        return abs(products - self.products) > max(16, self.products // 4)


def judge(calibration: Calibration | None, similarity: float | None, named_all_words: bool, quiet_above: float = QUIET_ABOVE) -> dict:
    """The response's relevance: `close_match` false when the best cosine is below what nearly every catalog title
    reaches, unless every word of the query named a catalog value that products have."""
    if similarity is None or calibration is None:
        return {"close_match": True if named_all_words else None, "level": None, "top_similarity": similarity,
                "basis": "words" if named_all_words else "none", "words_named": named_all_words}
    level = calibration.level(similarity)
    return {"close_match": bool(level > quiet_above or named_all_words), "level": round(level, 4),
            "top_similarity": round(float(similarity), 4), "basis": "words" if named_all_words and level <= quiet_above else "similarity",
            "words_named": named_all_words}

