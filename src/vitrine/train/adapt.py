"""`vitrine adapt`: fine-tune a trained model on a shop's own catalog, offline, on its own CPU, in minutes.

The base model's own recipe (for `vitrine:kagl-base`, heads over a locked image tower's cached features) continues from
its weights on the catalog's products, captioned by their titles and by templates built from the catalog's own
columns (`vitrine.data.roles`). A slice of the catalog (10% by id) is held out; the base model and the adapted one are
validated on it with the same validator, so the figures before and after compare like for like. The zero-shot margin
comes from the base model's record (no protocol run of the catalog is needed), and training.json says so.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from vitrine.data.catalog import open_catalog, schema_for
from vitrine.data.roles import column_roles
from vitrine.data.schema import CatalogSchema, SchemaError, resolve_schema
from vitrine.data.splits import SplitConfig
from vitrine.errors import InvalidInput
from vitrine.models.dual import TRAINING_INFO_NAME
from vitrine.models.trainable import training_start
from vitrine.train.config import OptimConfig, SourceConfig, TrainConfig
from vitrine.train.validate import validate_or_report

DEFAULT_BASE = "vitrine:kagl-base"
HOLDOUT = 0.1  # share of the catalog's products (by id hash) held out for the before/after figures
# Optimizer steps of a default adapt run. Measured on 5,000 products (benchmarks/own_catalog.py): 600 steps beat 240 on
# every held-out figure but season (type top-1 0.777 -> 0.826); learning rate x1.0 instead of x0.5, and epochs balanced
# over the type column, traded the base's known types for new ones.
TARGET_STEPS = 600
LR_SCALE = 0.5  # warm start: a gentler learning rate than the base recipe's first training


@dataclass(frozen=True)
class AdaptResult:
    """What `vitrine adapt` prints: the model's load name and the held-out figures before and after."""

    model: str
    out: str
    catalog: str
    schema: str
    products: int
    train_items: int
    heldout_items: int
    steps: int
    seconds: float
    before: dict
    after: dict
    validation_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "out": self.out, "catalog": self.catalog, "schema": self.schema,
            "products": self.products, "train_items": self.train_items, "heldout_items": self.heldout_items,
            "steps": self.steps, "seconds": self.seconds, "before": self.before, "after": self.after,
            "validation_errors": self.validation_errors,
        }


def base_recipe(model_dir: str | Path) -> TrainConfig:
    """The training config a trained vitrine model was made with (its training.json), to continue its recipe."""
    path = Path(model_dir) / TRAINING_INFO_NAME
    if not path.is_file():
        raise InvalidInput(
            f"{model_dir} has no {TRAINING_INFO_NAME}: adapt and `train clip --model` continue a model vitrine trained "
            "(vitrine:kagl-base, vitrine:kagl-small or a training run's model directory)"
        )
    return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8"))["config"])


def continue_recipe(model: str, sources: tuple[SourceConfig, ...], **changes) -> TrainConfig:
    """`train clip --model NAME --data PATH` without a config: NAME's own recipe, warm-started from its weights, on the
    new sources; its zero-shot margin is inherited from NAME's record."""
    start = training_start(model)
    if not Path(start).is_dir():
        return replace(TrainConfig(), model=start, sources=sources, **changes)
    recipe = base_recipe(start)
    info = json.loads((Path(start) / TRAINING_INFO_NAME).read_text(encoding="utf-8"))
    if "batch_size" not in changes:  # a catalog smaller than the recipe's batch trains with a smaller one
        rows = sum(open_catalog(s.path, schema=s.schema, on_error="skip", require_title=False).count() for s in sources)
        changes["batch_size"] = _schedule(round(rows * (1 - recipe.split.val_fraction)), recipe, 1)["batch_size"]
    return recipe.replace(
        model=start, sources=sources, calibration_from=start if info.get("calibration") else None, **changes
    )


