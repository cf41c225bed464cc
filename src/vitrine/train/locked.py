"""Recipes on cached image-tower outputs.

Locked (LiT): a pretrained image tower stays fixed, its pooled features are cached once, and only the heads train (the
image MLP, the text projection and the temperature). Selected by `freeze.image_tower: true`.
Top unlocked: the lower blocks stay fixed and their feature maps are cached; the top blocks, the tower's head and the
heads train on them, BatchNorm in eval mode. Selected by `locked.lower_blocks: K` with the tower not frozen."""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vitrine.data.prompts import resolve_prompts
from vitrine.losses import ClipLoss, positives_from_ids, text_smoothed_loss
from vitrine.models.dual import TRAINING_INFO_NAME
from vitrine.train.calibration import training_calibration
from vitrine.train.checkpoint import save_checkpoint
from vitrine.train.config import TrainConfig
from vitrine.train.data import TrainPool, epoch_order, load_pool, sample_captions
from vitrine.train.image_cache import cached_image_features, cached_lower_taps
from vitrine.train.distributed import setup, sharded_contrastive_loss, teardown
from vitrine.train.dual_run import TrainResult, apply_freeze, build_model, open_run, param_groups, step_generator
from vitrine.train.logger import MetricsLogger, NullLogger
from vitrine.train.progress import record_step, record_validation
from vitrine.train.schedule import warmup_cosine
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


