"""What both dual-encoder recipes (`train.clip` live, `train.locked` on cached features) share: building the model,
freezing, parameter groups, the per-step random stream and opening a run folder (resume or refuse)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vitrine.models.dual import DualConfig, DualEncoder, builtin_config
from vitrine.train.calibration import inherited_calibration
from vitrine.train.checkpoint import load_checkpoint
from vitrine.train.config import TrainConfig
from vitrine.train.distributed import Distributed

# Keys that may change between a run and its resumption without changing what is computed.
_RUNTIME_KEYS = ("max_steps", "threads", "out", "cache_dir", "checkpoint_every")


@dataclass(frozen=True)
class TrainResult:
    out: str
    model_dir: str
    steps: int
    seconds: float
    final_loss: float
    metrics: dict


def build_model(config: TrainConfig) -> DualEncoder:
    """A fresh model from a config name or JSON file, or a saved model directory to continue from."""
    if os.path.isdir(config.model):
        return DualEncoder.load(config.model)
    if config.model.endswith(".json"):
        return DualEncoder(DualConfig.from_file(config.model))
    return DualEncoder(builtin_config(config.model))


def apply_freeze(model: DualEncoder, config: TrainConfig) -> None:
    freeze = config.freeze
    for module, frozen in ((model.visual, freeze.image_tower), (model.text, freeze.text_tower),
                           (model.image_proj, freeze.image_proj), (model.text_proj, freeze.text_proj)):
        for parameter in module.parameters():
            parameter.requires_grad_(not frozen)


def param_groups(model: DualEncoder, config: TrainConfig) -> list[dict]:
    """Decay on weight matrices only; the text projection gets its own (lower) learning rate."""
    optim = config.optim
    decay, no_decay, text_proj = [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("text_proj."):
            text_proj.append(parameter)
        elif parameter.ndim < 2 or name == "logit_scale":
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": text_proj, "weight_decay": 0.0, "lr_scale": optim.text_proj_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def model_state(model: DualEncoder, config: TrainConfig) -> dict:
    """The model's state without a locked, packaged text tower (90 MB that never changes)."""
    skip = config.freeze.text_tower and model.text_weights_from_package
    return {k: v for k, v in model.state_dict().items() if not (skip and k.startswith("text.bert."))}


def _comparable(config: TrainConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in _RUNTIME_KEYS}


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def open_run(config: TrainConfig, ctx: Distributed | None = None) -> tuple[Path, dict | None]:
    """Set threads, create the run folder, load its checkpoint (refusing one of another config), save the config.

    With several processes every rank reads the checkpoint (all resume from the same step); rank 0 writes.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.calibration_from:  # refuse a missing protocol run now, not after training
        inherited_calibration(config.calibration_from)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(out)
    if checkpoint is not None and _comparable(TrainConfig.from_dict(checkpoint["config"])) != _comparable(config):
        raise ValueError(f"{out} holds a checkpoint of a different training config; use another --out or delete {out / 'checkpoint.pt'}")
    if ctx is None or ctx.is_main:
        config.save(out / "train_config.json")
    return out, checkpoint
