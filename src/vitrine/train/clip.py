"""`vitrine train clip`: contrastive image-text training (OpenFashionCLIP's recipe on open fashion data)."""
from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vitrine.data.prompts import resolve_prompts
from vitrine.losses import ClipLoss
from vitrine.models.dual import TRAINING_INFO_NAME
from vitrine.train.calibration import training_calibration
from vitrine.train.checkpoint import save_checkpoint
from vitrine.train.config import TrainConfig
from vitrine.train.data import augment, epoch_order, load_pool, sample_captions
from vitrine.train.distributed import setup, sharded_contrastive_loss, teardown
from vitrine.train.dual_run import TrainResult, apply_freeze, build_model, model_state, open_run, param_groups, step_generator
from vitrine.train.logger import MetricsLogger, NullLogger
from vitrine.train.progress import record_step, record_validation
from vitrine.train.schedule import warmup_cosine
from vitrine.train.text_side import LiveTexts, PooledTexts
from vitrine.train.validate import Validator

def train_clip(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train, checkpointing every `checkpoint_every` steps; rerunning with the same config resumes."""
    if config.freeze.image_tower or config.locked.lower_blocks:
        from vitrine.train.locked import train_locked

        return train_locked(config, progress=progress)
    ctx = setup(config.device)
    out, checkpoint = open_run(config, ctx)

    torch.manual_seed(config.seed)
    model = build_model(config)
    device = torch.device(f"cuda:{ctx.local_rank}" if ctx.enabled and config.device.startswith("cuda") else config.device)
    model.to(device)
    apply_freeze(model, config)
    if config.grad_checkpointing:
        model.visual.grad_checkpointing = True
    pool = load_pool(config, model.image_transform, progress=progress)
    if pool.skipped:
        print(f"skipped {pool.skipped} unusable rows while loading the training data", file=sys.stderr)
    train_size = len(pool.indices("train"))
    micro = config.batch_size // config.accumulation
    if train_size < config.batch_size:
        raise ValueError(f"only {train_size} training items for batch size {config.batch_size}")
    text_locked = config.freeze.text_tower
    # With the tower locked, a training step needs only these cached features and the projection; an unlocked tower
    # runs on every caption, in training and in validation.
    with ctx.main_first():  # rank 0 fills the text feature cache, the other ranks read it
        texts = PooledTexts(model, pool.strings, config.cache_dir, progress=progress and ctx.is_main) if text_locked else LiveTexts(pool.strings)
    text_feats = texts.features if text_locked else None
    validator = Validator(model, pool, resolve_prompts(config.sources[0].prompts), texts, config.val_max_items,
                          config.seed) if ctx.is_main else None
    if ctx.enabled:
        ctx.shard(micro)  # refuses a micro-batch that does not split evenly over the processes

    optimizer = torch.optim.AdamW(param_groups(model, config), lr=config.optim.lr, betas=config.optim.betas)
    steps_per_epoch = len(epoch_order(pool, config, 0)) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    last_step = min(total_steps, config.max_steps) if config.max_steps else total_steps
    text_proj_init = model.text_proj.weight.detach().clone()
    step, elapsed = 0, 0.0
    if checkpoint is not None:
        missing, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
        if unexpected or any(not k.startswith("text.bert.") for k in missing):
            raise ValueError(f"{out / 'checkpoint.pt'} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        optimizer.load_state_dict(checkpoint["optimizer"])
        text_proj_init = checkpoint["text_proj_init"]
        step, elapsed = checkpoint["step"], checkpoint["elapsed"]
    logger = MetricsLogger(out, resume_step=step) if ctx.is_main else NullLogger()
    loss_fn = ClipLoss()
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if config.amp else nullcontext()

    def snapshot():
        save_checkpoint(out, {"model": model_state(model, config), "optimizer": optimizer.state_dict(), "step": step,
                              "elapsed": elapsed, "config": config.to_dict(), "text_proj_init": text_proj_init})

    model.train()
    if config.freeze.text_tower:
        model.text.eval()  # a locked tower also keeps dropout off
    bar = tqdm(total=last_step, initial=step, desc=f"train {out.name}" + (f" ({ctx.world} processes)" if ctx.enabled else ""), unit="step",
               disable=not (progress and ctx.is_main), dynamic_ncols=True)
    started = time.perf_counter() - elapsed
    loss_value = float("nan")
    metrics: dict = {}
    order, order_epoch = None, -1
    while step < last_step:
        epoch, offset = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(pool, config, epoch), epoch
        scale = warmup_cosine(step, total_steps, config.optim.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = config.optim.lr * scale * group["lr_scale"]
        generator = step_generator(config.seed, step)
        indices = order[offset * config.batch_size : (offset + 1) * config.batch_size]
        caption_ids = sample_captions(pool, indices, config, generator)
        pixels = augment(pool.images[indices], model.image_transform, generator)
        optimizer.zero_grad(set_to_none=True)
        loss_total = 0.0
        for part in range(config.accumulation):
            window = slice(part * micro, (part + 1) * micro)
            if ctx.enabled:  # this rank's slice of the micro-batch; negatives from every rank
                mine = ctx.shard(micro)
                window = slice(window.start + mine.start, window.start + mine.stop)
            ids = caption_ids[window]
            with amp:
                image = model.image_features(pixels[window].to(device)).embeds
                if text_locked:
                    text = F.normalize(model.text_proj(text_feats[ids].to(device)), dim=-1)
                else:
                    text = model.text_features([pool.strings[i] for i in ids.tolist()]).embeds
            image, text = image.float(), text.float()
            if ctx.enabled:
                all_ids = caption_ids[part * micro : (part + 1) * micro].to(device)
                loss = sharded_contrastive_loss(image, text, ctx.gather(image), ctx.gather(text), model.logit_scale, ids.to(device), all_ids, micro)
            else:
                loss = loss_fn(image, text, model.logit_scale, ids.to(device))
            if config.optim.text_proj_l2_to_init and ctx.is_main:  # once, not once per rank: gradients are summed
                loss = loss + config.optim.text_proj_l2_to_init * (model.text_proj.weight - text_proj_init.to(device)).pow(2).sum()
            (loss / config.accumulation).backward()
            loss_total += float(loss.detach()) / config.accumulation
        ctx.sum_gradients(trainable)
        if config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, config.optim.grad_clip)
        optimizer.step()
        step += 1
        loss_value = ctx.sum_value(loss_total)
        elapsed = time.perf_counter() - started
        end_of_epoch = record_step(bar, logger, model, optimizer, step, steps_per_epoch, elapsed, loss_value, epoch, "lower optim.lr or disable amp")
        if (end_of_epoch and (step // steps_per_epoch) % config.val_every_epochs == 0 or step == last_step == total_steps) and ctx.is_main:
            metrics = validator(model)
            record_validation(bar, logger, step, steps_per_epoch, elapsed, metrics)
        if (step % config.checkpoint_every == 0 or end_of_epoch or step == last_step) and ctx.is_main:
            snapshot()
    bar.close()
    logger.close()
    model_dir = out / "model"
    if not ctx.is_main:
        teardown(ctx)
        return TrainResult(str(out), str(model_dir), step, round(elapsed, 1), loss_value, metrics)
    model.eval()
    model.save(model_dir)
    calibration = validator.calibrate(model)
    seen = {field: sorted({pool.attributes[i].get(field) for i in pool.indices("train")} - {None}) for field in ("articleType", "baseColour", "gender")}
    (model_dir / TRAINING_INFO_NAME).write_text(json.dumps({"config": config.to_dict(), "steps": step, "seconds": round(elapsed, 1),
                                                         "train_items": train_size, "skipped_rows": pool.skipped, "seen_classes": seen,
                                                         "calibration": training_calibration(calibration, config.calibration_from),
                                                         "final_metrics": metrics, "processes": ctx.world}, indent=2) + "\n")
    teardown(ctx)
    return TrainResult(str(out), str(model_dir), step, round(elapsed, 1), loss_value, metrics)
