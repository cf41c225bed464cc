"""`vitrine train clip`: contrastive image-text training (OpenFashionCLIP's recipe on open fashion data)."""
from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from vitrine.data.prompts import resolve_prompts
from vitrine.losses import ClipLoss
from vitrine.train.config import TrainConfig
from vitrine.train.data import augment, epoch_order, load_pool, sample_captions
from vitrine.train.distributed import setup, sharded_contrastive_loss
from vitrine.train.dual_run import (TrainResult, apply_freeze, build_model, finish_dual_run, load_model_state, model_state,
                                    open_dual_run, param_groups, step_generator)
from vitrine.train.engine import run
from vitrine.train.text_side import LiveTexts, PooledTexts
from vitrine.train.validate import Validator


class LiveRecipe:
    """The image tower (and, unless locked, the text tower) runs on every batch: decoded images, augmented per step."""

    def __init__(self, config: TrainConfig, ctx, progress: bool):
        self.config, self.ctx = config, ctx
        torch.manual_seed(config.seed)
        self.model = model = build_model(config)
        self.device = torch.device(f"cuda:{ctx.local_rank}" if ctx.enabled and config.device.startswith("cuda") else config.device)
        model.to(self.device)
        apply_freeze(model, config)
        if config.grad_checkpointing:
            model.visual.grad_checkpointing = True
        self.pool = pool = load_pool(config, model.image_transform, progress=progress)
        if pool.skipped:
            print(f"skipped {pool.skipped} unusable rows while loading the training data", file=sys.stderr)
        train_size = len(pool.indices("train"))
        self.micro = config.batch_size // config.accumulation
        if train_size < config.batch_size:
            raise ValueError(f"only {train_size} training items for batch size {config.batch_size}")
        self.text_locked = config.freeze.text_tower
        # With the tower locked, a training step needs only these cached features and the projection; an unlocked tower
        # runs on every caption, in training and in validation.
        with ctx.main_first():  # rank 0 fills the text feature cache, the other ranks read it
            texts = PooledTexts(model, pool.strings, config.cache_dir, progress=progress and ctx.is_main) if self.text_locked else LiveTexts(pool.strings)
        self.text_feats = texts.features if self.text_locked else None
        self.validator = Validator(model, pool, resolve_prompts(config.sources[0].prompts), texts, config.val_max_items,
                                   config.seed) if ctx.is_main else None
        if ctx.enabled:
            ctx.shard(self.micro)  # refuses a micro-batch that does not split evenly over the processes
        self.text_proj_init = model.text_proj.weight.detach().clone()
        self.loss_fn = ClipLoss()
        self.amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if config.amp else nullcontext()
        self._epoch, self._order = -1, None

    def param_groups(self) -> list[dict]:
        return param_groups(self.model, self.config)

    def steps_per_epoch(self) -> int:
        return len(epoch_order(self.pool, self.config, 0)) // self.config.batch_size

    def forward_backward(self, step: int, epoch: int, offset: int) -> float:
        config, model, ctx, pool, micro, device = self.config, self.model, self.ctx, self.pool, self.micro, self.device
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(pool, config, epoch)
        generator = step_generator(config.seed, step)
        indices = self._order[offset * config.batch_size : (offset + 1) * config.batch_size]
        caption_ids = sample_captions(pool, indices, config, generator)
        pixels = augment(pool.images[indices], model.image_transform, generator)
        loss_total = 0.0
        for part in range(config.accumulation):
            window = slice(part * micro, (part + 1) * micro)
            if ctx.enabled:  # this rank's slice of the micro-batch; negatives from every rank
                mine = ctx.shard(micro)
                window = slice(window.start + mine.start, window.start + mine.stop)
            ids = caption_ids[window]
            with self.amp:
                image = model.image_features(pixels[window].to(device)).embeds
                if self.text_locked:
                    text = F.normalize(model.text_proj(self.text_feats[ids].to(device)), dim=-1)
                else:
                    text = model.text_features([pool.strings[i] for i in ids.tolist()]).embeds
            image, text = image.float(), text.float()
            if ctx.enabled:
                all_ids = caption_ids[part * micro : (part + 1) * micro].to(device)
                loss = sharded_contrastive_loss(image, text, ctx.gather(image), ctx.gather(text), model.logit_scale, ids.to(device), all_ids, micro)
            else:
                loss = self.loss_fn(image, text, model.logit_scale, ids.to(device))
            if config.optim.text_proj_l2_to_init and ctx.is_main:  # once, not once per rank: gradients are summed
                loss = loss + config.optim.text_proj_l2_to_init * (model.text_proj.weight - self.text_proj_init.to(device)).pow(2).sum()
            (loss / config.accumulation).backward()
            loss_total += float(loss.detach()) / config.accumulation
        return loss_total

    def validate(self) -> dict:
        return self.validator(self.model)

    def train_mode(self) -> None:
        self.model.train()
        if self.text_locked:
            self.model.text.eval()  # a locked tower also keeps dropout off

    def state(self) -> dict:
        return {"model": model_state(self.model, self.config), "text_proj_init": self.text_proj_init}

    def load_state(self, state: dict) -> None:
        load_model_state(self.model, state["model"], Path(self.config.out), ("text.bert.",))
        self.text_proj_init = state["text_proj_init"]

    def log_values(self) -> dict:
        return {"logit_scale": round(float(self.model.logit_scale.detach().exp()), 3)}


def train_clip(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train, checkpointing every `checkpoint_every` steps; rerunning with the same config resumes."""
    if config.freeze.image_tower or config.locked.lower_blocks:
        from vitrine.train.locked import train_locked

        return train_locked(config, progress=progress)
    ctx = setup(config.device)
    schedule, checkpoint = open_dual_run(config, ctx, f"train {Path(config.out).name}", "lower optim.lr or disable amp")
    recipe = LiveRecipe(config, ctx, progress)
    state = run(recipe, schedule, ctx, checkpoint, progress)
    return finish_dual_run(recipe.model, config, state, recipe.pool, recipe.validator, ctx)
