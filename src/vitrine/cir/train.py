"""`vitrine train cir`: CLIP4Cir's two stages on triplets, over frozen image features.

Stage 1 fine-tunes the text projection (the trainable part of vitrine's text tower; MiniLM stays locked)
with the `sum` combination. Stage 2 freezes everything and trains the Combiner. The image tower never
changes, so an index built with the encoder stays valid, and both stages read image features from the
cache (`cached_features=False` recomputes them every step, to measure what the cache saves).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vitrine.cir.compose import Composer
from vitrine.cir.config import CirTrainConfig
from vitrine.cir.evaluate import evaluate_triplets
from vitrine.embed.bank import ImageBank, image_bank
from vitrine.cir.triplets import Triplet, read_triplets
from vitrine.models import create_model
from vitrine.models.agcn import AGCN, AGCNConfig
from vitrine.models.combiner import Combiner, CombinerConfig, SumCombiner
from vitrine.models.composed import load_text_projection, save_text_projection
from vitrine.train.checkpoint import load_checkpoint, save_checkpoint
from vitrine.train.distributed import setup, teardown
from vitrine.train.logger import MetricsLogger, NullLogger
from vitrine.train.schedule import warmup_cosine

_RUNTIME_KEYS = ("max_steps", "threads", "out", "cache_dir", "val_every_epochs")


@dataclass
class TripletTable:
    """Triplets as bank rows: one reference, one text id and a target set per row."""

    refs: torch.Tensor
    texts: torch.Tensor
    targets: list[list[int]]
    target_set: torch.Tensor  # equal ids <=> equal target sets: the in-batch positives
    triplets: list[Triplet]
    skipped: int


def triplet_table(triplets: list[Triplet], bank: ImageBank, strings: dict[str, int]) -> TripletTable:
    refs, texts, targets, sets, kept = [], [], [], [], []
    set_ids: dict[tuple, int] = {}
    for t in triplets:
        rows = sorted(bank.row[x] for x in t.targets if x in bank.row and x != t.reference)
        if t.reference not in bank.row or not rows:
            continue
        refs.append(bank.row[t.reference])
        texts.append(strings.setdefault(t.modification, len(strings)))
        targets.append(rows)
        sets.append(set_ids.setdefault(tuple(rows), len(set_ids)))
        kept.append(t)
    if not kept:
        raise ValueError("no triplet has its reference and a target in the training catalogs")
    return TripletTable(torch.tensor(refs), torch.tensor(texts), targets, torch.tensor(sets), kept, len(triplets) - len(kept))


@dataclass(frozen=True)
class CirResult:
    out: str
    steps: int
    seconds: float
    seconds_per_epoch: float
    val: dict | None


class LiveImages:
    """Recompute image features every step from pixels decoded once (the slow path the cache replaces)."""

    def __init__(self, model, bank: ImageBank, paths, progress: bool):
        from vitrine.data.catalog import open_catalog

        transform = model.image_transform
        pixels = torch.zeros(len(bank.items), 3, *_input_size(model), dtype=torch.uint8)
        for path in paths:
            reader = open_catalog(path, on_error="skip", require_title=False)
            for item in tqdm(reader, desc=f"decode {Path(path).name}", unit="img", disable=not progress):
                if item.id in bank.row:
                    pixels[bank.row[item.id]] = torch.from_numpy(np.asarray(transform.geometry(item.image), dtype=np.uint8).transpose(2, 0, 1))
        self.model, self.pixels = model, pixels

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        from vitrine.train.data import to_input

        with torch.no_grad():
            return self.model.encode_image(to_input(self.pixels[rows], self.model.image_transform))


def _input_size(model) -> tuple[int, int]:
    from PIL import Image

    probe = model.image_transform.geometry(Image.new("RGB", (8, 8)))
    return probe.size[1], probe.size[0]


def _soft_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each query against a uniform target over its positives (duplicate targets are not negatives)."""
    target = positives.float() / positives.float().sum(1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def train_cir(config: CirTrainConfig, progress: bool = True) -> CirResult:
    """Train one stage; rerunning the same config resumes from `out/checkpoint.pt`.

    Under torchrun (WORLD_SIZE > 1) each process takes a slice of every batch and scores it against the whole
    batch's targets; rank 0 validates, checkpoints and saves (see vitrine.train.distributed).
    """
    ctx = setup("cpu")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    comparable = {k: v for k, v in config.to_dict().items() if k not in _RUNTIME_KEYS}
    checkpoint = load_checkpoint(out)
    if checkpoint is not None and checkpoint["comparable"] != comparable:
        raise ValueError(f"{out} holds a checkpoint of a different cir config; use another --out or delete {out / 'checkpoint.pt'}")
    if ctx.is_main:
        (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)

    model = create_model(config.model).eval()
    if not hasattr(model, "text_proj"):
        raise ValueError(f"vitrine train cir needs a vitrine dual encoder (its text projection is what stage 1 tunes); got {model.name}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    use_agcn = config.stage == 2 and config.combiner == "agcn"
    with ctx.main_first():  # rank 0 fills the feature caches, the other ranks read them
        bank = image_bank(model, config.data, cache_dir=config.cache_dir, progress=progress and ctx.is_main, with_tokens=use_agcn)
    strings: dict[str, int] = {}
    train = triplet_table(read_triplets(config.triplets), bank, strings)
    val_triplets = read_triplets(config.val_triplets) if config.val_triplets else None
    images = (lambda rows: bank.embeds[rows]) if config.cached_features else LiveImages(model, bank, config.data, progress)

    from vitrine.cir.compose import pooled_texts, text_tokens
    from vitrine.train.text_cache import pooled_text_features

    string_list = list(strings)
    if config.cached_features:
        with ctx.main_first():
            pooled = pooled_text_features(model, string_list, config.cache_dir, progress=progress and ctx.is_main)
        text_input = lambda ids: pooled[ids]  # noqa: E731
    else:
        text_input = lambda ids: pooled_texts(model, [string_list[i] for i in ids.tolist()])  # noqa: E731

    base_projection = load_text_projection(config.start) if config.start else None
    projection = nn.Linear(model.text.width, model.embed_dim, bias=False)
    projection.weight.data.copy_(base_projection if base_projection is not None else model.text_proj.weight)
    if config.stage == 1:
        module: nn.Module = projection
        combiner: nn.Module = SumCombiner()
    elif use_agcn:
        projection.requires_grad_(False)
        combiner = AGCN(AGCNConfig(model.embed_dim, image_width=bank.tokens.shape[-1], text_width=model.text.width, width=config.agcn_width,
                                   layers=config.agcn_layers, heads=config.agcn_heads, dropout=config.agcn_dropout, encoder=model.name))
        module = combiner
        text_token_table = text_tokens(model, string_list)
    else:
        projection.requires_grad_(False)
        combiner = Combiner(CombinerConfig(model.embed_dim, config.projection_dim, config.hidden_dim, config.dropout, encoder=model.name))
        module = combiner
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay)
    if ctx.enabled:  # same initial weights on every rank (seeded above); from here on, each rank its own dropout masks
        torch.manual_seed(config.seed * 1_000_003 + ctx.rank)
    steps_per_epoch = math.ceil(len(train.refs) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    last_step = min(total_steps, config.max_steps) if config.max_steps else total_steps
    step, elapsed = 0, 0.0
    if checkpoint is not None:
        module.load_state_dict(checkpoint["module"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, elapsed = checkpoint["step"], checkpoint["elapsed"]
    logger = MetricsLogger(out, resume_step=step) if ctx.is_main else NullLogger()
    val_report = None
    trainable = [p for p in module.parameters() if p.requires_grad]

    def validate() -> dict | None:
        if val_triplets is None:
            return None
        module.eval()
        composer = Composer(model, combiner, text_projection=projection.weight.detach().clone())
        report = evaluate_triplets(composer, bank, val_triplets)
        module.train()
        return report

    bar = tqdm(total=last_step, initial=step, desc=f"train cir stage {config.stage}", unit="step", disable=not (progress and ctx.is_main), dynamic_ncols=True)
    module.train()
    started = time.perf_counter() - elapsed
    while step < last_step:
        epoch = step // steps_per_epoch
        order = torch.from_numpy(np.random.default_rng([config.seed, epoch]).permutation(len(train.refs)))
        batch_index = step % steps_per_epoch
        rows = order[batch_index * config.batch_size : (batch_index + 1) * config.batch_size]
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        picks = (torch.rand(len(rows), generator=generator) * torch.tensor([len(train.targets[i]) for i in rows.tolist()])).long()
        target_rows = torch.tensor([train.targets[i][j] for i, j in zip(rows.tolist(), picks.tolist())])
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine(step, total_steps, config.warmup_steps)
        mine = ctx.split(len(rows))  # this rank's queries; the targets are the whole batch's
        local = rows[mine]
        reference, target = images(train.refs[local]), images(target_rows)
        text = F.normalize(projection(text_input(train.texts[local])), dim=-1)
        if use_agcn:
            ids = train.texts[local]
            query = combiner(reference, text, bank.tokens[train.refs[local]].float(), text_token_table[0][ids], text_token_table[1][ids])
        else:
            query = combiner(reference, text)
        logits = config.logit_scale * query @ F.normalize(target, dim=-1).T
        positives = train.target_set[local].view(-1, 1) == train.target_set[rows].view(1, -1)
        loss = _soft_cross_entropy(logits, positives) * (len(local) / len(rows))  # the ranks' shares sum to the batch mean
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx.sum_gradients(trainable)
        optimizer.step()
        step += 1
        loss_value = ctx.sum_value(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        values = {"loss": round(loss_value, 5), "lr": optimizer.param_groups[0]["lr"], "epoch": epoch}
        end_of_epoch = step % steps_per_epoch == 0
        if not ctx.is_main:
            continue
        if end_of_epoch and ((epoch + 1) % config.val_every_epochs == 0 or step == total_steps):
            val_report = validate()
            if val_report:
                values.update({f"val/{k}": val_report[k] for k in ("R@1", "R@10", "R@50")})
        if step % 10 == 0 or end_of_epoch or step == last_step:
            logger.log(step, values)
        if end_of_epoch or step == last_step:
            save_checkpoint(out, {"module": module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                  "elapsed": time.perf_counter() - started, "comparable": comparable})
    bar.close()
    logger.close()
    seconds = time.perf_counter() - started
    if ctx.is_main:
        if val_report is None:
            val_report = validate()
        _save(out / "combiner", config, model.name, combiner, projection, val_report)
    teardown(ctx)
    return CirResult(str(out), step, round(seconds, 2), round(seconds / max(step / steps_per_epoch, 1e-9), 2), val_report)


def _save(directory: Path, config: CirTrainConfig, encoder: str, combiner: nn.Module, projection: nn.Linear, val: dict | None) -> None:
    extra = {"encoder": encoder, "stage": config.stage, "triplets": config.triplets, "val": val}
    combiner.eval()
    combiner.save(directory, extra=extra)
    save_text_projection(directory, projection.weight)
