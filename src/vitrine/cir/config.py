"""`vitrine train cir` configuration as data, saved beside the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from vitrine.errors import ConfigError
from vitrine.train.engine import RunConfig

STAGE1_PARTS = ("projection", "text", "both")


@dataclass(frozen=True)
class CirTrainConfig(RunConfig):
    """Stage 1 fine-tunes the text side (or both encoders) with the `sum` combination; stage 2 trains the Combiner on
    cached features."""

    stage: int = 2
    # Stage 1's trainable parts: "projection" (the text projection over cached tower outputs; the image index stays
    # valid), "text" (the whole text encoder, as in CLIP4Cir) or "both" (both encoders, as in its journal version).
    # "text" and "both" save the fine-tuned model under out/model; stage 2 then names it as its `model`.
    stage1_trains: str = "projection"
    data: tuple[str, ...] = ("../shared/data/kagl",)  # catalogs holding every triplet product
    triplets: str = "runs/cir/kagl-train.jsonl"
    val_triplets: str | None = "runs/cir/kagl-val.jsonl"
    model: str = "vitrine:kagl-base"
    start: str | None = None  # stage 2: a stage-1 output directory whose text projection the Combiner builds on
    out: str = "runs/cir"
    epochs: int = 10
    batch_size: int = 512
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    logit_scale: float = 100.0  # CLIP4Cir's fixed scale
    projection_dim: int | None = None  # Combiner widths; None: 4x / 8x the embedding size
    hidden_dim: int | None = None
    dropout: float = 0.5
    combiner: str = "combiner"  # stage 2's network: CLIP4Cir's "combiner" or RaF-CLIP's "agcn"
    agcn_layers: int = 2
    agcn_width: int = 256
    agcn_heads: int = 4
    agcn_dropout: float = 0.1
    val_every_epochs: int = 1

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        self.check_schedule(self.batch_size, self.epochs, self.lr)
        if not self.data:
            raise ConfigError("data needs at least one catalog")
        if self.combiner not in ("combiner", "agcn"):
            raise ConfigError(f"combiner must be 'combiner' or 'agcn', got {self.combiner!r}")
        if self.stage1_trains not in STAGE1_PARTS:
            raise ConfigError(f"stage1_trains must be one of {', '.join(STAGE1_PARTS)}, got {self.stage1_trains!r}")
        if self.stage == 2 and self.stage1_trains != "projection":
            raise ConfigError("stage1_trains is a stage-1 option; stage 2 reads the stage-1 model through `model`")
        if self.stage == 1 and self.start:
            raise ConfigError("`start` is a stage-2 option (the stage-1 output to build on)")
