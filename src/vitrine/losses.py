"""Contrastive losses: CLIP's symmetric InfoNCE and a multi-positive variant."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# CLIP clamps the learned logit scale at 100 (temperature 0.01) to keep training stable.
MAX_LOGIT_SCALE = math.log(100.0)


def clamp_logit_scale(logit_scale: torch.Tensor) -> torch.Tensor:
    """exp(logit_scale), clamped as CLIP does."""
    return logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: image i matches text i. Inputs are L2-normalised (B, D)."""
    scale = clamp_logit_scale(logit_scale)
    logits = scale * image @ text.t()
    labels = torch.arange(len(image), device=image.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def multi_positive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """InfoNCE where `positives[i, j]` marks text j as a match for image i (several per row allowed).

    Each direction's target is uniform over that row's positives: the cross-entropy against a
    soft target, so that duplicate captions in a batch are not pushed apart as negatives.
    """
    if positives.shape != (len(image), len(text)):
        raise ValueError(f"positives must be ({len(image)}, {len(text)}), got {tuple(positives.shape)}")
    positives = positives.to(image.dtype)
    if (positives.sum(1) == 0).any() or (positives.sum(0) == 0).any():
        raise ValueError("every image and every text needs at least one positive")
    scale = clamp_logit_scale(logit_scale)
    logits = scale * image @ text.t()
    image_targets = positives / positives.sum(1, keepdim=True)
    text_targets = (positives / positives.sum(0, keepdim=True)).t()
    image_loss = -(image_targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_loss = -(text_targets * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return 0.5 * (image_loss + text_loss)


def text_smoothed_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor,
                       text_reference: torch.Tensor, alpha: float, temperature: float = 0.05) -> torch.Tensor:
    """Multi-positive InfoNCE whose targets keep `alpha` of their mass on texts similar to the positive one in a
    reference text space (the pretrained tower's): images learn that space's geometry, not only the training labels,
    which is what lets class names never trained on still score near their look-alikes."""
    positives = positives.to(image.dtype)
    reference = F.normalize(text_reference.float(), dim=-1)
    similar = F.softmax(reference @ reference.t() / temperature, dim=1)  # (T, T): text j -> texts like it
    hard_i = positives / positives.sum(1, keepdim=True)
    hard_t = (positives / positives.sum(0, keepdim=True)).t()
    image_targets = (1 - alpha) * hard_i + alpha * hard_i @ similar
    text_targets = (1 - alpha) * hard_t + alpha * similar @ hard_t
    text_targets = text_targets / text_targets.sum(1, keepdim=True)
    logits = clamp_logit_scale(logit_scale) * image @ text.t()
    image_loss = -(image_targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_loss = -(text_targets * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return 0.5 * (image_loss + text_loss)


def positives_from_ids(image_ids: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
    """Positive mask from caption ids: image i matches every text with the caption id it was paired with."""
    return image_ids.view(-1, 1) == text_ids.view(1, -1)


class ClipLoss(nn.Module):
    """The loss used in training: multi-positive when caption ids are given, plain InfoNCE otherwise."""

    def forward(self, image, text, logit_scale, caption_ids: torch.Tensor | None = None) -> torch.Tensor:
        if caption_ids is None:
            return clip_loss(image, text, logit_scale)
        return multi_positive_loss(image, text, logit_scale, positives_from_ids(caption_ids, caption_ids))
