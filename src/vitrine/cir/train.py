"""`vitrine train cir`: CLIP4Cir's two stages on triplets.

Stage 1 trains under the `sum` combination, by default only the text projection over cached text-tower outputs
(`stage1_trains: projection`; vitrine's MiniLM stays locked, the image tower never changes, so an index built with
the encoder stays valid and image features come from the catalog's cached embedding bank). `stage1_trains: text`
fine-tunes the whole text encoder, and `both` both encoders (CLIP4Cir's journal version); they save the fine-tuned
model. Stage 2 freezes everything and trains the Combiner (or the AGCN) on cached features.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitrine.cir.compose import Composer, text_tokens
from vitrine.cir.config import CirTrainConfig
from vitrine.cir.evaluate import evaluate_triplets
from vitrine.cir.triplets import Triplet, read_triplets
from vitrine.data.product_images import decode_products
from vitrine.data.transforms import to_input
from vitrine.embed.bank import ImageBank, image_bank
from vitrine.embed.text_cache import pooled_text_features
from vitrine.errors import InvalidInput
from vitrine.models import create_model
from vitrine.models.agcn import AGCN, AGCNConfig
from vitrine.models.combiner import Combiner, CombinerConfig, SumCombiner
from vitrine.models.composed import load_text_projection, save_text_projection
from vitrine.train.distributed import device_for, setup, teardown
from vitrine.train.engine import TrainResult, open_run, run


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
        raise InvalidInput("no triplet has its reference and a target in the training catalogs")
    return TripletTable(
        torch.tensor(refs), torch.tensor(texts), targets, torch.tensor(sets), kept, len(triplets) - len(kept)
    )


def _soft_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each query against a uniform target over its positives (duplicate targets are not negatives)."""
    target = positives.float() / positives.float().sum(1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


class CirRecipe:
    """One CLIP4Cir stage: stage 1 tunes the text projection, the text encoder or both encoders under `sum`; stage 2 a
    head."""

    def __init__(self, config: CirTrainConfig, ctx, progress: bool):
        self.config, self.ctx = config, ctx
        torch.manual_seed(config.seed)
        self.device = device = device_for(ctx, config.device)
        self.model = model = create_model(config.model).eval().to(device)
        self.parts = parts = model.parts()  # vitrine's dual encoders and hf:/openclip: CLIP and SigLIP models
        text_proj = parts["text_proj"]
        if not (
            isinstance(text_proj, nn.Linear) and (hasattr(model, "text") or getattr(model, "has_pooled_text", False))
        ):
            raise InvalidInput(
                f"vitrine train cir reads a linear text projection over the pooled text output; {model.name} has none"
            )
        model.requires_grad_(False)
        self.live = config.stage == 1 and config.stage1_trains != "projection"  # the encoders run in every step
        self.live_images = config.stage == 1 and config.stage1_trains == "both"
        if self.live_images and ctx.enabled:
            raise InvalidInput(
                "stage1_trains: both encodes every target in each process; train it in one process (drop --nproc)"
            )
        self.use_agcn = use_agcn = config.stage == 2 and config.combiner == "agcn"
        with ctx.main_first():  # rank 0 fills the feature caches, the other ranks read them
            self.bank = bank = image_bank(
                model, config.data, cache_dir=config.cache_dir, progress=progress and ctx.is_main, with_tokens=use_agcn
            )
        strings: dict[str, int] = {}
        self.embeds = bank.embeds.to(device)  # the bank itself stays on the CPU for validation
        self.train = triplet_table(read_triplets(config.triplets), bank, strings)
        self.val_triplets = read_triplets(config.val_triplets) if config.val_triplets else None
        self.strings = string_list = list(strings)
        if not self.live:
            with ctx.main_first():
                self.pooled = pooled_text_features(
                    model, string_list, config.cache_dir, progress=progress and ctx.is_main
                ).to(device)
        # A fresh layer loaded with the model's projection (its construction draws from the seeded stream, as the
        # shipped
        # heads' runs did), on the model's device.
        self.projection = projection = nn.Linear(
            text_proj.in_features, text_proj.out_features, bias=text_proj.bias is not None
        )
        projection.load_state_dict({k: v.float() for k, v in text_proj.state_dict().items()})
        projection.to(device).requires_grad_(False)
        base_projection = load_text_projection(config.start) if config.start else None
        if base_projection is not None:
            projection.load_state_dict(base_projection.state_dict())
        if self.live:
            self.trained_parts = ("text_tower", "text_proj") + (
                ("image_tower", "image_proj") if self.live_images else ()
            )
            for name in self.trained_parts:
                parts[name].requires_grad_(True)
            self.module: nn.Module = model
            self.combiner: nn.Module = SumCombiner()
            if self.live_images:
                used = set(self.train.refs.tolist()) | {row for rows in self.train.targets for row in rows}
                rows, self.images = decode_products(
                    config.data, [bank.items[r].id for r in sorted(used)], model.image_transform,
                    progress=progress and ctx.is_main,
                )
                self.image_row = torch.full((len(bank.items),), -1, dtype=torch.long)
                self.image_row[torch.tensor(sorted(used))] = torch.tensor(
                    [rows[bank.items[r].id] for r in sorted(used)]
                )
        elif config.stage == 1:
            self.module = projection.requires_grad_(True)
            self.combiner = SumCombiner()
        elif use_agcn:
            self.combiner = AGCN(
                AGCNConfig(
                    model.embed_dim, image_width=bank.tokens.shape[-1], text_width=text_proj.in_features,
                    width=config.agcn_width, layers=config.agcn_layers, heads=config.agcn_heads,
                    dropout=config.agcn_dropout, encoder=model.name,
                )
            )
            self.module = self.combiner
            self.text_token_table = tuple(t.to(device) for t in text_tokens(model, string_list))
        else:
            self.combiner = Combiner(
                CombinerConfig(
                    model.embed_dim, config.projection_dim, config.hidden_dim, config.dropout, encoder=model.name
                )
            )
            self.module = self.combiner
        self.combiner.to(device)
        if (
            ctx.enabled
        ):  # same initial weights on every rank (seeded above); from here on, each rank its own dropout masks
            torch.manual_seed(config.seed * 1_000_003 + ctx.rank)

    def _texts(self, ids: torch.Tensor) -> torch.Tensor:
        """Unit-norm modification texts by string id: the projection over cached features, or the live text encoder."""
        if not self.live:
            return F.normalize(self.projection(self.pooled[ids]), dim=-1)
        unique, inverse = torch.unique(ids, return_inverse=True)
        return self.model.text_features([self.strings[i] for i in unique.tolist()]).embeds[inverse]

    def _images(self, rows: torch.Tensor) -> torch.Tensor:
        """Image embeddings of bank rows: cached, or through the live image encoder (`stage1_trains: both`)."""
        if not self.live_images:
            return self.embeds[rows]
        return self.model.encode_image(
            to_input(self.images[self.image_row[rows]], self.model.image_transform).to(self.model.device)
        )

    def param_groups(self) -> list[dict]:
        return [
            {
                "params": [p for p in self.module.parameters() if p.requires_grad],
                "weight_decay": self.config.weight_decay,
                "lr_scale": 1.0,
            }
        ]

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train.refs) / self.config.batch_size)

    def forward_backward(self, step: int, epoch: int, offset: int) -> float:
        config, train, ctx = self.config, self.train, self.ctx
        order = torch.from_numpy(np.random.default_rng([config.seed, epoch]).permutation(len(train.refs)))
        rows = order[offset * config.batch_size : (offset + 1) * config.batch_size]
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        picks = (
            torch.rand(len(rows), generator=generator) * torch.tensor([len(train.targets[i]) for i in rows.tolist()])
        ).long()
        target_rows = torch.tensor([train.targets[i][j] for i, j in zip(rows.tolist(), picks.tolist())])
        local = rows[ctx.split(len(rows))]  # this rank's queries; the targets are the whole batch's
        reference, target = self._images(train.refs[local]), self._images(target_rows)
        text = self._texts(train.texts[local])
        if self.use_agcn:
            ids = train.texts[local]
            tokens = self.bank.tokens[train.refs[local]].float().to(self.device)
            query = self.combiner(reference, text, tokens, self.text_token_table[0][ids], self.text_token_table[1][ids])
        else:
            query = self.combiner(reference, text)
        logits = config.logit_scale * query @ F.normalize(target, dim=-1).T
        positives = (train.target_set[local].view(-1, 1) == train.target_set[rows].view(1, -1)).to(self.device)
        loss = _soft_cross_entropy(logits, positives) * (
            len(local) / len(rows)
        )  # the ranks' shares sum to the batch mean
        loss.backward()
        return loss.item()

    def validate(self) -> dict:
        if self.val_triplets is None:
            return {}
        self.module.eval()
        if self.live:  # the fine-tuned encoders themselves; a fine-tuned image tower needs the gallery re-encoded
            bank = (
                image_bank(self.model, self.config.data, cache_dir=None, progress=False)
                if self.live_images
                else self.bank
            )
            return evaluate_triplets(Composer(self.model, self.combiner), bank, self.val_triplets)
        composer = Composer(
            self.model, self.combiner, text_projection=copy.deepcopy(self.projection).requires_grad_(False)
        )
        return evaluate_triplets(composer, self.bank, self.val_triplets)

    def train_mode(self) -> None:
        if not self.live:
            self.module.train()
            return
        self.model.eval()  # locked parts stay in eval mode (batch-norm statistics, dropout)
        for name in self.trained_parts:
            self.parts[name].train()

    def state(self) -> dict:
        return {"module": self.module.state_dict()}

    def load_state(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])

    def log_values(self) -> dict:
        return {}


