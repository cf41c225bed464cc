"""Recipes on cached image-tower outputs.

Locked (LiT): a pretrained image tower stays fixed, its pooled features are cached once, and only the heads train (the
image MLP, the text projection and the temperature). Selected by `freeze.image_tower: true`.
Top unlocked: the lower blocks stay fixed and their feature maps are cached; the top blocks, the tower's head and the
heads train on them, BatchNorm in eval mode. Selected by `locked.lower_blocks: K` with the tower not frozen."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitrine.data.prompts import resolve_prompts
from vitrine.losses import ClipLoss, positives_from_ids, text_smoothed_loss
from vitrine.train.config import TrainConfig
from vitrine.train.data import TrainPool, epoch_order, load_pool, sample_captions
from vitrine.train.distributed import setup, sharded_contrastive_loss
from vitrine.train.dual_run import (TrainResult, apply_freeze, build_model, finish_dual_run, load_model_state, open_dual_run,
                                    param_groups, step_generator)
from vitrine.train.engine import run
from vitrine.train.image_cache import cached_image_features, cached_lower_taps
from vitrine.train.text_side import text_side
from vitrine.train.validate import Validator


class HardNegatives:
    """Partners for batch items: same articleType, another baseColour (the confusions exact retrieval must resolve)."""

    def __init__(self, pool: TrainPool, members: np.ndarray):
        self.types = np.array([pool.attributes[i].get("articleType") or "" for i in range(len(pool.ids))], dtype=object)
        self.colours = np.array([pool.attributes[i].get("baseColour") or "" for i in range(len(pool.ids))], dtype=object)
        self.by_type: dict[str, np.ndarray] = {}
        for kind in sorted(set(self.types[members])):
            self.by_type[kind] = members[self.types[members] == kind]
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def partners(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One partner per anchor: same type, another colour (the anchor's own type when no other colour exists)."""
        out = np.empty(len(anchors), dtype=np.int64)
        for row, anchor in enumerate(anchors):
            candidates = self._others(self.types[anchor], self.colours[anchor])
            out[row] = candidates[rng.integers(len(candidates))] if len(candidates) else anchor
        return out

    def _others(self, kind: str, colour: str) -> np.ndarray:
        key = (kind, colour)
        if key not in self._cache:
            group = self.by_type.get(kind, np.zeros(0, dtype=np.int64))
            others = group[self.colours[group] != colour]
            self._cache[key] = others if len(others) else group
        return self._cache[key]


def _batches(pool: TrainPool, config: TrainConfig, epoch: int, negatives: HardNegatives) -> list[np.ndarray]:
    """One epoch of index batches; with hard negatives, part of each batch is partners of the rest."""
    order = epoch_order(pool, config, epoch)
    partners = int(round(config.batch_size * config.locked.hard_negative_fraction))
    anchors = config.batch_size - partners
    rng = np.random.default_rng([config.seed, epoch, 7])
    batches = []
    for start in range(0, len(order) - anchors + 1, anchors):
        chosen = order[start : start + anchors]
        if partners:
            chosen = np.concatenate([chosen, negatives.partners(chosen[rng.permutation(anchors)[:partners]], rng)])
        batches.append(chosen)
    return batches


