"""Training configuration as data: one JSON file reproduces a run, and it is saved next to the checkpoint."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from vitrine.data.splits import SplitConfig, default_protocol_split


@dataclass(frozen=True)
class SourceConfig:
    """One dataset of the mixture. `weight` is how often each of its items is seen per epoch."""

    path: str
    weight: float = 1.0
    schema: str = "kagl"
    prompts: str = "kagl"


@dataclass(frozen=True)
class CaptionConfig:
    """Per step, each image gets its title with probability `title_prob`, else a random attribute template."""

    title_prob: float = 0.5
    use_titles: bool = True
    use_templates: bool = True


@dataclass(frozen=True)
class FreezeConfig:
    """Which parts train. The CPU default: image tower and projections train, the MiniLM tower is locked."""

    image_tower: bool = False
    text_tower: bool = True
    image_proj: bool = False
    text_proj: bool = False


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 200
    text_proj_lr_scale: float = 0.1  # a slower text projection stays near the pretrained text space
    text_proj_l2_to_init: float = 0.0  # pull toward the initial projection (keeps unseen class names usable)
    grad_clip: float = 1.0


@dataclass(frozen=True)
class LockedConfig:
    """Recipes on cached tower outputs. With `freeze.image_tower` true the heads train on cached pooled features;
    with `lower_blocks` > 0 (and the tower not frozen) the blocks from `lower_blocks` on train too, on cached feature
    maps of the locked lower blocks, at `top_lr_scale` times the learning rate, BatchNorm statistics kept. With `text_layers` > 0 (or a model whose text
    pooling is learned), the top MiniLM layers and the pooling train too, on cached token states of the layers below."""

    views: tuple[str, ...] = ("plain", "flip")  # cached variants; each step draws one per item
    hard_negative_fraction: float = 0.0  # share of each batch that is a same-type, other-colour partner of another item
    cache_batch_size: int = 128
    lower_blocks: int = 0
    top_lr_scale: float = 0.1
    text_smoothing: float = 0.0  # share of each target spread over texts similar in MiniLM space (losses.text_smoothed_loss)
    text_smoothing_temperature: float = 0.05
    text_layers: int = 0  # top MiniLM layers that train, on cached token states of the layers below (vitrine.train.text_side)
    text_lr_scale: float = 0.1  # their learning rate (and a learned pooling's) relative to optim.lr

    def __post_init__(self):
        if not 0.0 <= self.hard_negative_fraction < 1.0:
            raise ValueError(f"locked.hard_negative_fraction must be in [0, 1), got {self.hard_negative_fraction}")
        if not self.views:
            raise ValueError("locked.views needs at least one view")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a `vitrine train clip` run depends on."""

    sources: tuple[SourceConfig, ...] = (SourceConfig("../shared/data/kagl"),)
    model: str = "small"  # a config name in vitrine/models/configs, or a vitrine model directory to start from
    out: str = "runs/clip"
    seed: int = 0
    epochs: int = 20
    max_steps: int | None = None  # stop early (tests, smoke runs); the schedule still follows `epochs`
    batch_size: int = 512
    accumulation: int = 1  # micro-batches per step; each is its own contrastive batch
    amp: bool = True  # bf16 autocast (CPU and GPU)
    grad_checkpointing: bool = False
    device: str = "cpu"
    threads: int = 0
    checkpoint_every: int = 200  # steps
    val_every_epochs: int = 1
    val_max_items: int = 2000
    max_items: int | None = None  # cap the training pool (tests)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    locked: LockedConfig = field(default_factory=LockedConfig)
    split: SplitConfig = field(default_factory=default_protocol_split)
    cache_dir: str = "runs/cache"
    # A shipping run (no calib types) inherits the zero-shot margin of its recipe's protocol run: that run's
    # training.json, model directory or run directory (vitrine.train.calibration).
    calibration_from: str | None = None

    def __post_init__(self):
        if self.batch_size < 2 or self.accumulation < 1 or self.batch_size % self.accumulation:
            raise ValueError(f"batch_size ({self.batch_size}) must be >= 2 and divisible by accumulation ({self.accumulation})")
        if not self.sources:
            raise ValueError("a training config needs at least one source")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")

    def to_dict(self) -> dict:
        return _to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return _from_dict(cls, data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def replace(self, **changes) -> "TrainConfig":
        return _from_dict(TrainConfig, {**self.to_dict(), **changes})


def _to_jsonable(value):
    if is_dataclass(value):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


_NESTED = {"captions": CaptionConfig, "freeze": FreezeConfig, "optim": OptimConfig, "locked": LockedConfig, "split": SplitConfig}


def _from_dict(cls, data: dict):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; expected some of {sorted(known)}")
    values = dict(data)
    if cls is TrainConfig:
        if "sources" in values:
            values["sources"] = tuple(s if isinstance(s, SourceConfig) else _from_dict(SourceConfig, s) for s in values["sources"])
        for key, sub in _NESTED.items():
            if key in values and isinstance(values[key], dict):
                values[key] = _from_dict(sub, values[key])
    for f in fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


__all__ = ["CaptionConfig", "FreezeConfig", "LockedConfig", "OptimConfig", "SourceConfig", "SplitConfig", "TrainConfig"]
