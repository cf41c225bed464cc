"""What both dual-encoder recipes (`train.clip` live, `train.locked` on cached features) share: building the model,
freezing, parameter groups, the per-step random stream, opening a run and saving what it trained."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from vitrine.errors import InvalidInput
from vitrine.losses import sharded_contrastive_loss
from vitrine.models import create_model
from vitrine.models.base import Encoder
from vitrine.models.dual import TRAINING_INFO_NAME, DualConfig, DualEncoder, builtin_config
from vitrine.models.trainable import EXTERNAL_PREFIXES, training_start
from vitrine.train.calibration import inherited_calibration, training_calibration
from vitrine.train.config import TrainConfig
from vitrine.train.distributed import Distributed, teardown
from vitrine.train.engine import RunState, Schedule, TrainResult, open_run


def build_model(config: TrainConfig) -> Encoder:
    """A fresh vitrine model from a config name or JSON file, a trained vitrine model (shipped, e.g.
    `vitrine:kagl-base`,
    or a saved directory) to continue from, or an external checkpoint to fine-tune (`hf:DIR`, `openclip:ARCH@FILE`)."""
    start = training_start(config.model)
    if start.startswith(EXTERNAL_PREFIXES):
        return create_model(start)
    if os.path.isdir(start):
        return DualEncoder.load(start)
    if start.endswith(".json"):
        return DualEncoder(DualConfig.from_file(start))
    return DualEncoder(builtin_config(start))


def apply_freeze(model: Encoder, config: TrainConfig) -> None:
    """Lock or unlock each part as `freeze` says; in a locked tower, its last `image_blocks`/`text_blocks` train."""
    freeze, parts = config.freeze, model.parts()
    for name in Encoder.TRAINABLE_PARTS:
        parts[name].requires_grad_(not getattr(freeze, name))
    for tower, count in (("image_tower", freeze.image_blocks), ("text_tower", freeze.text_blocks)):
        if count and getattr(freeze, tower):
            blocks = model.tower_blocks(tower)
            if count > len(blocks):
                raise InvalidInput(f"freeze: {tower} has {len(blocks)} blocks, {count} cannot be unlocked")
            blocks[len(blocks) - count :].requires_grad_(True)


def param_groups(model, weight_decay: float, text_proj_lr_scale: float) -> list[dict]:
    """Decay on weight matrices only; the text projection gets its own (lower) learning rate."""
    text_proj_ids = {id(p) for p in model.parts()["text_proj"].parameters()}
    decay, no_decay, text_proj = [], [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in text_proj_ids:
            text_proj.append(parameter)
        elif parameter.ndim < 2:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": text_proj, "weight_decay": 0.0, "lr_scale": text_proj_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def model_state(model: Encoder, config: TrainConfig) -> dict:
    """The model's state without a locked, packaged text tower (90 MB that never changes)."""
    skip = config.freeze.text_tower and getattr(model, "text_weights_from_package", False)
    return {k: v for k, v in model.state_dict().items() if not (skip and k.startswith("text.bert."))}


def load_model_state(model: DualEncoder, state: dict, out: Path, may_miss: tuple[str, ...]) -> None:
    """Load a checkpoint's model state; only weights under `may_miss` (packaged towers) may be absent from it."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(may_miss) for k in missing):
        raise InvalidInput(
            f"{out / 'checkpoint.pt'} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def contrastive_step(
    loss_fn, ctx: Distributed, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
    caption_ids: torch.Tensor, mine: slice,
) -> float:
    """This rank's loss on its slice `mine` of the batch (negatives from every rank), backward; the loss value."""
    if ctx.enabled:
        loss = sharded_contrastive_loss(
            image, text, ctx.gather(image), ctx.gather(text), logit_scale, caption_ids[mine], caption_ids,
            len(caption_ids),
        )
    else:
        loss = loss_fn(image, text, logit_scale, caption_ids)
    loss.backward()
    return float(loss.detach())


def open_dual_run(config: TrainConfig, ctx: Distributed, desc: str, nan_hint: str) -> tuple[Schedule, dict | None]:
    """Refuse a missing protocol run, then open the run (resume, or refuse another config's checkpoint)."""
    if config.calibration_from:  # refuse a missing protocol run now, not after training
        inherited_calibration(config.calibration_from)
    optim = config.optim
    return open_run(
        config, ctx, "training", lr=optim.lr, warmup_steps=optim.warmup_steps, epochs=config.epochs,
        max_steps=config.max_steps, betas=tuple(optim.betas), grad_clip=optim.grad_clip,
        checkpoint_every=config.checkpoint_every, val_every_epochs=config.val_every_epochs, desc=desc,
        nan_hint=nan_hint,
    )


def finish_dual_run(
    model: DualEncoder, config: TrainConfig, state: RunState, pool, validator, ctx: Distributed,
    recipe: str | None = None,
) -> TrainResult:
    """Rank 0 saves the model, tunes the zero-shot margin on the calib types and writes training.json."""
    model_dir = state.out / "model"
    if ctx.is_main:
        model.eval()
        model.save(model_dir)  # first: nothing after this may lose the trained model
        calibration, calibration_error = None, None
        try:
            calibration = validator.calibrate(model)
        except Exception as exc:  # noqa: BLE001 - reported in training.json and on stderr, never fatal
            calibration_error = f"{type(exc).__name__}: {exc}"
            print(
                f"zero-shot calibration failed and was skipped ({calibration_error}); the model is saved in "
                f"{model_dir}",
                file=sys.stderr,
            )
        train = pool.indices("train")
        seen = {field: sorted({pool.attributes[i].get(field) for i in train} - {None}) for field in pool.facets}
        info = {
            "config": config.to_dict(),
            "load_as": model.saved_name(model_dir),
            **({"recipe": recipe} if recipe else {}),
            "steps": state.step,
            "seconds": state.elapsed,
            "train_items": len(train),
            "skipped_rows": pool.skipped,
            "seen_classes": seen,
            "calibration": training_calibration(calibration, config.calibration_from),
            "final_metrics": state.metrics,
            "processes": ctx.world,
            **({"calibration_error": calibration_error} if calibration_error else {}),
        }
        (model_dir / TRAINING_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    teardown(ctx)
    return state.result(model_dir)
