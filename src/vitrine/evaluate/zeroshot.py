"""Zero-shot classification of catalog items among class names, with prompt ensembling."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vitrine.data.prompts import PromptSet
from vitrine.embed.encode import encode_texts
from vitrine.evaluate.metrics import f1_scores, topk_accuracy


def class_embeddings(model, prompts: PromptSet, field: str, classes: Sequence[str], ensemble: bool = True) -> torch.Tensor:
    """(C, D): the normalised mean of each class's prompt embeddings (or its first prompt only)."""
    per_class = [prompts.class_prompts(field, name) for name in classes]
    if not ensemble:
        per_class = [texts[:1] for texts in per_class]
    flat = [text for texts in per_class for text in texts]
    embeds = encode_texts(model, flat)
    out, start = [], 0
    for texts in per_class:
        out.append(F.normalize(embeds[start : start + len(texts)].mean(0), dim=-1))
        start += len(texts)
    return torch.stack(out)


def classify(image_embeds: torch.Tensor, class_embeds: torch.Tensor, seen_mask: torch.Tensor | None = None, calibration: float = 0.0) -> torch.Tensor:
    """Cosine scores (N, C); calibrated stacking subtracts `calibration` from classes seen in training."""
    scores = image_embeds @ class_embeds.t()
    if seen_mask is not None and calibration:
        scores = scores - calibration * seen_mask.to(scores.dtype).view(1, -1)
    return scores


def zero_shot_report(scores: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], field: str) -> dict:
    """The JSON object `vitrine eval zero-shot` prints."""
    predictions = scores.argmax(1)
    macro, weighted = f1_scores(predictions, labels, len(classes))
    per_class = {}
    for c, name in enumerate(classes):
        members = labels == c
        if members.any():
            per_class[name] = {"n": int(members.sum()), "correct": int((predictions[members] == c).sum())}
    return {
        "field": field,
        "n": int(len(labels)),
        "classes": len(classes),
        "top1": round(topk_accuracy(scores, labels, 1), 4),
        "top5": round(topk_accuracy(scores, labels, 5), 4),
        "macro_f1": round(macro, 4),
        "weighted_f1": round(weighted, 4),
        "per_class": per_class,
    }
