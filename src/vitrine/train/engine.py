"""One training engine for every recipe: the step loop, the schedule, checkpoints and resume, validation cadence,
the progress bar, `metrics.csv`/TensorBoard and multi-process (DDP) gradients.

A recipe (`Recipe`) brings only its own parts: its trainable parameter groups, how many steps make an epoch, one
step's forward and backward, its validation, and the state it checkpoints. `open_run` comes first (it refuses a
checkpoint of another config before anything expensive is built); the recipe is built next; `run` trains it.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from vitrine.config_file import ConfigFile, jsonable
from vitrine.errors import ConfigError
from vitrine.train.distributed import Distributed
from vitrine.train.logger import MetricsLogger, NullLogger

CHECKPOINT_NAME = "checkpoint.pt"
LOG_EVERY = 20  # steps between metric rows (epoch ends, the first and the last step are always logged)


@dataclass(frozen=True)
class Schedule:
    """What the engine reads from a recipe's config."""

    out: Path
    kind: str  # the config's name in messages ("training", "regions", "cir")
    comparable: dict  # the config less the keys that may change on resume: a checkpoint of another one is refused
    lr: float
    warmup_steps: int
    epochs: int
    max_steps: int | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0
    checkpoint_every: int | None = None  # steps; checkpoints are also written at every epoch end and the last step
    val_every_epochs: int = 1
    validate_at_stop: bool = False  # also validate when max_steps stops the run mid-epoch
    desc: str = "train"
    nan_hint: str = "lower the learning rate"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run reports: where it saved its model or head, and its last figures."""

    out: str
    saved: str
    steps: int
    seconds: float
    seconds_per_epoch: float
    final_loss: float
    metrics: dict


@dataclass
class RunState:
    """Where a run ended: what the recipe's `finish` reads."""

    out: Path
    step: int
    steps_per_epoch: int
    elapsed: float
    loss: float
    metrics: dict

    def result(self, saved: Path, metrics: dict | None = None) -> TrainResult:
        epochs = max(self.step / self.steps_per_epoch, 1e-9)
        return TrainResult(
            str(self.out), str(saved), self.step, self.elapsed, round(self.elapsed / epochs, 2), self.loss,
            self.metrics if metrics is None else metrics,
        )


class Recipe(Protocol):
    def param_groups(self) -> list[dict]:
        """AdamW groups, each with `weight_decay` and `lr_scale` (its share of the scheduled learning rate)."""

    def steps_per_epoch(self) -> int: ...

    def forward_backward(self, step: int, epoch: int, offset: int) -> float:
        """Draw step `step`'s batch (batch `offset` of `epoch`), compute this rank's loss, backward; return the loss."""

    def validate(self) -> dict:
        """Validation metrics (rank 0 only); the engine calls `train_mode` afterwards."""

    def train_mode(self) -> None:
        """Put every module in the mode training expects (locked parts stay in eval mode)."""

    def state(self) -> dict:
        """What a checkpoint holds besides the optimizer: the trained weights and anything else resume needs."""

    def load_state(self, state: dict) -> None: ...

    def log_values(self) -> dict:
        """Extra values for each metrics row (e.g. the temperature)."""


# Config keys that may change between a run and its resumption without changing what is computed.
RUNTIME_KEYS = ("max_steps", "threads", "out", "cache_dir", "checkpoint_every", "val_every_epochs", "device")


@dataclass(frozen=True)
class RunConfig(ConfigFile):
    """The fields every recipe's config has; its schedule's fields are its own (their defaults differ by recipe)."""

    seed: int = 0
    max_steps: int | None = None  # stop early (tests, smoke runs); the schedule still follows `epochs`
    threads: int = 0  # torch CPU threads; 0: torch's default
    cache_dir: str = "runs/cache"  # feature caches (text, tower features, catalog banks, region views)
    device: str = "cpu"  # "cuda": train on the GPU (under torchrun, each process on its own); caches stay on the CPU

    def check_schedule(self, batch_size: int, epochs: int, lr: float) -> None:
        if batch_size < 2 or epochs < 1 or lr <= 0:
            raise ConfigError(f"batch_size must be >= 2, epochs >= 1 and lr > 0; got {batch_size}, {epochs} and {lr}")


