"""Tags from a catalog's own columns: a vocabulary of the values its categorical columns hold, with each column's
'unknown' threshold fitted on its labelled rows for a target precision, and coverage and precision measured on other
labelled rows it was not fitted on. What `index build --tag` (and so `serve --catalog`) uses for a catalog that is not
KAGL's, so that its blank cells are filled from its own vocabulary."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitrine.data.catalog import open_catalog
from vitrine.data.records import Item
from vitrine.data.roles import prompts_for
from vitrine.data.schema import CatalogSchema
from vitrine.data.splits import hash_unit, split_config_from
from vitrine.tagging.evaluate import attribute_report, fit_thresholds, labelled_rows
from vitrine.tagging.tagger import Tagger, fit_temperature
from vitrine.tagging.views import RegionViews
from vitrine.tagging.vocabulary import Vocabulary, vocabulary_from_dict, vocabulary_from_values

CALIBRATION_ROWS = 600  # labelled rows embedded to fit (half) and to check (the other half) the thresholds
MAX_VALUES = 200  # a column with more values than this is left out of the vocabulary (an id-like column)
TARGET_PRECISION = (
    0.8  # measured on 5,000 products (benchmarks/own_catalog.py): 0.9 left colour (47 values) at 5% coverage
)
SAVED_NAME = "tag-vocabulary.json"  # in an index directory: the calibrated vocabulary its build tagged with


def saved_vocabulary(index: str | os.PathLike) -> Vocabulary | None:
    """The catalog vocabulary an index was tagged with (`index build --tag`, `serve --catalog`), or None."""
    path = Path(index) / SAVED_NAME
    if str(index).startswith("milvus:") or not path.is_file():
        return None
    return vocabulary_from_dict(json.loads(path.read_text(encoding="utf-8"))["vocabulary"], origin=str(path))


@dataclass(frozen=True)
class CatalogTagging:
    """The calibrated vocabulary and what its check rows measured, per column."""

    vocabulary: Vocabulary
    fitted_on: int
    checked_on: int
    per_column: dict = field(default_factory=dict)  # {column: {"precision", "coverage", "n", "threshold", ...}}
    note: str = ""  # e.g. " the tagging model never trained on"

    def summary(self) -> str:
        parts = [
            f"{name} precision {v['precision']:.2f} at coverage {v['coverage']:.2f} (n={v['n']})"
            for name, v in self.per_column.items()
        ]
        return (
            f"tags from the catalog's own columns ({', '.join(self.vocabulary.names)}), thresholds fitted on "
            f"{self.fitted_on} "
            f"labelled rows{self.note}; on {self.checked_on} others: "
            + ("; ".join(parts) or "no labelled rows to check")
        )


def own_vocabulary(catalog: str, schema: CatalogSchema) -> Vocabulary:
    """Every value each categorical column takes, with prompts by the column's role (`vitrine.data.roles`)."""
    found: dict[str, set[str]] = {name: set() for name in schema.facet_fields}
    for record in open_catalog(catalog, schema=schema, on_error="skip", require_title=False).records():
        for name in found:
            value = record.attributes.get(name)
            if value:
                found[name].add(value)
    kept = {name: values for name, values in found.items() if 2 <= len(values) <= MAX_VALUES}
    return vocabulary_from_values(kept, prompts_for(None, schema))


def trained_on(model_name: str, catalog: str):
    """A predicate for the catalog rows the tagging model trained on, or None: a model `vitrine adapt` (or `train clip`)
    made from this very catalog saw its labels, so thresholds fitted on those rows would be optimistic."""
    info_path = Path(model_name.removeprefix("vitrine:")) / "training.json"
    if not info_path.is_file():
        return None
    config = json.loads(info_path.read_text(encoding="utf-8")).get("config", {})
    ours = os.path.abspath(catalog)
    if not any(os.path.abspath(source.get("path", "")) == ours for source in config.get("sources", [])):
        return None
    split = split_config_from(config)
    return lambda record: split.assign(record.id, record.attributes) == "train"


def _labelled_sample(catalog: str, schema: CatalogSchema, names: list[str], limit: int, skip=None) -> list:
    """Up to `limit` decoded labelled rows (none that `skip` names), spread over the catalog by id hash (the same rows
    on every run)."""
    reader = open_catalog(catalog, schema=schema, on_error="skip", require_title=False)
    records = [r for r in reader.records() if any(r.attributes.get(n) for n in names) and not (skip and skip(r))]
    records.sort(key=lambda r: hash_unit("tag-calibration", r.id))
    items = []
    for record in records[:limit]:
        item = reader.decode_or_skip(record)
        if item is not None:
            items.append(item)
    return items


