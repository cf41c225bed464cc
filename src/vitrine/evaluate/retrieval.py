"""Text -> image and image -> text retrieval of exact products, with distractor galleries."""
from __future__ import annotations

import torch

from vitrine.evaluate.metrics import mean_reciprocal_rank, recall_at_k, target_ranks


def retrieval_report(query_embeds: torch.Tensor, gallery_embeds: torch.Tensor, targets: torch.Tensor, ks=(1, 5, 10)) -> dict:
    ranks = target_ranks(query_embeds, gallery_embeds, targets)
    report = {"n_queries": int(len(ranks)), "gallery_size": int(len(gallery_embeds))}
    report.update({f"R@{k}": round(recall_at_k(ranks, k), 4) for k in ks})
    report["MRR"] = round(mean_reciprocal_rank(ranks), 4)
    return report
