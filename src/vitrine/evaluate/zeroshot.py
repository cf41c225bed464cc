"""Zero-shot classification of catalog items among class names, with prompt ensembling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vitrine.data.prompts import PromptSet
from vitrine.embed.encode import encode_texts
from vitrine.errors import InvalidInput
from vitrine.evaluate.metrics import confusion_matrix, f1_scores, topk_accuracy

CONFUSED_CLASSES = 15  # rows and columns of the reported confusion matrix
CONFUSED_PAIRS = 20


def class_embeddings(
    model, prompts: PromptSet, field: str, classes: Sequence[str], ensemble: bool = True
) -> torch.Tensor:
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


def classify(
    image_embeds: torch.Tensor, class_embeds: torch.Tensor, seen_mask: torch.Tensor | None = None,
    calibration: float = 0.0,
) -> torch.Tensor:
    """Cosine scores (N, C); calibrated stacking subtracts `calibration` from classes seen in training."""
    scores = image_embeds @ class_embeds.t()
    if seen_mask is not None and calibration:
        scores = classify_scores(scores, seen_mask, calibration)
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
        **confusion_figures(predictions, labels, classes),
    }


def confusion_figures(
    predictions: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], n_classes: int = CONFUSED_CLASSES,
    n_pairs: int = CONFUSED_PAIRS,
) -> dict:
    """The most confused classes: "confusion" holds the counts (row = true, column = predicted) among the `n_classes`
    classes with the most mistakes made or received, busiest first; "confused_pairs" the `n_pairs` largest
    off-diagonal counts of the whole matrix."""
    matrix = confusion_matrix(predictions, labels, len(classes))
    wrong = matrix.clone()
    wrong.fill_diagonal_(0)
    mass = (wrong.sum(0) + wrong.sum(1)).tolist()
    chosen = sorted((c for c in range(len(classes)) if mass[c]), key=lambda c: (-mass[c], classes[c]))[:n_classes]
    pairs = sorted(
        ((int(wrong[t, p]), classes[t], classes[p]) for t, p in wrong.nonzero().tolist()),
        key=lambda x: (-x[0], x[1], x[2]),
    )
    return {
        "confusion": {
            "classes": [classes[c] for c in chosen],
            "counts": matrix[chosen][:, chosen].tolist() if chosen else [],
        },
        "confused_pairs": [{"true": t, "predicted": p, "count": n} for n, t, p in pairs[:n_pairs]],
    }


def seen_unseen_report(scores: torch.Tensor, labels: torch.Tensor, seen_mask: torch.Tensor) -> dict:
    """Generalised zero-shot: top-1 over items of seen classes (S), of unseen classes (U), and H = 2SU / (S + U)."""
    correct = scores.argmax(1) == labels
    item_seen = seen_mask[labels]
    seen = float(correct[item_seen].float().mean()) if item_seen.any() else None
    unseen = float(correct[~item_seen].float().mean()) if (~item_seen).any() else None
    harmonic = (
        2 * seen * unseen / (seen + unseen) if seen is not None and unseen is not None and seen + unseen else None
    )
    r = lambda v: None if v is None else round(v, 4)  # noqa: E731
    return {
        "seen_top1": r(seen), "unseen_top1": r(unseen), "H": r(harmonic), "n_seen": int(item_seen.sum()),
        "n_unseen": int((~item_seen).sum()),
    }


def tune_calibration(
    scores: torch.Tensor, labels: torch.Tensor, seen_mask: torch.Tensor, grid: Sequence[float] | None = None
) -> dict:
    """Calibrated stacking: the margin that maximises the harmonic mean of seen- and unseen-class top-1.

    `scores` (N, C) rank every item among all classes; items whose label is a seen class measure seen
    accuracy, the others unseen accuracy. Use held-out classes of your own choosing, never the test classes.
    """
    grid = list(grid) if grid is not None else [round(0.005 * i, 3) for i in range(61)]
    item_seen = seen_mask[labels]
    if item_seen.all() or (~item_seen).all():
        raise InvalidInput("tuning needs items of both seen and held-out classes")
    best = None
    for gamma in grid:
        correct = classify_scores(scores, seen_mask, gamma).argmax(1) == labels
        seen_acc, unseen_acc = float(correct[item_seen].float().mean()), float(correct[~item_seen].float().mean())
        harmonic = 2 * seen_acc * unseen_acc / (seen_acc + unseen_acc) if seen_acc + unseen_acc else 0.0
        if best is None or harmonic > best["harmonic"]:
            best = {
                "gamma": gamma, "seen_top1": round(seen_acc, 4), "heldout_top1": round(unseen_acc, 4),
                "harmonic": round(harmonic, 4),
            }
    return best


def classify_scores(scores: torch.Tensor, seen_mask: torch.Tensor, calibration: float) -> torch.Tensor:
    """Subtract `calibration` from the scores of seen classes."""
    return scores - calibration * seen_mask.to(scores.dtype).view(1, -1)