def open_run(config, ctx: Distributed, kind: str, **schedule) -> tuple[Schedule, dict | None]:
    """Set the config's threads, create the run folder, save the config (rank 0) and return the run's schedule (the
    given fields) and checkpoint, refusing a checkpoint of another config. Every rank reads it; rank 0 writes."""
    if config.threads:
        torch.set_num_threads(config.threads)
    data = config.to_dict()
    schedule = Schedule(
        out=Path(config.out),
        kind=kind,
        comparable=jsonable({k: v for k, v in data.items() if k not in RUNTIME_KEYS}),
        **schedule,
    )
    schedule.out.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(schedule.out)
    saved = {
        k: v for k, v in ((checkpoint or {}).get("comparable") or {}).items() if k not in RUNTIME_KEYS
    }  # keys made runtime later
    if checkpoint is not None and jsonable(saved) != schedule.comparable:
        raise ConfigError(
            f"{schedule.out} holds a checkpoint of a different {schedule.kind} config; use another --out "
            f"or delete {schedule.out / 'checkpoint.pt'}"
        )
    if ctx.is_main:
        (schedule.out / "train_config.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return schedule, checkpoint


def run(
    recipe: Recipe, schedule: Schedule, ctx: Distributed, checkpoint: dict | None = None, progress: bool = True
) -> RunState:
    """Train `recipe` to the end of its schedule (or `max_steps`), resuming from `checkpoint` exactly."""
    optimizer = torch.optim.AdamW(recipe.param_groups(), lr=schedule.lr, betas=schedule.betas)
    steps_per_epoch = recipe.steps_per_epoch()
    total_steps = steps_per_epoch * schedule.epochs
    last_step = min(total_steps, schedule.max_steps) if schedule.max_steps else total_steps
    step, elapsed = 0, 0.0
    if checkpoint is not None:
        recipe.load_state(checkpoint["recipe"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, elapsed = checkpoint["step"], checkpoint["elapsed"]
        if not ctx.enabled and "torch_rng" in checkpoint:  # dropout draws from the global stream: continue it there
            torch.set_rng_state(checkpoint["torch_rng"])
    logger = MetricsLogger(schedule.out, resume_step=step) if ctx.is_main else NullLogger()
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    suffix = f" ({ctx.world} processes)" if ctx.enabled else ""
    bar = tqdm(
        total=last_step, initial=step, desc=schedule.desc + suffix, unit="step", disable=not (progress and ctx.is_main),
        dynamic_ncols=True,
    )
    recipe.train_mode()
    started = time.perf_counter() - elapsed
    loss_value, metrics = float("nan"), {}
    while step < last_step:
        epoch, offset = divmod(step, steps_per_epoch)
        scale = warmup_cosine(step, total_steps, schedule.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr * scale * group.get("lr_scale", 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss_local = recipe.forward_backward(step, epoch, offset)
        ctx.sum_gradients(trainable)
        if schedule.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, schedule.grad_clip)
        optimizer.step()
        step += 1
        loss_value = ctx.sum_value(loss_local)
        elapsed = time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", epoch=epoch)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}; {schedule.nan_hint}")
        if not ctx.is_main:
            continue
        end_of_epoch = step % steps_per_epoch == 0
        row = {
            "epoch": round(step / steps_per_epoch, 3),
            "time_s": round(elapsed, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "loss": round(loss_value, 5),
            **recipe.log_values(),
        }
        if step % LOG_EVERY == 0 or end_of_epoch or step in (1, last_step):
            logger.log(step, row)
        due = end_of_epoch and ((step // steps_per_epoch) % schedule.val_every_epochs == 0 or step == total_steps)
        if due or (schedule.validate_at_stop and step == last_step):
            metrics = _validated(recipe, step, bar)
            recipe.train_mode()
            if metrics:
                logger.log(
                    step,
                    {
                        "epoch": row["epoch"],
                        "time_s": row["time_s"],
                        **{f"val/{k}": v for k, v in _scalars(metrics).items()},
                    },
                )
                bar.write(
                    f"step {step} epoch {step / steps_per_epoch:.2f}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in _scalars(metrics).items())
                )
        # Epochs of a few steps (a small catalog) would write a checkpoint every few steps: there, `checkpoint_every`
        # rules.
        epoch_checkpoint = end_of_epoch and (
            not schedule.checkpoint_every or steps_per_epoch >= schedule.checkpoint_every // 4
        )
        if (
            epoch_checkpoint
            or step == last_step
            or (schedule.checkpoint_every and step % schedule.checkpoint_every == 0)
        ):
            save_checkpoint(
                schedule.out,
                {
                    "recipe": recipe.state(), "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed,
                    "comparable": schedule.comparable, "torch_rng": torch.get_rng_state(),
                },
            )
    bar.close()
    logger.close()
    return RunState(schedule.out, step, steps_per_epoch, round(elapsed, 1), loss_value, metrics)


def _validated(recipe: Recipe, step: int, bar) -> dict:
    """The recipe's validation metrics; a validation that fails is reported and training goes on (never fatal: a
    run's model must not be lost to a bad validation item)."""
    try:
        return recipe.validate()
    except Exception as exc:  # noqa: BLE001 - any failure of a validation pass is reported, not raised
        bar.write(f"step {step}: validation failed and was skipped ({type(exc).__name__}: {exc}); training goes on")
        return {"validation_error": f"{type(exc).__name__}: {exc}"}  # the same report as validate.validate_or_report


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning rate's multiplier at `step` (0-based): linear warmup, then cosine decay to zero."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def save_checkpoint(out: Path, state: dict) -> None:
    """Atomically: a kill mid-write leaves the previous checkpoint intact."""
    tmp = out / (CHECKPOINT_NAME + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out / CHECKPOINT_NAME)


def load_checkpoint(out: Path) -> dict | None:
    path = out / CHECKPOINT_NAME
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def _scalars(metrics: dict) -> dict:
    return {
        k.removeprefix("val/"): v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


__all__ = ["Recipe", "RunConfig", "RunState", "Schedule", "TrainResult", "open_run", "run"]