def train_locked(config: TrainConfig, progress: bool = True):
    """Train the heads on cached features; rerunning with the same config resumes from the last epoch checkpoint."""
    if not config.freeze.text_tower:
        raise ValueError("the locked-image recipe needs freeze.text_tower: true (text features are cached too)")
    ctx = setup(config.device)
    if ctx.enabled and config.locked.text_smoothing:
        raise ValueError("locked.text_smoothing is single-process only; drop it or --nproc")
    out, checkpoint = open_run(config, ctx)
    lower = 0 if config.freeze.image_tower else config.locked.lower_blocks

    torch.manual_seed(config.seed)
    model = build_model(config)
    apply_freeze(model, config)
    pool = load_pool(config, model.image_transform, progress=progress)
    if pool.skipped:
        print(f"skipped {pool.skipped} unusable rows while loading the training data", file=sys.stderr)
    train = pool.indices("train")
    if len(train) < config.batch_size:
        raise ValueError(f"only {len(train)} training items for batch size {config.batch_size}")
    if lower and not hasattr(model.visual, "net"):
        raise ValueError("locked.lower_blocks needs a block-structured tower (efficientnet-lite)")
    with ctx.main_first():  # rank 0 fills the feature caches, the other ranks read them
        images = cached_image_features(model, pool.images, pool.ids, config.locked.views, config.cache_dir,
                                       batch_size=config.locked.cache_batch_size, progress=progress and ctx.is_main, stop_block=lower or None)
        texts = text_side(model, pool.strings, config.locked.text_layers, config.cache_dir, progress=progress and ctx.is_main)
    tower = CachedTower(model, images, lower, cached_lower_taps(model, pool.ids, config.locked.views, config.cache_dir, lower) if lower else None)
    validator, validation_rows = None, None
    if ctx.is_main:  # validation, calibration and the model card's figures: rank 0's job
        validator = Validator(model, pool, resolve_prompts(config.sources[0].prompts), texts, config.val_max_items,
                              config.seed, pooled_images=tower.cached[0] if not lower else None,
                              flipped_images=tower.cached[config.locked.views.index("flip")] if not lower and "flip" in config.locked.views else None)
        validation_rows = np.concatenate([m for m in validator.groups.values()])

    def refresh_validation_features():
        if lower:
            validator.pooled_images = tower.pooled_table(validation_rows)
            if model.config.image_tta == "flip" and "flip" in config.locked.views:
                validator.flipped_images = tower.pooled_table(validation_rows, config.locked.views.index("flip"))

    negatives = HardNegatives(pool, train)

    groups = _unlock_top(model, config) if lower else param_groups(model, config)
    text_params = texts.trainable(model)
    for parameter in text_params:
        parameter.requires_grad_(True)
    if text_params:
        groups.append({"params": [p for p in text_params if p.ndim >= 2], "weight_decay": config.optim.weight_decay, "lr_scale": config.locked.text_lr_scale})
        groups.append({"params": [p for p in text_params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": config.locked.text_lr_scale})
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.optim.lr, betas=config.optim.betas)
    steps_per_epoch = len(_batches(pool, config, 0, negatives))
    total_steps = steps_per_epoch * config.epochs
    last_step = min(total_steps, config.max_steps) if config.max_steps else total_steps
    text_proj_init = model.text_proj.weight.detach().clone()
    step, elapsed = 0, 0.0
    if checkpoint is not None:
        missing, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
        if unexpected or any(not (k.startswith("text.bert.") or k.startswith("visual.")) for k in missing):
            raise ValueError(f"{out / 'checkpoint.pt'} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, elapsed = checkpoint["step"], checkpoint["elapsed"]
    logger = MetricsLogger(out, resume_step=step) if ctx.is_main else NullLogger()
    loss_fn = ClipLoss()
    trainable = [p for g in optimizer.param_groups for p in g["params"]]

    def snapshot():
        state = model.trained_state()  # heads, and any tower weights that moved from the package's
        save_checkpoint(out, {"model": state, "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed, "config": config.to_dict()})

    model.eval()  # locked towers: BatchNorm statistics and dropout stay as trained
    model.image_proj.train()
    n_views = images.shape[0]
    bar = tqdm(total=last_step, initial=step, desc=f"train {out.name} (locked image tower" + (f", {ctx.world} processes)" if ctx.enabled else ")"),
               unit="step", disable=not (progress and ctx.is_main), dynamic_ncols=True)
    started = time.perf_counter() - elapsed
    loss_value, metrics, batches, batches_epoch = float("nan"), {}, None, -1
    while step < last_step:
        epoch, offset = divmod(step, steps_per_epoch)
        if epoch != batches_epoch:
            batches, batches_epoch = _batches(pool, config, epoch, negatives), epoch
        scale = warmup_cosine(step, total_steps, config.optim.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = config.optim.lr * scale * group["lr_scale"]
        generator = step_generator(config.seed, step)
        indices = batches[offset]
        caption_ids = sample_captions(pool, indices, config, generator)
        views = torch.randint(0, n_views, (len(indices),), generator=generator)
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
            loss = loss_fn(image, text, model.logit_scale, caption_ids)
        if config.optim.text_proj_l2_to_init and ctx.is_main:  # once, not once per rank: gradients are summed
            loss = loss + config.optim.text_proj_l2_to_init * (model.text_proj.weight - text_proj_init).pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx.sum_gradients(trainable)
        if config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, config.optim.grad_clip)
        optimizer.step()
        step += 1
        loss_value = ctx.sum_value(float(loss.detach()))
        elapsed = time.perf_counter() - started
        end_of_epoch = record_step(bar, logger, model, optimizer, step, steps_per_epoch, elapsed, loss_value, epoch, "lower optim.lr")
        if (end_of_epoch and (step // steps_per_epoch) % config.val_every_epochs == 0 or step == last_step == total_steps) and ctx.is_main:
            refresh_validation_features()
            metrics = validator(model)
            model.image_proj.train()
            record_validation(bar, logger, step, steps_per_epoch, elapsed, metrics)
        if (end_of_epoch or step == last_step or step % config.checkpoint_every == 0) and ctx.is_main:
            snapshot()
    bar.close()
    logger.close()
    if not ctx.is_main:
        teardown(ctx)
        return TrainResult(str(out), str(out / "model"), step, round(elapsed, 1), loss_value, metrics)
    model.eval()
    model_dir = out / "model"
    model.save(model_dir)
    refresh_validation_features()
    calibration = validator.calibrate(model)
    seen = {field: sorted({pool.attributes[i].get(field) for i in train} - {None}) for field in ("articleType", "baseColour", "gender")}
    (model_dir / TRAINING_INFO_NAME).write_text(json.dumps({"config": config.to_dict(), "recipe": f"image tower blocks {lower}+ unlocked on cached maps" if lower else "locked image tower, cached features",
                                                         "steps": step, "seconds": round(elapsed, 1), "train_items": len(train),
                                                         "skipped_rows": pool.skipped, "seen_classes": seen,
                                                         "calibration": training_calibration(calibration, config.calibration_from),
                                                         "final_metrics": metrics, "processes": ctx.world}, indent=2) + "\n")
    teardown(ctx)
    return TrainResult(str(out), str(model_dir), step, round(elapsed, 1), loss_value, metrics)