def train_cir(config: CirTrainConfig, progress: bool = True) -> TrainResult:
    """Train one stage; rerunning the same config resumes from `out/checkpoint.pt`.

    Under torchrun (WORLD_SIZE > 1) each process takes a slice of every batch and scores it against the whole
    batch's targets; rank 0 validates, checkpoints and saves (see vitrine.train.distributed).
    """
    ctx = setup(config.device)
    schedule, checkpoint = open_run(
        config, ctx, "cir", lr=config.lr, warmup_steps=config.warmup_steps, epochs=config.epochs,
        max_steps=config.max_steps, val_every_epochs=config.val_every_epochs, desc=f"train cir stage {config.stage}",
    )
    recipe = CirRecipe(config, ctx, progress)
    state = run(recipe, schedule, ctx, checkpoint, progress)
    val = state.metrics
    if ctx.is_main:
        val = val or recipe.validate()
        recipe.model.eval().cpu()
        recipe.combiner.cpu()
        recipe.projection.cpu()
        if recipe.live:  # the fine-tuned encoder is the stage-1 result; its sum head records how to load it
            encoder = recipe.model.saved_name(recipe.model.save(state.out / "model"))
            _save(state.out / "combiner", config, encoder, recipe.combiner, None, val or None)
        else:
            _save(state.out / "combiner", config, recipe.model.name, recipe.combiner, recipe.projection, val or None)
    teardown(ctx)
    return state.result(state.out / "combiner", val)


def _save(
    directory: Path, config: CirTrainConfig, encoder: str, combiner: nn.Module, projection: nn.Linear | None,
    val: dict | None,
) -> None:
    extra = {"encoder": encoder, "stage": config.stage, "triplets": config.triplets, "val": val}
    if config.stage == 1:
        extra["stage1_trains"] = config.stage1_trains
    combiner.eval()
    combiner.save(directory, extra=extra)
    if projection is not None:
        save_text_projection(directory, projection)
