"""AGCN, RaF-CLIP's attribute-guided composed network: a second combining function beside the Combiner.

Reference-image tokens and modification-text tokens attend to each other (bidirectional transformer
cross-attention, `layers` deep); their pooled result is projected to the embedding space, and a learned
per-dimension gate mixes it with the reference image and text embeddings:

    query = normalize(g * fused + (1 - g) * (image + text)),  g = sigmoid(W [fused, image, text] + b)

The gate bias starts negative, so an untrained AGCN is close to CLIP4Cir's `sum` and learns away from it.
Inputs: unit-norm (B, D) image and text embeddings, image tokens (B, N, Wi), text tokens (B, L, Wt) and
the text mask (B, L). Saved like the Combiner: combiner.json (kind "agcn") + combiner.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitrine.errors import ConfigError
from vitrine.models.heads import LOGIT_SCALE, SavedHead, register_head


@dataclass(frozen=True)
class AGCNConfig:
    embed_dim: int
    image_width: int  # width of the image tower's tokens
    text_width: int  # width of the text tower's tokens
    width: int = 256
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    gate_bias: float = -2.0  # initial gate sigmoid(-2) = 0.12: start near `sum`
    encoder: str | None = None

    def __post_init__(self):
        if self.layers < 1 or self.heads < 1 or self.width % self.heads:
            raise ConfigError(f"AGCN needs layers >= 1 and a width ({self.width}) divisible by heads ({self.heads})")


class CrossAttentionBlock(nn.Module):
    """Image tokens attend to text tokens and text tokens to image tokens (both from the block's input), then FFNs."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm_image, self.norm_text = nn.LayerNorm(width), nn.LayerNorm(width)
        self.image_from_text = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.text_from_image = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ffn_image = _feed_forward(width, dropout)
        self.ffn_text = _feed_forward(width, dropout)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, text_padding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i, t = self.norm_image(image), self.norm_text(text)
        image = image + self.image_from_text(i, t, t, key_padding_mask=text_padding, need_weights=False)[0]
        text = text + self.text_from_image(t, i, i, need_weights=False)[0]
        return image + self.ffn_image(image), text + self.ffn_text(text)


def _feed_forward(width: int, dropout: float) -> nn.Module:
    return nn.Sequential(
        nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width)
    )


@register_head
class AGCN(SavedHead):
    kind = "agcn"
    config_class = AGCNConfig
    needs_tokens = True

    def __init__(self, config: AGCNConfig):
        super().__init__()
        self.config = config
        w, d = config.width, config.embed_dim
        self.image_in = nn.Linear(config.image_width, w)
        self.text_in = nn.Linear(config.text_width, w)
        self.blocks = nn.ModuleList(CrossAttentionBlock(w, config.heads, config.dropout) for _ in range(config.layers))
        self.norm = nn.LayerNorm(2 * w)
        self.fused_out = nn.Linear(2 * w, d)
        self.gate = nn.Linear(3 * d, d)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, config.gate_bias)

    def fuse(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """(B, D) unnormalised fused features from the two token sequences."""
        image = self.image_in(image_tokens.float())
        text = self.text_in(text_tokens.float())
        padding = text_mask == 0
        for block in self.blocks:
            image, text = block(image, text, padding)
        weights = text_mask.unsqueeze(-1).to(text.dtype)
        pooled_text = (text * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.fused_out(self.norm(torch.cat([image.mean(1), pooled_text], dim=-1)))

    def gate_values(self, fused: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, D) gate in (0, 1): the share of the fused features in each dimension of the query."""
        return torch.sigmoid(self.gate(torch.cat([F.normalize(fused, dim=-1), image, text], dim=-1)))

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, image_tokens: torch.Tensor, text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        fused = self.fuse(image_tokens, text_tokens, text_mask)
        gate = self.gate_values(fused, image, text)
        return F.normalize(gate * F.normalize(fused, dim=-1) + (1 - gate) * (image + text), dim=-1)

    def logits(self, *inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return LOGIT_SCALE * self(*inputs) @ F.normalize(targets, dim=-1).T