class CachedTower:
    """Image embeddings from cached rows: pooled features through the head, or lower-block maps through the top too."""

    def __init__(self, model, cached: torch.Tensor, lower_blocks: int, lower_taps: torch.Tensor | None = None):
        self.model, self.cached, self.lower_blocks, self.lower_taps = model, cached, lower_blocks, lower_taps

    def pooled(self, rows: torch.Tensor, taps: torch.Tensor | None = None) -> torch.Tensor:
        if not self.lower_blocks:
            return rows.float()
        maps = rows.float().contiguous(memory_format=torch.channels_last)
        return self.model.visual.forward_from(maps, self.lower_blocks, None if taps is None else taps.float())[1]

    def _taps(self, views, rows: torch.Tensor) -> torch.Tensor | None:
        return None if self.lower_taps is None else self.lower_taps[views, rows]

    def embed(self, views: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        rows = torch.from_numpy(indices)
        return F.normalize(self.model.image_proj(self.pooled(self.cached[views, rows], self._taps(views, rows))), dim=-1)

    @torch.inference_mode()
    def pooled_table(self, members: np.ndarray, view: int = 0) -> torch.Tensor:
        """(N, W) pooled features of one cached view with the rows of `members` filled (what validation reads)."""
        if not self.lower_blocks:
            return self.cached[view]
        table = torch.zeros(self.cached.shape[1], self.model.visual.width)
        for start in range(0, len(members), 512):
            rows = torch.from_numpy(members[start : start + 512])
            table[rows] = self.pooled(self.cached[view, rows], self._taps(view, rows))
        return table


def _unlock_top(model, config: TrainConfig) -> list[dict]:
    """Trainable: the tower's blocks from `lower_blocks` on and its head conv/BN, plus the usual heads; param groups."""
    net = model.visual.net
    if config.locked.lower_blocks >= len(net._blocks):
        raise ValueError(f"locked.lower_blocks is {config.locked.lower_blocks}; the tower has {len(net._blocks)} blocks")
    top = {id(p) for module in (*net._blocks[config.locked.lower_blocks:], net._conv_head, net._bn1) for p in module.parameters()}
    for parameter in model.visual.parameters():
        parameter.requires_grad_(id(parameter) in top)
    groups = param_groups(model, config)
    for group in groups:
        group["params"] = [p for p in group["params"] if id(p) not in top]
    visual = [p for p in model.visual.parameters() if p.requires_grad]
    groups.append({"params": [p for p in visual if p.ndim >= 2], "weight_decay": config.optim.weight_decay, "lr_scale": config.locked.top_lr_scale})
    groups.append({"params": [p for p in visual if p.ndim < 2], "weight_decay": 0.0, "lr_scale": config.locked.top_lr_scale})
    return [g for g in groups if g["params"]]


class LockedRecipe:
    """Heads (and any unlocked top blocks or text layers) on cached tower features: one step of the engine."""

    def __init__(self, config: TrainConfig, ctx, progress: bool):
        if ctx.enabled and config.locked.text_smoothing:
            raise ValueError("locked.text_smoothing is single-process only; drop it or --nproc")
        self.config, self.ctx = config, ctx
        self.lower = lower = 0 if config.freeze.image_tower else config.locked.lower_blocks
        torch.manual_seed(config.seed)
        self.model = model = build_model(config)
        apply_freeze(model, config)
        self.pool = pool = load_pool(config, model.image_transform, progress=progress)
        if pool.skipped:
            print(f"skipped {pool.skipped} unusable rows while loading the training data", file=sys.stderr)
        self.train = pool.indices("train")
        if len(self.train) < config.batch_size:
            raise ValueError(f"only {len(self.train)} training items for batch size {config.batch_size}")
        if lower and not hasattr(model.visual, "net"):
            raise ValueError("locked.lower_blocks needs a block-structured tower (efficientnet-lite)")
        with ctx.main_first():  # rank 0 fills the feature caches, the other ranks read them
            images = cached_image_features(model, pool.images, pool.ids, config.locked.views, config.cache_dir,
                                           batch_size=config.locked.cache_batch_size, progress=progress and ctx.is_main, stop_block=lower or None)
            self.texts = text_side(model, pool.strings, config.locked.text_layers, config.cache_dir, progress=progress and ctx.is_main)
        self.tower = CachedTower(model, images, lower, cached_lower_taps(model, pool.ids, config.locked.views, config.cache_dir, lower) if lower else None)
        self.validator, self.validation_rows = None, None
        if ctx.is_main:  # validation, calibration and the model card's figures: rank 0's job
            flip = config.locked.views.index("flip") if "flip" in config.locked.views else None
            self.validator = Validator(model, pool, resolve_prompts(config.sources[0].prompts), self.texts, config.val_max_items,
                                       config.seed, pooled_images=self.tower.cached[0] if not lower else None,
                                       flipped_images=self.tower.cached[flip] if not lower and flip is not None else None)
            self.validation_rows = np.concatenate([m for m in self.validator.groups.values()])
        self.negatives = HardNegatives(pool, self.train)
        groups = _unlock_top(model, config) if lower else param_groups(model, config)
        text_params = self.texts.trainable(model)
        for parameter in text_params:
            parameter.requires_grad_(True)
        if text_params:
            scale, decay = config.locked.text_lr_scale, config.optim.weight_decay
            groups.append({"params": [p for p in text_params if p.ndim >= 2], "weight_decay": decay, "lr_scale": scale})
            groups.append({"params": [p for p in text_params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": scale})
        self.groups = [g for g in groups if g["params"]]
        self.text_proj_init = model.text_proj.weight.detach().clone()
        self.n_views = images.shape[0]
        self.loss_fn = ClipLoss()
        self._epoch, self._batches = -1, None

    def param_groups(self) -> list[dict]:
        return self.groups

    def steps_per_epoch(self) -> int:
        return len(_batches(self.pool, self.config, 0, self.negatives))

    def forward_backward(self, step: int, epoch: int, offset: int) -> float:
        config, model, ctx, texts, tower = self.config, self.model, self.ctx, self.texts, self.tower
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, _batches(self.pool, config, epoch, self.negatives)
        generator = step_generator(config.seed, step)
        indices = self._batches[offset]
        caption_ids = sample_captions(self.pool, indices, config, generator)
        views = torch.randint(0, self.n_views, (len(indices),), generator=generator)
        if ctx.enabled:  # this rank's slice of the global batch; negatives from every rank
            mine = ctx.shard(len(indices))
            image = tower.embed(views[mine], indices[mine])
            text = texts.embed_rows(model, caption_ids[mine])
            loss = sharded_contrastive_loss(image, text, ctx.gather(image), ctx.gather(text), model.logit_scale,
                                            caption_ids[mine], caption_ids, len(indices))
        elif config.locked.text_smoothing:
            image = tower.embed(views, indices)
            text = texts.embed_rows(model, caption_ids)
            loss = text_smoothed_loss(image, text, model.logit_scale, positives_from_ids(caption_ids, caption_ids), texts.pooled(caption_ids),
                                      config.locked.text_smoothing, config.locked.text_smoothing_temperature)
        else:
            image = tower.embed(views, indices)
            text = texts.embed_rows(model, caption_ids)
            loss = self.loss_fn(image, text, model.logit_scale, caption_ids)
        if config.optim.text_proj_l2_to_init and ctx.is_main:  # once, not once per rank: gradients are summed
            loss = loss + config.optim.text_proj_l2_to_init * (model.text_proj.weight - self.text_proj_init).pow(2).sum()
        loss.backward()
        return float(loss.detach())

    def refresh_validation_features(self) -> None:
        """With unlocked top blocks, the validation rows' pooled features move: recompute them."""
        if not self.lower:
            return
        self.validator.pooled_images = self.tower.pooled_table(self.validation_rows)
        if self.model.config.image_tta == "flip" and "flip" in self.config.locked.views:
            self.validator.flipped_images = self.tower.pooled_table(self.validation_rows, self.config.locked.views.index("flip"))

    def validate(self) -> dict:
        self.refresh_validation_features()
        return self.validator(self.model)

    def train_mode(self) -> None:
        self.model.eval()  # locked towers: BatchNorm statistics and dropout stay as trained
        self.model.image_proj.train()

    def state(self) -> dict:
        return {"model": self.model.trained_state()}  # heads, and any tower weights that moved from the package's

    def load_state(self, state: dict) -> None:
        load_model_state(self.model, state["model"], Path(self.config.out), ("text.bert.", "visual."))

    def log_values(self) -> dict:
        return {"logit_scale": round(float(self.model.logit_scale.detach().exp()), 3)}


def train_locked(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train the heads on cached features; rerunning with the same config resumes from the last checkpoint."""
    if not config.freeze.text_tower:
        raise ValueError("the locked-image recipe needs freeze.text_tower: true (text features are cached too)")
    ctx = setup(config.device)
    schedule, checkpoint = open_dual_run(config, ctx, f"train {Path(config.out).name} (locked image tower)", "lower optim.lr")
    recipe = LockedRecipe(config, ctx, progress)
    state = run(recipe, schedule, ctx, checkpoint, progress)
    if ctx.is_main:
        recipe.refresh_validation_features()
    label = f"image tower blocks {recipe.lower}+ unlocked on cached maps" if recipe.lower else "locked image tower, cached features"
    return finish_dual_run(recipe.model, config, state, recipe.pool, recipe.validator, ctx, label)
