"""The one interface every encoder implements: images or texts in, L2-normalised embeddings out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitrine.data.transforms import ImageTransform
from vitrine.errors import WrongType


@dataclass(frozen=True)
class Features:
    """Embeddings (B, D), L2-normalised, plus token features (B, N, W) for heads that need them."""

    embeds: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor | None = None  # (B, N) with 1 for real tokens; None when every token is real


class Encoder(nn.Module, ABC):
    """A dual encoder. Subclasses set `name`, `embed_dim` and `image_transform`."""

    name: str
    embed_dim: int
    image_transform: ImageTransform
    training_info: dict = {}  # what the trainer recorded (seen classes, calibration); empty for external models

    @abstractmethod
    def image_features(self, pixels: torch.Tensor) -> Features:
        """Encode a preprocessed batch (B, 3, H, W)."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Turn texts into the tensors `text_features_from_tokens` takes."""

    @abstractmethod
    def text_features_from_tokens(self, batch: dict[str, torch.Tensor]) -> Features:
        """Encode tokenized texts."""

    def text_features(self, texts: Sequence[str]) -> Features:
        if isinstance(texts, str):
            raise WrongType("encode_text takes a list of strings, not a single string")
        return self.text_features_from_tokens(self.tokenize(list(texts)))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D), unit norm."""
        return self.image_features(pixels).embeds

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """list of B strings -> (B, D), unit norm."""
        return self.text_features(texts).embeds

    def preprocess(self, images) -> torch.Tensor:
        """PIL images -> a batch tensor, with this model's eval transform."""
        return torch.stack([self.image_transform(image) for image in images])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # What `vitrine train clip` needs of a model it fine-tunes (vitrine's dual encoders and hf:/openclip: CLIPs).
    TRAINABLE_PARTS = ("image_tower", "text_tower", "image_proj", "text_proj")

    def parts(self) -> dict[str, nn.Module]:
        """The modules a training config's `freeze` block locks or unlocks, by the names in TRAINABLE_PARTS."""
        raise WrongType(f"{self.name} cannot be fine-tuned by vitrine (no trainable parts)")

    def tower_blocks(self, part: str) -> nn.ModuleList:
        """The blocks of 'image_tower' or 'text_tower', input to output (the last N can train in a locked tower)."""
        raise WrongType(f"{self.name} has no tower blocks to unlock")

    logit_bias: torch.Tensor | None = None  # SigLIP's learned bias: trained with the sigmoid loss when present


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
