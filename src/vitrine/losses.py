"""Contrastive losses: CLIP's symmetric InfoNCE, a multi-positive variant, and their shares for one rank of several
(vitrine.train.distributed gathers the global batch they score against)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vitrine.errors import ConfigError

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


def multi_positive_loss(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor
) -> torch.Tensor:
    """InfoNCE where `positives[i, j]` marks text j as a match for image i (several per row allowed).

    Each direction's target is uniform over that row's positives: the cross-entropy against a
    soft target, so that duplicate captions in a batch are not pushed apart as negatives.
    """
    if positives.shape != (len(image), len(text)):
        raise ConfigError(f"positives must be ({len(image)}, {len(text)}), got {tuple(positives.shape)}")
    positives = positives.to(image.dtype)
    if (positives.sum(1) == 0).any() or (positives.sum(0) == 0).any():
        raise ConfigError("every image and every text needs at least one positive")
    scale = clamp_logit_scale(logit_scale)
    logits = scale * image @ text.t()
    image_targets = positives / positives.sum(1, keepdim=True)
    text_targets = (positives / positives.sum(0, keepdim=True)).t()
    image_loss = -(image_targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_loss = -(text_targets * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return 0.5 * (image_loss + text_loss)


def sigmoid_loss(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor,
    positives: torch.Tensor,
) -> torch.Tensor:
    """SigLIP's loss: every image-text pair of the batch is its own match / no-match decision (Zhai et al. 2023, eq. 1):
    -1/|B| sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b)), z_ij = 1 for a positive pair and -1 otherwise."""
    logits = logit_scale.exp() * image @ text.t() + logit_bias
    signs = 2 * positives.to(logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / len(image)


def positives_from_ids(image_ids: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
    """Positive mask from caption ids: image i matches every text with the caption id it was paired with."""
    return image_ids.view(-1, 1) == text_ids.view(1, -1)


class ClipLoss(nn.Module):
    """The loss used in training: multi-positive when caption ids are given, plain InfoNCE otherwise."""

    def forward(self, image, text, logit_scale, caption_ids: torch.Tensor | None = None) -> torch.Tensor:
        if caption_ids is None:
            return clip_loss(image, text, logit_scale)
        return multi_positive_loss(image, text, logit_scale, positives_from_ids(caption_ids, caption_ids))


def sharded_multi_positive_loss(
    image: torch.Tensor, text: torch.Tensor, image_all: torch.Tensor, text_all: torch.Tensor, logit_scale: torch.Tensor,
    image_positives: torch.Tensor, text_positives: torch.Tensor, n_images: int, n_texts: int,
) -> torch.Tensor:
    """This rank's share of `multi_positive_loss` over the global batch (the shares sum to the global loss).

    `image`/`text`: this rank's rows; `*_all`: the gathered global batch; `image_positives` (local images x all texts)
    and `text_positives` (local texts x all images) mark the matches.
    """
    scale = clamp_logit_scale(logit_scale)

    def share(rows: torch.Tensor, columns: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        positives = positives.to(rows.dtype)
        targets = positives / positives.sum(1, keepdim=True)
        return -(targets * F.log_softmax(scale * rows @ columns.t(), dim=1)).sum()

    return 0.5 * (share(image, text_all, image_positives) / n_images + share(text, image_all, text_positives) / n_texts)


def sharded_contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, image_all: torch.Tensor, text_all: torch.Tensor, logit_scale: torch.Tensor,
    ids: torch.Tensor, ids_all: torch.Tensor, total: int,
) -> torch.Tensor:
    """The paired case (image i with text i, equal caption ids also positives): `ClipLoss` split over ranks."""
    positives = ids.view(-1, 1) == ids_all.view(1, -1)
    return sharded_multi_positive_loss(
        image, text, image_all, text_all, logit_scale, positives, positives, total, total
    )
