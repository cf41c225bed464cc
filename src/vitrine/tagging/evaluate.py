"""`vitrine eval attributes`: per-attribute precision and recall of open-vocabulary tags on a labelled catalog.

Precision counts only answers given (an 'unknown' is no answer); recall counts every labelled item; mean
precision averages precision over attributes, as RaF-CLIP reports it. `top1` is accuracy with no abstention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vitrine.data.catalog import open_catalog
from vitrine.data.prompts import resolve_prompts
from vitrine.data.records import Item
from vitrine.data.splits import SplitConfig, load_split_config, split_filter
from vitrine.errors import InvalidInput
from vitrine.tagging.tagger import Tagger, fit_hierarchy, fit_region_weight, fit_temperature, fit_threshold
from vitrine.tagging.views import RegionViews
from vitrine.tagging.vocabulary import Vocabulary, vocabulary_from_values


def labelled_rows(items: Sequence[Item], attribute) -> tuple[list[int], torch.Tensor, int]:
    """Rows whose label is one of the attribute's values, their value indices, and how many labels were not."""
    index = {name: c for c, name in enumerate(attribute.value_names)}
    rows, labels, outside = [], [], 0
    for row, item in enumerate(items):
        label = item.attributes.get(attribute.name)
        if label is None:
            continue
        if label not in index:
            outside += 1
            continue
        rows.append(row)
        labels.append(index[label])
    return rows, torch.tensor(labels, dtype=torch.long), outside


def attribute_report(tagger: Tagger, items: Sequence[Item], view_embeds: torch.Tensor) -> dict:
    per_attribute, top1 = {}, {}
    computed = tagger.probabilities(view_embeds)
    for attribute in tagger.vocabulary.attributes:
        rows, labels, outside = labelled_rows(items, attribute)
        if not rows:
            continue
        best_p, best = computed[attribute.name][1][rows].max(1)
        answered = best_p >= attribute.threshold
        correct = best == labels
        n_answered = int(answered.sum())
        per_attribute[attribute.name] = {
            "precision": round(float((correct & answered).sum()) / n_answered, 4) if n_answered else 0.0,
            "recall": round(float((correct & answered).sum()) / len(rows), 4),
            "n": len(rows),
            "answered": n_answered,
            "coverage": round(n_answered / len(rows), 4),
            "threshold": round(attribute.threshold, 4),
            "classes": len(attribute.values),
            **({"derived_from": attribute.derive.source} if attribute.derive is not None else {}),
            **({"not_in_vocabulary": outside} if outside else {}),
        }
        top1[attribute.name] = round(float(correct.float().mean()), 4)
    if not per_attribute:
        raise InvalidInput(f"no item carries a label for any of {tagger.vocabulary.names}")
    mean = sum(v["precision"] for v in per_attribute.values()) / len(per_attribute)
    return {
        "mean_precision": round(mean, 4), "per_attribute": per_attribute, "top1": top1,
        "mean_top1": round(sum(top1.values()) / len(top1), 4),
    }


def catalog_vocabulary(path: str, attributes: Sequence[str], templates: str | None = None, schema=None) -> Vocabulary:
    """Every value each attribute column takes anywhere in the catalog, with the prompt set's templates."""
    found: dict[str, set] = {name: set() for name in attributes}
    for record in open_catalog(path, schema=schema, on_error="skip", require_title=False).records():
        for name in attributes:
            value = record.attributes.get(name)
            if value:
                found[name].add(value)
    return vocabulary_from_values(found, resolve_prompts(templates))


def embed_split(tagger: Tagger, path: str, keep, schema=None, progress: bool = True) -> tuple[list[Item], torch.Tensor]:
    """The split's items (without pixels) and (N, V, D) region-view embeddings."""
    reader = open_catalog(path, schema=schema, on_error="skip", require_title=False)
    items: list[Item] = []

    def images():
        for record in reader.records():
            if keep is not None and not keep(record):
                continue
            item = reader.decode_or_skip(record)
            if item is None:
                continue
            items.append(
                Item(
                    id=item.id, image=None, title=item.title, attributes=item.attributes, source=item.source,
                    row=item.row,
                )
            )
            yield item.image, item.id

    embeds = tagger.embed(images(), progress=progress)
    if reader.report.skipped:
        reader.report.print_summary()
    return items, embeds


