"""Training configuration as data: one JSON file reproduces a run, and it is saved next to the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from vitrine.data.splits import SplitConfig, default_protocol_split
from vitrine.errors import ConfigError
from vitrine.train.engine import RunConfig


@dataclass(frozen=True)
class SourceConfig:
    """One dataset of the mixture. `weight` is how often each of its items is seen per epoch."""

    path: str
    weight: float = 1.0
    schema: str = "auto"  # a builtin name, a schema file, or 'auto': read from the catalog's own columns
    # a builtin name, a prompts file, or 'auto': KAGL's for a kagl catalog, else built from its columns' roles
    prompts: str = "auto"


@dataclass(frozen=True)
class CaptionConfig:
    """Per step, each image gets its title with probability `title_prob`, else a random attribute template."""

    title_prob: float = 0.5
    use_titles: bool = True
    use_templates: bool = True


@dataclass(frozen=True)
class FreezeConfig:
    """Which parts train. The CPU default: image tower and projections train, the MiniLM tower is locked. In a
    locked tower, its last `image_blocks` / `text_blocks` blocks (transformer layers, or EfficientNet blocks) train."""

    image_tower: bool = False
    text_tower: bool = True
    image_proj: bool = False
    text_proj: bool = False
    image_blocks: int = 0
    text_blocks: int = 0

    def __post_init__(self):
        if self.image_blocks < 0 or self.text_blocks < 0:
            raise ConfigError("freeze.image_blocks and freeze.text_blocks count blocks: they must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 200
    text_proj_lr_scale: float = 0.1  # a slower text projection stays near the pretrained text space
    grad_clip: float = 1.0


@dataclass(frozen=True)
class LockedConfig:
    """The recipe on cached tower outputs (`freeze.image_tower: true`): the image tower's pooled features of each view
    are cached once, and only the heads (the image MLP, the text projection and the temperature) train."""

    views: tuple[str, ...] = ("plain", "flip")  # cached variants; each step draws one per item
    hard_negative_fraction: float = 0.0  # share of each batch that is a same-type, other-colour partner of another item
    cache_batch_size: int = 128

    def __post_init__(self):
        if not 0.0 <= self.hard_negative_fraction < 1.0:
            raise ConfigError(f"locked.hard_negative_fraction must be in [0, 1), got {self.hard_negative_fraction}")
        if not self.views:
            raise ConfigError("locked.views needs at least one view")


# Options that no shipped recipe used, or whose grid experiment lost on validation (the kagl-base card's issue-21
# grid), removed in the engine redesign. A config naming one at its no-op value reads as before; other values are
# refused with the reason.
_UNUSED = "no shipped recipe used it"
RETIRED = {
    "accumulation": (1, _UNUSED),
    "optim.text_proj_l2_to_init": (0.0, _UNUSED),
    "locked.lower_blocks": (0, "training the top image blocks on cached maps lost in the grid, row top15-warm"),
    "locked.top_lr_scale": (0.1, "training the top image blocks on cached maps lost in the grid, row top15-warm"),
    "locked.text_layers": (
        0,
        "training MiniLM's top layers on cached token states was flat in the grid, row text1-warm",
    ),
    "locked.text_lr_scale": (
        0.1,
        "training MiniLM's top layers on cached token states was flat in the grid, row text1-warm",
    ),
    "locked.text_smoothing": (0.0, _UNUSED),
    "locked.text_smoothing_temperature": (0.05, _UNUSED),
}


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Everything a `vitrine train clip` run depends on."""

    retired = RETIRED

    sources: tuple[SourceConfig, ...] = (SourceConfig("../shared/data/kagl"),)
    model: str = "small"  # a config name in vitrine/models/configs, or a vitrine model directory to start from
    out: str = "runs/clip"
    epochs: int = 20
    batch_size: int = 512
    amp: bool = True  # bf16 autocast (CPU and GPU)
    grad_checkpointing: bool = False
    checkpoint_every: int = 200  # steps
    val_every_epochs: int = 1
    val_max_items: int = 2000
    max_items: int | None = None  # cap the training pool (tests)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    locked: LockedConfig = field(default_factory=LockedConfig)
    split: SplitConfig = field(default_factory=default_protocol_split)
    # A shipping run (no calib types) inherits the zero-shot margin of its recipe's protocol run: that run's
    # training.json, model directory or run directory (vitrine.train.calibration).
    calibration_from: str | None = None

    def __post_init__(self):
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2, got {self.batch_size}")
        if not self.sources:
            raise ConfigError("a training config needs at least one source")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")


__all__ = ["CaptionConfig", "FreezeConfig", "LockedConfig", "OptimConfig", "SourceConfig", "SplitConfig", "TrainConfig"]
