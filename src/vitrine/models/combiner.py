"""Combining functions for composed retrieval: (reference image features, modification text features) -> query.

`sum` is CLIP4Cir's stage-1 combination; `Combiner` is its stage-2 network (Baldrati et al., CVPRW 2022).
Both take and return unit-norm (B, D) features and save as composed-query heads (`vitrine.models.heads`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitrine.models.heads import LOGIT_SCALE, SavedHead, register_head


@register_head
class SumCombiner(SavedHead):
    """normalize(image + text): no parameters."""

    kind = "sum"

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(image + text, dim=-1)


@dataclass(frozen=True)
class CombinerConfig:
    """Widths default to CLIP4Cir's: projections 4x and the hidden layer 8x the embedding size."""

    embed_dim: int
    projection_dim: int | None = None
    hidden_dim: int | None = None
    dropout: float = 0.5
    encoder: str | None = None  # the registry name of the encoder whose features it was trained on

    @property
    def projection(self) -> int:
        return self.projection_dim or 4 * self.embed_dim

    @property
    def hidden(self) -> int:
        return self.hidden_dim or 8 * self.embed_dim


@register_head
class Combiner(SavedHead):
    """Two projections, concatenated; a fusion branch plus a learned mix lambda of text and image; residual; L2 norm."""

    kind = "combiner"
    config_class = CombinerConfig

    def __init__(self, config: CombinerConfig):
        super().__init__()
        self.config = config
        d, p, h = config.embed_dim, config.projection, config.hidden
        self.text_projection = nn.Sequential(nn.Linear(d, p), nn.ReLU(), nn.Dropout(config.dropout))
        self.image_projection = nn.Sequential(nn.Linear(d, p), nn.ReLU(), nn.Dropout(config.dropout))
        self.fusion = nn.Sequential(nn.Linear(2 * p, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, d))
        self.mix = nn.Sequential(
            nn.Linear(2 * p, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, 1), nn.Sigmoid()
        )

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([self.text_projection(text), self.image_projection(image)], dim=-1)
        lam = self.mix(joint)
        return F.normalize(self.fusion(joint) + lam * text + (1 - lam) * image, dim=-1)

    def mix_weight(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The lambda given to the text features, (B, 1)."""
        return self.mix(torch.cat([self.text_projection(text), self.image_projection(image)], dim=-1))

    def logits(self, image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, T) similarities x 100 between combined queries and L2-normalised target features."""
        return LOGIT_SCALE * self(image, text) @ F.normalize(targets, dim=-1).T
