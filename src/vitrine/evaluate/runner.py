"""The `vitrine eval` protocols over any catalog format and any registered model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from vitrine.data.catalog import open_catalog
from vitrine.data.prompts import resolve_prompts
from vitrine.data.records import Item
from vitrine.data.splits import SplitConfig, load_split_config, split_filter
from vitrine.embed.bank import bank_folder, image_bank
from vitrine.embed.encode import encode_catalog, encode_texts
from vitrine.errors import InvalidInput
from vitrine.evaluate.metrics import target_ranks
from vitrine.evaluate.retrieval import retrieval_report, worst_queries
from vitrine.evaluate.zeroshot import class_embeddings, classify, seen_unseen_report, zero_shot_report


def _embed(
    model, path: str, schema, on_error: str, keep=None, progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[list[Item], torch.Tensor]:
    """Embeddings of a catalog (or of the rows `keep` accepts). With `cache_dir`, a whole-catalog bank is reused
    when one is cached, and written when the whole catalog is needed anyway."""
    if cache_dir is not None and (keep is None or (bank_folder(model, path, cache_dir) / "items.json").is_file()):
        bank = image_bank(model, [path], cache_dir=cache_dir, schema=schema, on_error=on_error, progress=progress)
        rows = [i for i, item in enumerate(bank.items) if keep is None or keep(item)]
        return [bank.items[i] for i in rows], bank.embeds[rows]
    reader = open_catalog(path, schema=schema, on_error=on_error, require_title=False)
    items, embeds = encode_catalog(model, reader, keep=keep, progress=progress, desc=f"embed {Path(path).name}")
    if reader.report.skipped:
        reader.report.print_summary()
    return items, embeds


def run_zero_shot(
    data: str, field: str, model, classes_from: Sequence[str] = (), templates: str | None = None, split: str = "all",
    split_config: SplitConfig | None = None, schema=None, on_error: str = "skip", ensemble: bool = True,
    seen_classes: Sequence[str] = (), calibration: float | str = "auto", progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Classify each item's `field` among all class names of `data` and `classes_from` catalogs.

    `calibration="auto"` (the default) reports the raw scores and, beside them under "calibrated", the calibrated
    stacking the model was trained with (its training.json: seen classes and margin), if any. A number applies that
    margin to `seen_classes` instead. With seen classes known, each report has seen_top1, unseen_top1 and H.
    """
    auto = calibration == "auto"
    tuned = model.training_info.get("calibration", {}).get(field) if auto else None
    if not seen_classes and (tuned or auto):
        seen_classes = model.training_info.get("seen_classes", {}).get(field, [])
    margin = float(tuned["gamma"]) if tuned else (0.0 if auto else float(calibration))
    keep = split_filter(split, split_config or load_split_config(None))
    items, embeds = _embed(model, data, schema, on_error, keep=keep, progress=progress, cache_dir=cache_dir)
    names = {item.attributes.get(field) for item in items}
    for path in classes_from:
        reader = open_catalog(path, schema=schema, on_error="skip", require_title=False)
        names |= {record.attributes.get(field) for record in reader.records()}
    names.discard(None)
    if not names:
        raise InvalidInput(f"no values of field {field!r} in {data}; is it one of the schema's attributes?")
    classes = sorted(names)
    prompts = resolve_prompts(templates)
    class_embeds = class_embeddings(model, prompts, field, classes, ensemble=ensemble)
    labelled = [i for i, item in enumerate(items) if item.attributes.get(field) is not None]
    lookup = {name: c for c, name in enumerate(classes)}
    labels = torch.tensor([lookup[items[i].attributes[field]] for i in labelled], dtype=torch.long)
    seen_mask = torch.tensor([name in set(seen_classes) for name in classes]) if seen_classes else None

    def one(gamma: float) -> dict:
        scores = classify(embeds[labelled], class_embeds, seen_mask, gamma)
        report = zero_shot_report(scores, labels, classes, field)
        report.update({"split": split, "ensemble": ensemble, "calibration": gamma})
        if seen_mask is not None and len(labels):
            report.update(seen_unseen_report(scores, labels, seen_mask))
        return report

    report = one(0.0 if auto else margin)
    if auto and tuned:
        calibrated = one(margin)
        for key in ("per_class", "confusion", "confused_pairs"):  # the pictures show the raw figures
            calibrated.pop(key)
        report["calibrated"] = calibrated
    return report


def run_retrieval(
    data: str, model, galleries: Sequence[str] = (), split: str = "all", split_config: SplitConfig | None = None,
    schema=None, on_error: str = "skip", image_to_text: bool = True, progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Titles of `data` items query a gallery of their images plus every `galleries` catalog (ids deduplicated)."""
    keep = split_filter(split, split_config or load_split_config(None))
    embedded: dict[str, tuple[list[Item], torch.Tensor]] = {}
    for path in dict.fromkeys([data, *galleries]):
        embedded[path] = _embed(model, path, schema, on_error, progress=progress, cache_dir=cache_dir)
    data_items, data_embeds = embedded[data]
    query_rows = [i for i, item in enumerate(data_items) if item.title and (keep is None or keep(item))]
    gallery_items: list[Item] = []
    gallery_rows: list[torch.Tensor] = []
    index_of: dict[str, int] = {}
    for path in dict.fromkeys([data, *galleries]):
        items, embeds = embedded[path]
        whole = path in galleries or keep is None  # a gallery catalog counts in full; --data only its split
        for row, item in enumerate(items):
            if item.id in index_of or not (whole or keep(item)):
                continue
            index_of[item.id] = len(gallery_items)
            gallery_items.append(item)
            gallery_rows.append(embeds[row])
    if not query_rows:
        raise InvalidInput(f"no items with titles in {data} (split {split})")
    gallery = torch.stack(gallery_rows)
    targets = torch.tensor([index_of[data_items[i].id] for i in query_rows])
    queries = encode_texts(model, [data_items[i].title for i in query_rows], progress=progress, desc="embed queries")
    ranks = target_ranks(queries, gallery, targets)
    report = retrieval_report(queries, gallery, targets, ranks=ranks)
    report["split"] = split
    report["worst_queries"] = [
        {
            "query": data_items[query_rows[row]].title, "target_id": gallery_items[int(targets[row])].id, "rank": rank,
            "top5": [gallery_items[g].id for g in top],
        }
        for row, rank, top in worst_queries(queries, gallery, targets, ranks)
    ]
    if image_to_text:
        titled = [i for i, item in enumerate(gallery_items) if item.title]
        position = {row: k for k, row in enumerate(titled)}
        texts = encode_texts(
            model, [gallery_items[i].title for i in titled], progress=progress, desc="embed gallery titles"
        )
        report["image_to_text"] = retrieval_report(
            data_embeds[query_rows], texts, torch.tensor([position[int(t)] for t in targets])
        )
    return report
