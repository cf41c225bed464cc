"""`vitrine train clip`: contrastive image-text training (OpenFashionCLIP's recipe on open fashion data)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

from vitrine.data.transforms import augment
from vitrine.errors import InvalidInput
from vitrine.losses import ClipLoss, positives_from_ids, sigmoid_loss
from vitrine.models.dual import DualEncoder
from vitrine.train.config import TrainConfig
from vitrine.train.data import epoch_order, load_pool, sample_captions
from vitrine.train.distributed import device_for, setup
from vitrine.train.dual_run import (
    EXTERNAL_PREFIXES,
    apply_freeze,
    build_model,
    contrastive_step,
    finish_dual_run,
    load_model_state,
    model_state,
    open_dual_run,
    param_groups,
    step_generator,
)
from vitrine.train.engine import TrainResult, run
from vitrine.train.text_side import LiveTexts, PooledTexts
from vitrine.train.validate import Validator


class LiveRecipe:
    """The image tower (and, unless locked, the text tower) runs on every batch: decoded images, augmented per step."""

    def __init__(self, config: TrainConfig, ctx, progress: bool):
        self.config, self.ctx = config, ctx
        torch.manual_seed(config.seed)
        self.model = model = build_model(config)
        self.device = device_for(ctx, config.device)
        model.to(self.device)
        apply_freeze(model, config)
        if config.grad_checkpointing:
            model.set_grad_checkpointing()
        self.pool = pool = load_pool(config, model.image_transform, progress=progress)
        if pool.skipped:
            print(f"skipped {pool.skipped} unusable rows while loading the training data", file=sys.stderr)
        train_size = len(pool.indices("train"))
        if train_size < config.batch_size:
            raise InvalidInput(f"only {train_size} training items for batch size {config.batch_size}")
        self.text_locked = config.freeze.text_tower
        # With vitrine's MiniLM tower locked, a training step needs only its cached pooled features and the projection;
        # any other text tower runs on every caption, in training and in validation.
        cached_texts = self.text_locked and not config.freeze.text_blocks and isinstance(model, DualEncoder)
        with ctx.main_first():  # rank 0 fills the text feature cache, the other ranks read it
            texts = (
                PooledTexts(model, pool.strings, config.cache_dir, progress=progress and ctx.is_main)
                if cached_texts
                else LiveTexts(pool.strings)
            )
        self.texts = texts
        self.validator = (
            Validator(
                model, pool, pool.prompts, texts, config.val_max_items, config.seed,
                holdout_field=config.split.holdout_field,
            )
            if ctx.is_main
            else None
        )
        if ctx.enabled:
            ctx.shard(config.batch_size)  # refuses a batch that does not split evenly over the processes
        if model.logit_bias is None:
            self.loss_fn = ClipLoss()
        elif ctx.enabled:
            raise InvalidInput("the sigmoid loss (SigLIP) trains in one process; drop --nproc")
        else:  # SigLIP: its sigmoid loss, with the learned bias
            self.loss_fn = lambda image, text, scale, ids: sigmoid_loss(
                image, text, scale, model.logit_bias, positives_from_ids(ids, ids)
            )
        self.amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if config.amp else nullcontext()
        self._epoch, self._order = -1, None

    def param_groups(self) -> list[dict]:
        return param_groups(self.model, self.config.optim.weight_decay, self.config.optim.text_proj_lr_scale)

    def steps_per_epoch(self) -> int:
        return len(epoch_order(self.pool, self.config, 0)) // self.config.batch_size

    def forward_backward(self, step: int, epoch: int, offset: int) -> float:
        config, model, ctx, pool, device = self.config, self.model, self.ctx, self.pool, self.device
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(pool, config, epoch)
        generator = step_generator(config.seed, step)
        indices = self._order[offset * config.batch_size : (offset + 1) * config.batch_size]
        caption_ids = sample_captions(pool, indices, config, generator)
        pixels = augment(pool.images[indices], model.image_transform, generator)
        mine = ctx.shard(len(indices)) if ctx.enabled else slice(None)  # this rank's slice; negatives from every rank
        with self.amp:
            image = model.image_features(pixels[mine].to(device)).embeds
            text = self.texts.embed_rows(model, caption_ids[mine])
        return contrastive_step(
            self.loss_fn, ctx, image.float(), text.float(), model.logit_scale, caption_ids.to(device), mine
        )

    def validate(self) -> dict:
        return self.validator(self.model)

    def train_mode(self) -> None:
        self.model.train()
        for part in ("image_tower", "text_tower"):
            if getattr(self.config.freeze, part):  # a locked tower keeps dropout off and its BatchNorm statistics
                self.model.parts()[part].eval()

    def state(self) -> dict:
        return {"model": model_state(self.model, self.config)}

    def load_state(self, state: dict) -> None:
        load_model_state(self.model, state["model"], Path(self.config.out), ("text.bert.",))

    def log_values(self) -> dict:
        return {"logit_scale": round(float(self.model.logit_scale.detach().exp()), 3)}


def train_clip(
    config: TrainConfig, progress: bool = True, before: Callable[[object], None] | None = None
) -> TrainResult:
    """Train, checkpointing every `checkpoint_every` steps; rerunning with the same config resumes. `before(recipe)`
    runs once the recipe holds its starting model and validator, before the first step (e.g. a baseline validation)."""
    freeze = config.freeze
    if freeze.image_tower and not (
        freeze.image_blocks or freeze.text_blocks or config.model.startswith(EXTERNAL_PREFIXES)
    ):
        from vitrine.train.locked import train_locked

        return train_locked(config, progress=progress, before=before)
    ctx = setup(config.device)
    schedule, checkpoint = open_dual_run(config, ctx, f"train {Path(config.out).name}", "lower optim.lr or disable amp")
    recipe = LiveRecipe(config, ctx, progress)
    if before is not None:
        before(recipe)
    state = run(recipe, schedule, ctx, checkpoint, progress)
    return finish_dual_run(recipe.model, config, state, recipe.pool, recipe.validator, ctx)
