"""Composed-retrieval metrics: the rank of the best target, with chosen gallery items excluded per query."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def best_target_ranks(
    queries: torch.Tensor, gallery: torch.Tensor, targets: Sequence[Sequence[int]],
    exclude: Sequence[int | None] | None = None, chunk: int = 512,
) -> torch.Tensor:
    """0-based rank of each query's highest-scoring target among the gallery rows.

    `exclude[i]` (the reference image) is removed from query i's ranking. Ties count in the query's
    favour only against items that score exactly the same as the target.
    """
    ranks = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ gallery.T
        size = len(scores)
        if exclude is not None:
            rows = [i for i in range(size) if exclude[start + i] is not None]
            scores[rows, [exclude[start + i] for i in rows]] = -torch.inf
        owner = torch.tensor([i for i in range(size) for _ in targets[start + i]], dtype=torch.long)
        columns = torch.tensor([t for i in range(size) for t in targets[start + i]], dtype=torch.long)
        best = torch.full((size,), -torch.inf, dtype=scores.dtype).scatter_reduce(
            0, owner, scores[owner, columns], reduce="amax"
        )
        ranks.append((scores > best[:, None]).sum(1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def recall(ranks: torch.Tensor, k: int) -> float:
    return float((ranks < k).float().mean()) if len(ranks) else 0.0


def subset_ranks(
    queries: torch.Tensor, gallery: torch.Tensor, subsets: Sequence[Sequence[int]], targets: Sequence[int],
    references: Sequence[int],
) -> torch.Tensor:
    """CIRR's Recall_subset: rank of the target among the query's img_set members, the reference removed."""
    ranks = []
    for query, members, target, reference in zip(queries, subsets, targets, references):
        candidates = [m for m in dict.fromkeys(members) if m != reference]
        scores = gallery[candidates] @ query
        target_score = scores[candidates.index(target)]
        ranks.append(int((scores > target_score).sum()))
    return torch.tensor(ranks, dtype=torch.long)
