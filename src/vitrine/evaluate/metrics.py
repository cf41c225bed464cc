"""Ranking and classification metrics on plain tensors, checked against hand-computed examples in the tests."""

from __future__ import annotations

import torch


def target_ranks(
    queries: torch.Tensor, gallery: torch.Tensor, targets: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """0-based rank of each query's target in the gallery: how many gallery items score strictly higher.

    Chunked over queries so that a 44k x 44k score matrix is never held at once.
    """
    ranks = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ gallery.t()
        own = scores.gather(1, targets[start : start + chunk].view(-1, 1))
        ranks.append((scores > own).sum(1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    return float((ranks < k).float().mean()) if len(ranks) else 0.0


def mean_reciprocal_rank(ranks: torch.Tensor) -> float:
    return float((1.0 / (ranks.float() + 1.0)).mean()) if len(ranks) else 0.0


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels.view(-1, 1)).any(1).float().mean()) if len(labels) else 0.0


def f1_scores(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """(macro F1, support-weighted F1) over the classes that occur in `labels`."""
    present = torch.unique(labels)
    f1s, supports = [], []
    for c in present.tolist():
        tp = float(((predictions == c) & (labels == c)).sum())
        fp = float(((predictions == c) & (labels != c)).sum())
        fn = float(((predictions != c) & (labels == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        supports.append(fn + tp)
    if not f1s:
        return 0.0, 0.0
    total = sum(supports)
    return sum(f1s) / len(f1s), sum(f * s for f, s in zip(f1s, supports)) / total


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class."""
    flat = labels.long() * n_classes + predictions.long()
    return torch.bincount(flat, minlength=n_classes * n_classes).view(n_classes, n_classes)


def top_rows(scores: torch.Tensor, k: int, favoured=()) -> list[int]:
    """The k highest-scoring rows of a 1-D score vector; among equal scores, rows in `favoured` (a query's targets)
    first, then the lower row: the order in which `target_ranks` counts ties (only strictly higher scores rank
    above)."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    floor = scores.topk(k).values[-1]
    candidates = (scores >= floor).nonzero().view(-1).tolist()  # topk picks arbitrarily among rows tied at the floor
    favoured = {int(row) for row in favoured}
    return sorted(candidates, key=lambda row: (-float(scores[row]), row not in favoured, row))[:k]