def _schedule(train_items: int, recipe: TrainConfig, epochs: int | None) -> dict:
    """Batch size, epochs and learning rate for a catalog of this size: the base batch when the catalog fills it."""
    batch = recipe.batch_size
    while batch > 8 and batch > train_items // 2:
        batch //= 2
    steps_per_epoch = max(1, (train_items - int(batch * recipe.locked.hard_negative_fraction)) // batch)
    epochs = epochs or max(2, math.ceil(TARGET_STEPS / steps_per_epoch))
    optim = recipe.optim
    return {
        "batch_size": batch,
        "epochs": epochs,
        "val_every_epochs": max(1, epochs // 4),
        "optim": OptimConfig(
            lr=optim.lr * LR_SCALE,
            weight_decay=optim.weight_decay,
            betas=optim.betas,
            warmup_steps=min(optim.warmup_steps, max(1, epochs * steps_per_epoch // 10)),
            text_proj_lr_scale=optim.text_proj_lr_scale,
            grad_clip=optim.grad_clip,
        ),
    }


def _base_roles(base: TrainConfig) -> dict[str, str]:
    """{role: column} of the base model's first training source (its schema by name; {} when it cannot be read)."""
    try:
        return column_roles(resolve_schema(None if base.sources[0].schema == "auto" else base.sources[0].schema))
    except (SchemaError, OSError, KeyError, ValueError):
        return {}


def _known_values(base_dir: Path, base: TrainConfig, schema: CatalogSchema) -> dict[str, set[str]]:
    """{catalog column: values the base model trained on}, matching columns by role (type, colour, ...) or by name."""
    info = json.loads((base_dir / TRAINING_INFO_NAME).read_text(encoding="utf-8"))
    seen = info.get("seen_classes") or {}
    base_roles = _base_roles(base)
    known = {}
    for role, column in column_roles(schema).items():
        if base_roles.get(role) in seen:
            known[column] = set(seen[base_roles[role]])
    for column in schema.facet_fields:
        if column not in known and column in seen:
            known[column] = set(seen[column])
    return known


def _map_calibration(model_dir: Path, base: TrainConfig, schema: CatalogSchema) -> None:
    """Key the inherited zero-shot margin by the catalog's own column of the same role (articleType -> category)."""
    path = model_dir / TRAINING_INFO_NAME
    info = json.loads(path.read_text(encoding="utf-8"))
    by_role = {column: role for role, column in _base_roles(base).items()}
    ours = column_roles(schema)
    calibration = dict(info.get("calibration") or {})
    for base_field, entry in list(calibration.items()):
        column = ours.get(by_role.get(base_field, ""))
        if column and column not in calibration:
            calibration[column] = {**entry, "field": column, "base_field": base_field}
    info["calibration"] = calibration
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _figures(metrics: dict) -> dict:
    """The held-out figures of a validation pass: title->image R@10 and zero-shot top-1 per categorical column."""
    keep = {
        k.removeprefix("val/"): v
        for k, v in metrics.items()
        if k.startswith("val/") and ("_top1" in k or "_n_" in k or k.endswith("R@10"))
    }
    return dict(sorted(keep.items()))


def adapt(
    catalog: str, out: str, model: str = DEFAULT_BASE, schema=None, holdout: float = HOLDOUT, epochs: int | None = None,
    cache_dir: str = "runs/cache", progress: bool = True, max_items: int | None = None,
) -> AdaptResult:
    """Fine-tune `model` on `catalog` into `out` (resumable: rerun the same command after a kill)."""
    from vitrine.train.clip import train_clip

    started = time.perf_counter()
    schema_obj, line = schema_for(catalog, schema)
    print(line, file=sys.stderr)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    schema_file = out_dir / "schema.json"
    schema_file.write_text(json.dumps(schema_obj.to_dict(), indent=2) + "\n", encoding="utf-8")
    base_dir = Path(training_start(model))
    if not base_dir.is_dir():
        raise InvalidInput(
            f"adapt continues a trained model; {model} is an untrained architecture (train it with `vitrine train "
            "clip`)"
        )
    recipe = base_recipe(base_dir)
    products = open_catalog(catalog, schema=schema_obj, on_error="skip", require_title=False).count()
    split = SplitConfig(seed=0, val_fraction=holdout)
    train_items = round(products * (1 - holdout)) if max_items is None else min(max_items, products)
    if train_items < 4:
        raise InvalidInput(f"{catalog} has {products} products; adapt needs at least 5 to train and hold some out")
    sources = (SourceConfig(str(catalog), 1.0, schema=str(schema_file), prompts="auto"),)
    config = continue_recipe(
        str(base_dir), sources, out=str(out_dir), split=split, cache_dir=cache_dir, val_max_items=100_000,
        max_items=max_items, checkpoint_every=50, **_schedule(train_items, recipe, epochs),
    )
    known = _known_values(base_dir, recipe, schema_obj)
    errors: list[str] = []
    before: dict = {}
    recipes: list = []

    def baseline(run) -> None:
        recipes.append(run)
        run.validator.known = known
        before.update(validate_or_report(run.validator, run.model))  # a failure is reported; training goes on
        if "validation_error" in before:
            errors.append(f"baseline validation: {before.pop('validation_error')}")

    result = train_clip(config, progress=progress, before=baseline)
    after = dict(result.metrics)
    if not after and recipes:  # a finished run, rerun: nothing was trained or validated this time, so validate it now
        after = validate_or_report(recipes[0].validator, recipes[0].model)
    model_dir = Path(result.saved)
    _map_calibration(model_dir, recipe, schema_obj)
    info = json.loads((model_dir / TRAINING_INFO_NAME).read_text(encoding="utf-8"))
    if "validation_error" in after:
        errors.append(f"validation: {after['validation_error']}")
    if info.get("calibration_error"):
        errors.append(f"calibration: {info['calibration_error']}")
    heldout = sum(
        1
        for r in open_catalog(catalog, schema=schema_obj, on_error="skip", require_title=False).records()
        if split.assign(r.id, r.attributes) == "val"
    )
    return AdaptResult(
        model=info.get("load_as") or f"vitrine:{model_dir.resolve()}",
        out=str(out_dir),
        catalog=str(catalog),
        schema=line,
        products=products,
        train_items=info.get("train_items", 0),
        heldout_items=heldout,
        steps=result.steps,
        seconds=round(time.perf_counter() - started, 1),
        before=_figures(before),
        after=_figures(after),
        validation_errors=errors,
    )


def format_result(result: AdaptResult) -> str:
    """The before/after table people read."""
    rows = sorted(set(result.before) | set(result.after), key=lambda k: (not k.startswith("t2i"), "_n_" in k, k))
    lines = [
        f"adapted {result.products} products ({result.train_items} trained on, {result.heldout_items} held out) in "
        f"{result.seconds:.0f}s, {result.steps} steps",
        f"{'held-out figure':<34}{'before':>8}{'after':>8}{'change':>8}",
    ]
    for key in rows:
        if "_n_" in key:
            continue
        a, b = result.before.get(key), result.after.get(key)
        change = f"{b - a:+.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else ""
        column, _, part = key.partition("_top1")
        label = (
            "title->image R@10"
            if key == "t2i_R@10"
            else f"{column} zero-shot top-1"
            + {"": "", "_known": ", values the base knew", "_new": ", values new to it"}.get(part, part)
        )
        count = result.after.get(f"{column}_n{part}") if part else None
        label += f" ({count})" if count else ""
        lines.append(f"{label:<34}{_cell(a):>8}{_cell(b):>8}{change:>8}")
    for error in result.validation_errors:
        lines.append(f"warning: {error} (the model was saved)")
    lines.append(f"model: {result.model}")
    lines.append(f"serve it: vitrine serve --catalog {result.catalog} --model {result.model}")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