def catalog_rows(path: str, keep, names: Sequence[str], schema=None) -> list[dict]:
    """The labels (no pixels) of the catalog rows `keep` accepts."""
    reader = open_catalog(path, schema=schema, on_error="skip", require_title=False)
    return [{n: record.attributes.get(n) for n in names} for record in reader.records() if keep is None or keep(record)]


def fit_thresholds(
    tagger: Tagger, items: Sequence[Item], embeds: torch.Tensor, precision: float, min_coverage: float = 0.5
) -> dict[str, dict]:
    """Each attribute's 'unknown' threshold, fitted on labelled items (`fit_threshold`; `min_coverage` 0: answer only as
    much as reaches `precision`, however little)."""
    computed = tagger.probabilities(embeds)
    out = {}
    for attribute in tagger.vocabulary.attributes:
        rows, labels, _ = labelled_rows(items, attribute)
        if len(rows) >= 20:
            best_p, best = computed[attribute.name][1][rows].max(1)
            out[attribute.name] = {"min_probability": fit_threshold(best_p, best == labels, precision, min_coverage)}
    return out


def run_attribute_eval(
    data: str, model, vocabulary: Vocabulary, views: RegionViews, pooling: str = "blend", split: str = "all",
    split_config: SplitConfig | None = None, calibrate_split: str | None = None, schema=None, progress: bool = True,
    hierarchy_split: str | None = "train", target_precision: float | None = 0.9,
) -> dict:
    """Tag the split's items and score the tags; `calibrate_split` first fits each attribute's temperature
    (and, with 'blend' pooling, its region weight) there, reads the attribute hierarchy off the labels of
    `hierarchy_split` (coarse attributes then follow a finer one), and fits each 'unknown' threshold so that answered
    tags reach `target_precision` on the calibration items."""
    config = split_config or load_split_config(None)
    calibration = {}
    if calibrate_split:
        if hierarchy_split:
            rows = catalog_rows(data, split_filter(hierarchy_split, config), vocabulary.names, schema)
            for name, fitted in fit_hierarchy(rows, vocabulary).items():
                calibration.setdefault(name, {}).update(fitted)
        tagger = Tagger(model, vocabulary, views, pooling)
        items, embeds = embed_split(tagger, data, split_filter(calibrate_split, config), schema, progress)
        for attribute in vocabulary.attributes:
            rows, labels, _ = labelled_rows(items, attribute)
            if len(rows) >= 20:
                fitted = {}
                if tagger.pooling == "blend":
                    view_scores = embeds[rows] @ tagger.value_embeds[attribute.name].T
                    fitted["region_weight"] = fit_region_weight(
                        view_scores, labels, lambda s, w, n=attribute.name: tagger.pool(n, s, w)
                    )
                    scores = tagger.pool(attribute.name, view_scores, fitted["region_weight"])
                else:
                    scores = tagger.scores_for(attribute.name, embeds[rows])
                calibration.setdefault(attribute.name, {}).update(
                    {**fitted, "temperature": fit_temperature(scores, labels), "fitted_on": len(rows)}
                )
        vocabulary = vocabulary.with_calibration(calibration)
        if target_precision is not None:
            for name, fitted in fit_thresholds(
                Tagger(model, vocabulary, views, pooling), items, embeds, target_precision
            ).items():
                calibration.setdefault(name, {}).update(fitted)
            vocabulary = vocabulary.with_calibration(calibration)
    tagger = Tagger(model, vocabulary, views, pooling)
    items, embeds = embed_split(tagger, data, split_filter(split, config), schema, progress)
    report = attribute_report(tagger, items, embeds)
    report.update(
        {
            "model": model.name,
            "split": split,
            "n_items": len(items),
            "views": views.count,
            "pooling": tagger.pooling,
            "calibration": {
                a.name: {
                    **calibration.get(a.name, {}),
                    **({"derive": a.derive.to_dict()} if a.derive is not None else {}),
                    "temperature": a.temperature,
                    "threshold": round(a.threshold, 4),
                    **({"region_weight": a.region_weight} if a.region_weight is not None else {}),
                }
                for a in vocabulary.attributes
            },
        }
    )
    if calibrate_split:
        report["calibrated_on"] = calibrate_split
    return report