def calibrate_catalog_tags(
    model, catalog: str, schema: CatalogSchema, views: RegionViews, pooling: str = "blend",
    target_precision: float = TARGET_PRECISION, rows: int = CALIBRATION_ROWS, progress: bool = False,
) -> CatalogTagging:
    """The catalog's own vocabulary, its temperatures and thresholds fitted on half of a labelled sample, measured on
    the other half."""
    vocabulary = own_vocabulary(catalog, schema)
    skip = trained_on(model.name, catalog)
    items = _labelled_sample(catalog, schema, vocabulary.names, rows, skip=skip)
    tagger = Tagger(model, vocabulary, views, pooling)
    embeds = tagger.embed(((item.image, item.id) for item in items), total=len(items), progress=progress)
    bare = [Item(id=i.id, image=None, title=i.title, attributes=i.attributes) for i in items]
    fit = [k for k, item in enumerate(bare) if hash_unit("tag-check", item.id) < 0.5]
    check = [k for k in range(len(bare)) if k not in set(fit)]
    fit_items, fit_embeds = [bare[k] for k in fit], embeds[fit] if fit else embeds[:0]
    calibration: dict[str, dict] = {}
    for attribute in vocabulary.attributes:
        labelled, labels, _ = labelled_rows(fit_items, attribute)
        if len(labelled) >= 20:
            scores = tagger.scores_for(attribute.name, fit_embeds[labelled])
            calibration[attribute.name] = {"temperature": fit_temperature(scores, labels)}
    vocabulary = vocabulary.with_calibration(calibration)
    # min_coverage 0: a column the model cannot tag at the target precision answers little or nothing rather than guess
    for name, fitted in fit_thresholds(
        Tagger(model, vocabulary, views, pooling), fit_items, fit_embeds, target_precision, 0.0
    ).items():
        calibration.setdefault(name, {}).update(fitted)
    vocabulary = vocabulary.with_calibration(calibration)
    per_column = {}
    if check and any(labelled_rows([bare[k] for k in check], a)[0] for a in vocabulary.attributes):
        report = attribute_report(
            Tagger(model, vocabulary, views, pooling), [bare[k] for k in check], embeds[torch.tensor(check)]
        )
        per_column = {
            name: {k: v[k] for k in ("precision", "coverage", "n", "threshold", "classes")}
            for name, v in report["per_attribute"].items()
        }
    return CatalogTagging(
        vocabulary=vocabulary,
        fitted_on=len(fit),
        checked_on=len(check),
        per_column=per_column,
        note=" the tagging model never trained on" if skip is not None else "",
    )


def catalog_tagger(
    model, catalog: str, schema: CatalogSchema, views: RegionViews, pooling: str = "blend",
    vocabulary: Vocabulary | None = None, progress: bool = False, saved: str | os.PathLike | None = None,
) -> tuple[Tagger, str]:
    """The tagger `index build --tag` runs and one line saying what it tags: the vocabulary given; for a KAGL catalog
    the shipped KAGL vocabulary (calibrated for the model when it ships one); otherwise the catalog's own columns,
    calibrated on its labelled rows."""
    from vitrine.tagging.vocabulary import builtin_vocabulary

    if vocabulary is not None:
        return Tagger(model, vocabulary, views, pooling), f"tags: {', '.join(vocabulary.names)} (the vocabulary given)"
    if schema.name == "kagl":
        shipped = builtin_vocabulary(model=model.name)
        return Tagger(model, shipped, views, pooling), f"tags: the shipped KAGL vocabulary ({', '.join(shipped.names)})"
    key = {
        "model": model.name, "catalog": os.path.abspath(catalog), "schema": schema.to_dict(), "views": views.count,
        "pooling": pooling,
    }
    if saved is not None and os.path.isfile(saved):  # calibrated by an earlier start of the same service: not again
        record = json.loads(open(saved, encoding="utf-8").read())
        if record.get("key") == key:
            return Tagger(model, vocabulary_from_dict(record["vocabulary"]), views, pooling), record[
                "summary"
            ] + " (as calibrated before)"
    tagging = calibrate_catalog_tags(model, catalog, schema, views, pooling, progress=progress)
    if saved is not None:
        Path(saved).parent.mkdir(parents=True, exist_ok=True)
        Path(saved).write_text(
            json.dumps(
                {
                    "key": key, "summary": tagging.summary(), "per_column": tagging.per_column,
                    "vocabulary": tagging.vocabulary.to_dict(),
                },
                indent=1,
            ),
            encoding="utf-8",
        )
    return Tagger(model, tagging.vocabulary, views, pooling), tagging.summary()
