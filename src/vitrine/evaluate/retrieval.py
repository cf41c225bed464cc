"""Text -> image and image -> text retrieval of exact products, with distractor galleries."""

from __future__ import annotations

import torch

from vitrine.evaluate.metrics import mean_reciprocal_rank, recall_at_k, target_ranks, top_rows

WORST_QUERIES = 12  # how many of the worst-ranked queries a report lists (with their top results)
TOP_RESULTS = 5


def retrieval_report(
    query_embeds: torch.Tensor, gallery_embeds: torch.Tensor, targets: torch.Tensor, ks=(1, 5, 10),
    ranks: torch.Tensor | None = None,
) -> dict:
    """n_queries, gallery_size, R@k and MRR; `ranks` (from `target_ranks`) when they were computed already."""
    ranks = target_ranks(query_embeds, gallery_embeds, targets) if ranks is None else ranks
    report = {"n_queries": int(len(ranks)), "gallery_size": int(len(gallery_embeds))}
    report.update({f"R@{k}": round(recall_at_k(ranks, k), 4) for k in ks})
    report["MRR"] = round(mean_reciprocal_rank(ranks), 4)
    return report


def worst_queries(
    query_embeds: torch.Tensor, gallery_embeds: torch.Tensor, targets: torch.Tensor, ranks: torch.Tensor,
    count: int = WORST_QUERIES, k: int = TOP_RESULTS,
) -> list[tuple[int, int, list[int]]]:
    """The `count` queries whose target ranks lowest (the first query first among equals): (query row, 1-based rank of
    its target, its top-k gallery rows, its target first among equal scores)."""
    order = sorted(range(len(ranks)), key=lambda i: (-int(ranks[i]), i))[:count]
    if not order:
        return []
    scores = query_embeds[order] @ gallery_embeds.t()
    return [(row, int(ranks[row]) + 1, top_rows(scores[j], k, [int(targets[row])])) for j, row in enumerate(order)]
