"""The recipe on cached image-tower outputs (LiT): a pretrained image tower stays fixed, its pooled features are cached
once per view, and only the heads train (the image MLP, the text projection and the temperature). Selected by
`freeze.image_tower: true`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitrine.embed.tower_cache import cached_image_features
from vitrine.errors import InvalidInput
from vitrine.losses import ClipLoss
from vitrine.train.config import TrainConfig
from vitrine.train.data import TrainPool, epoch_order, load_pool, sample_captions
from vitrine.train.distributed import setup
from vitrine.train.dual_run import (
    apply_freeze,
    build_model,
    contrastive_step,
    finish_dual_run,
    load_model_state,
    open_dual_run,
    param_groups,
    step_generator,
)
from vitrine.train.engine import TrainResult, run
from vitrine.train.text_side import PooledTexts
from vitrine.train.validate import Validator


class HardNegatives:
    """Partners for batch items: same type, another colour (the confusions exact retrieval must resolve); the type and
    colour columns are the catalog's own (`pool.roles`)."""

    def __init__(self, pool: TrainPool, members: np.ndarray):
        type_field, colour_field = pool.roles.get("type"), pool.roles.get("colour")
        self.types = np.array([pool.attributes[i].get(type_field) or "" for i in range(len(pool.ids))], dtype=object)
        self.colours = np.array(
            [pool.attributes[i].get(colour_field) or "" for i in range(len(pool.ids))], dtype=object
        )
        self.by_type = {kind: members[self.types[members] == kind] for kind in sorted(set(self.types[members]))}
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


class LockedRecipe:
    """Heads (and any unlocked top blocks or text layers) on cached tower features: one step of the engine."""

    def __init__(self, config: TrainConfig, ctx, progress: bool):
        self.config, self.ctx = config, ctx
        torch.manual_seed(config.seed)
        self.model = model = build_model(config)
        if hasattr(model.text, "pool_score"):
            raise InvalidInput(
                "a learned text pooling trains with the text tower: use freeze.text_tower false (the live recipe)"
            )
        apply_freeze(model, config)
        self.pool = pool = load_pool(config, model.image_transform, progress=progress)
        if pool.skipped:
            print(f"skipped {pool.skipped} unusable rows while loading the training data", file=sys.stderr)
        self.train = pool.indices("train")
        if len(self.train) < config.batch_size:
            raise InvalidInput(f"only {len(self.train)} training items for batch size {config.batch_size}")
        views = config.locked.views
        with ctx.main_first():  # rank 0 fills the feature caches, the other ranks read them
            self.images = cached_image_features(
                model, pool.images, pool.ids, views, config.cache_dir, batch_size=config.locked.cache_batch_size,
                progress=progress and ctx.is_main,
            )
            self.texts = PooledTexts(model, pool.strings, config.cache_dir, progress=progress and ctx.is_main)
        self.validator = None
        if ctx.is_main:  # validation, calibration and the model card's figures: rank 0's job
            self.validator = Validator(
                model,
                pool,
                pool.prompts,
                self.texts,
                config.val_max_items,
                config.seed,
                pooled_images=self.images[0],
                flipped_images=self.images[views.index("flip")] if "flip" in views else None,
                holdout_field=config.split.holdout_field,
            )
        self.negatives = HardNegatives(pool, self.train)
        self.loss_fn = ClipLoss()
        self._epoch, self._batches = -1, None

    def param_groups(self) -> list[dict]:
        return param_groups(self.model, self.config.optim.weight_decay, self.config.optim.text_proj_lr_scale)

    def steps_per_epoch(self) -> int:
        return len(_batches(self.pool, self.config, 0, self.negatives))

    def forward_backward(self, step: int, epoch: int, offset: int) -> float:
        config, model, ctx = self.config, self.model, self.ctx
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, _batches(self.pool, config, epoch, self.negatives)
        generator = step_generator(config.seed, step)
        indices = self._batches[offset]
        caption_ids = sample_captions(self.pool, indices, config, generator)
        views = torch.randint(0, len(self.images), (len(indices),), generator=generator)
        mine = ctx.shard(len(indices)) if ctx.enabled else slice(None)  # this rank's slice of the global batch
        image = F.normalize(model.image_proj(self.images[views[mine], torch.from_numpy(indices[mine])].float()), dim=-1)
        text = self.texts.embed_rows(model, caption_ids[mine])
        return contrastive_step(self.loss_fn, ctx, image, text, model.logit_scale, caption_ids, mine)

    def validate(self) -> dict:
        return self.validator(self.model)

    def train_mode(self) -> None:
        self.model.eval()  # locked towers: BatchNorm statistics and dropout stay as trained
        self.model.image_proj.train()

    def state(self) -> dict:
        return {"model": self.model.trained_state()}  # the heads

    def load_state(self, state: dict) -> None:
        load_model_state(self.model, state["model"], Path(self.config.out), ("text.bert.", "visual."))

    def log_values(self) -> dict:
        return {"logit_scale": round(float(self.model.logit_scale.detach().exp()), 3)}


def train_locked(
    config: TrainConfig, progress: bool = True, before: Callable[[object], None] | None = None
) -> TrainResult:
    """Train the heads on cached features; rerunning with the same config resumes from the last checkpoint.
    `before(recipe)` runs before the first step, on the starting model."""
    if not config.freeze.text_tower:
        raise InvalidInput("the locked-image recipe needs freeze.text_tower: true (text features are cached too)")
    ctx = setup(config.device)
    schedule, checkpoint = open_dual_run(
        config, ctx, f"train {Path(config.out).name} (locked image tower)", "lower optim.lr"
    )
    recipe = LockedRecipe(config, ctx, progress)
    if before is not None:
        before(recipe)
    state = run(recipe, schedule, ctx, checkpoint, progress)
    return finish_dual_run(
        recipe.model, config, state, recipe.pool, recipe.validator, ctx, "locked image tower, cached features"
    )
