"""Fusing ranked lists: reciprocal rank fusion, or a weighted sum of min-max normalised scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

RRF_K = 60  # Cormack et al. 2009


def reciprocal_rank(
    rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None, k: int = RRF_K
) -> dict[str, float]:
    """id -> sum over the lists of weight / (k + rank); absent from a list adds nothing."""
    weights = weights or [1.0] * len(rankings)
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, item in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


def normalised(scores: Mapping[str, float]) -> dict[str, float]:
    """Scores scaled to [0, 1] by their own minimum and maximum (all 1 when they are equal)."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {item: (score - low) / span if span > 0 else 1.0 for item, score in scores.items()}


def weighted(score_lists: Sequence[Mapping[str, float]], weights: Sequence[float]) -> dict[str, float]:
    """id -> sum of weight x normalised score; absent from a list counts as that list's lowest."""
    fused: dict[str, float] = {}
    for scores, weight in zip(score_lists, weights):
        for item, score in normalised(scores).items():
            fused[item] = fused.get(item, 0.0) + weight * score
    return fused
