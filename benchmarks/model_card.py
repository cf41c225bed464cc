"""Measure a shipped model beside its protocol twin and write the figures into its model card and the README.

A card spec (`benchmarks/cards/NAME.json`) names the columns. Each column is a model with the split it was trained
on, its Combiner and triplets, and its tagging model. A protocol column holds article types out, so its figures
measure generalisation to types never seen. A shipped column learned from every type; its figures are on its own
item-level validation split. Every figure is measured here. Each column's results are kept in
`runs/card/NAME/COLUMN.json`; `--render-only` writes the tables again from them without measuring.

    .venv/bin/python benchmarks/model_card.py --card benchmarks/cards/kagl-base.json [--columns shipped] [--render-only]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

BEGIN, END = "<!-- model_card.py:begin {name} -->", "<!-- model_card.py:end {name} -->"
ATTRIBUTE_MEAN = ("gender", "baseColour", "usage", "season", "articleType")  # RaF-CLIP's mean precision, as before


def _h(s: float, u: float) -> float:
    return 2 * s * u / (s + u) if s + u else 0.0


def measure_zero_shot_and_retrieval(column: dict, data: str, cache: str | None) -> dict:
    from vitrine.data.splits import load_split_config
    from vitrine.evaluate.runner import run_retrieval, run_zero_shot
    from vitrine.models import create_model

    model = create_model(column["model"])
    split = load_split_config(column["split"])
    protocol = bool(split.holdout_fraction or split.holdout_values)
    common = dict(split_config=split, progress=False, cache_dir=cache)
    out: dict = {"protocol": protocol}
    names = ("heldout", "val", "unseen") if protocol else ("val",)
    out["retrieval"] = {
        name: run_retrieval(data, model, galleries=[data], split=name, image_to_text=name == names[0], **common)
        for name in names
    }
    seen = run_zero_shot(data, "articleType", model, split="val", classes_from=[data], **common)
    out["articleType_seen"] = seen
    if protocol:
        out["articleType_unseen"] = run_zero_shot(
            data, "articleType", model, split="unseen", classes_from=[data], **common
        )
        out["articleType_unseen_among_unseen"] = run_zero_shot(data, "articleType", model, split="unseen", **common)
    out["baseColour"] = run_zero_shot(data, "baseColour", model, split="val", classes_from=[data], **common)
    out["gender"] = run_zero_shot(data, "gender", model, split="val", classes_from=[data], **common)
    for report in [*out.values(), *out["retrieval"].values()]:
        if isinstance(
            report, dict
        ):  # the card's tables read none of the per-class and per-example figures (--report does)
            for key in ("per_class", "confusion", "confused_pairs", "worst_queries"):
                report.pop(key, None)
            report.get("calibrated", {}).pop("per_class", None)
    out["calibration"] = model.training_info.get("calibration", {})
    out["seen_types"] = len(model.training_info.get("seen_classes", {}).get("articleType", []))
    return out


def measure_composed(column: dict, data: str, cache: str | None) -> dict:
    from vitrine.cir.compose import Composer
    from vitrine.cir.evaluate import run_composed
    from vitrine.models import create_model

    report = run_composed(
        data, column["triplets"], Composer(create_model(column["model"]), column["combiner"]), cache_dir=cache,
        progress=False,
    )
    report.pop("examples", None)  # for --report pages; the card's tables read the recalls
    return report


def _tagger(column: dict):
    from vitrine.models import create_model
    from vitrine.tagging.tagger import Tagger
    from vitrine.tagging.views import make_views
    from vitrine.tagging.vocabulary import builtin_vocabulary, load_vocabulary

    vocabulary = (
        load_vocabulary(column["vocabulary"])
        if column.get("vocabulary")
        else builtin_vocabulary(model=column["tag_model"])
    )
    return Tagger(create_model(column["tag_model"]), vocabulary, make_views("foreground"), "blend")


def measure_attributes(column: dict, data: str) -> dict:
    from vitrine.data.splits import load_split_config, split_filter
    from vitrine.tagging.evaluate import attribute_report, embed_split

    split = load_split_config(column["split"])
    name = "heldout" if split.holdout_fraction or split.holdout_values else "val"
    tagger = _tagger(column)
    items, embeds = embed_split(tagger, data, split_filter(name, split), progress=False)
    report = attribute_report(tagger, items, embeds)
    report["split"] = name
    report["mean_precision_5"] = round(
        sum(report["per_attribute"][a]["precision"] for a in ATTRIBUTE_MEAN) / len(ATTRIBUTE_MEAN), 4
    )
    return report


def measure_hires(column: dict, hires: str, queries: dict[str, str]) -> dict:
    from vitrine.data.catalog import open_catalog
    from vitrine.embed.encode import encode_catalog, encode_texts
    from vitrine.models import create_model
    from vitrine.tagging.evaluate import attribute_report, embed_split

    tagger = _tagger(column)
    items, embeds = embed_split(tagger, hires, None, progress=False)
    tags = attribute_report(tagger, items, embeds)
    computed = tagger.probabilities(embeds)
    tags["confusions"] = {}
    for attribute in tagger.vocabulary.attributes:  # the most frequent (catalog value -> tag) disagreements
        best = computed[attribute.name][1].argmax(1).tolist()
        pairs = Counter(
            (item.attributes.get(attribute.name), attribute.values[b].name)
            for item, b in zip(items, best)
            if item.attributes.get(attribute.name) not in (None, attribute.values[b].name)
        )
        tags["confusions"][attribute.name] = [f"{label} -> {tag}: {n}" for (label, tag), n in pairs.most_common(5)]
    model = create_model(column["model"])
    items, image_embeds = encode_catalog(model, open_catalog(hires, require_title=False), progress=False)
    counts = Counter(item.attributes.get("articleType") for item in items)
    top = (encode_texts(model, list(queries)) @ image_embeds.T).topk(10, dim=1).indices.tolist()
    shares = {
        query: round(sum(items[r].attributes.get("articleType") == kind for r in rows) / min(10, counts[kind]), 4)
        for (query, kind), rows in zip(queries.items(), top)
    }
    return {"tags": tags, "type_queries": shares}


def measure(spec: dict, name: str, column: dict) -> dict:
    cache = spec.get("cache_dir", "runs/cache")
    result: dict = {"column": name, "spec": column, "measured": time.strftime("%Y-%m-%d")}
    started = time.perf_counter()
    result["zero_shot"] = measure_zero_shot_and_retrieval(column, spec["data"], cache)
    if column.get("combiner"):
        result["composed"] = measure_composed(column, spec["data"], cache)
    if column.get("tag_model"):
        result["attributes"] = measure_attributes(column, spec["data"])
        result["hires"] = measure_hires(column, spec["hires"], spec["type_queries"])
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _f(value) -> str:
    return "" if value is None else f"{value:.4f}"


def rows_of(result: dict) -> dict[str, str]:
    """The card's measures for one column, formatted (blank where the column has no such figure)."""
    zs, rows = result["zero_shot"], {}
    seen = zs["articleType_seen"]
    rows["article types trained on"] = str(zs["seen_types"])
    rows["articleType top-1, seen types (val), raw"] = _f(seen["top1"])
    if zs["protocol"]:
        unseen = zs["articleType_unseen"]
        rows["articleType top-1, unseen types, raw"] = _f(unseen["top1"])
        rows["H raw"] = _f(_h(seen["top1"], unseen["top1"]))
        if "calibrated" in seen and "calibrated" in unseen:
            s, u = seen["calibrated"]["top1"], unseen["calibrated"]["top1"]
            rows["margin (tuned on calib types)"] = f"{seen['calibrated']['calibration']:.2f}"
            rows["articleType top-1, seen / unseen, calibrated"] = f"{s:.4f} / {u:.4f}"
            rows["**H with the tuned margin**"] = _f(_h(s, u))
        rows["unseen types among the unseen types"] = _f(zs["articleType_unseen_among_unseen"]["top1"])
    else:
        inherited = zs["calibration"].get("articleType", {})
        if inherited:
            rows["margin (tuned on calib types)"] = (
                f"{inherited['gamma']:.2f} (inherited from {inherited.get('source', {}).get('from', '?')})"
            )
    rows["articleType weighted-F1, seen types (val)"] = _f(seen["weighted_f1"])
    rows["baseColour top-1 (val)"] = _f(zs["baseColour"]["top1"])
    rows["gender top-1 (val)"] = _f(zs["gender"]["top1"])
    retrieval = zs["retrieval"]
    for key, label in (
        ("heldout", "all held-out queries"), ("val", "seen-type (val) queries"), ("unseen", "unseen-type queries"),
    ):
        if key in retrieval:
            r = retrieval[key]
            rows[f"text -> image R@1 / R@10, {label} (gallery {r['gallery_size']})"] = (
                f"{r['R@1']:.4f} / {r['R@10']:.4f}"
            )
    first = retrieval.get("heldout") or retrieval["val"]
    if "image_to_text" in first:
        rows["image -> text R@10, same queries"] = _f(first["image_to_text"]["R@10"])
    if "composed" in result:
        c = result["composed"]
        rows[f"Combiner R@1 / R@10 / R@50 ({c['n_queries']} val triplets)"] = (
            f"{c['R@1']:.4f} / {c['R@10']:.4f} / {c['R@50']:.4f}"
        )
    if "attributes" in result:
        a = result["attributes"]
        rows[f"attribute mean precision, region-aware blend ({a['split']}; 5 attributes)"] = _f(a["mean_precision_5"])
        for name in ("masterCategory", "subCategory"):
            if name in a["per_attribute"]:
                rows[f"{name} precision ({a['split']})"] = _f(a["per_attribute"][name]["precision"])
    if "hires" in result:
        tags = result["hires"]["tags"]
        for name, entry in tags["per_attribute"].items():
            rows[f"hi-res tags, {name}: agreement / precision (coverage)"] = (
                f"{tags['top1'][name]:.4f} / {entry['precision']:.4f} ({entry['coverage']:.2f})"
            )
        shares = result["hires"]["type_queries"]
        rows["hi-res type queries, precision@10 (mean)"] = _f(sum(shares.values()) / len(shares))
        for query, share in shares.items():
            rows[f'hi-res "{query}" precision@10'] = _f(share)
    return rows


def render(spec: dict, results: list[dict]) -> str:
    labels = [spec["columns"][r["column"]]["label"] for r in results]
    table = [dict(rows_of(r)) for r in results]
    measures = list(dict.fromkeys(k for rows in table for k in rows))
    lines = ["| measure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += [f"| {m} | " + " | ".join(rows.get(m, "") for rows in table) + " |" for m in measures]
    lines.append("")
    lines.append(
        "Measured by `.venv/bin/python benchmarks/model_card.py --card "
        + spec["path"]
        + "`: "
        + "; ".join(f"{spec['columns'][r['column']]['label']} on {r['measured']} ({r['seconds']} s)" for r in results)
        + "."
    )
    return "\n".join(lines)


def render_summary(spec: dict, results: list[dict]) -> str:
    """The README's one-line-per-model figures."""
    lines = [
        "| model | trained on | articleType top-1 (val) | t2i R@10 (val queries) | Combiner R@10 | attribute mean "
        "precision | hi-res masterCategory tags |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        column = spec["columns"][r["column"]]
        zs = r["zero_shot"]
        c = r.get("composed", {})
        a = r.get("attributes", {})
        hires = r.get("hires", {}).get("tags", {}).get("top1", {})
        lines.append(
            f"| {column['label']} | {zs['seen_types']} article types | {zs['articleType_seen']['top1']:.4f} | "
            f"{zs['retrieval']['val']['R@10']:.4f} | {_f(c.get('R@10'))} | {_f(a.get('mean_precision_5'))} | "
            f"{_f(hires.get('masterCategory'))} |"
        )
    return "\n".join(lines)


def replace_block(path: Path, name: str, text: str) -> None:
    content = path.read_text(encoding="utf-8")
    begin, end = BEGIN.format(name=name), END.format(name=name)
    if begin not in content or end not in content:
        raise SystemExit(f"{path}: add the markers {begin} and {end} where the table goes")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", default="benchmarks/cards/kagl-base.json")
    parser.add_argument(
        "--columns", nargs="*", help="measure only these columns (the others are read from their stored results)"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="write the tables from stored results, measuring nothing"
    )
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    spec = {**json.loads(Path(args.card).read_text(encoding="utf-8")), "path": args.card}
    store = Path("runs/card") / Path(args.card).stem
    store.mkdir(parents=True, exist_ok=True)
    results = []
    for name, column in spec["columns"].items():
        stored = store / f"{name}.json"
        if not args.render_only and (args.columns is None or name in args.columns or not stored.is_file()):
            print(f"measuring {name} ({column['model']})", flush=True)
            result = measure(spec, name, column)
            stored.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if not stored.is_file():
            raise SystemExit(f"no stored results for column {name}: run without --render-only")
        results.append(json.loads(stored.read_text(encoding="utf-8")))
    table = render(spec, results)
    print(table)
    replace_block(Path(spec["card"]), "figures", table)
    if spec.get("readme"):
        replace_block(
            Path(spec["readme"]),
            Path(args.card).stem,
            render_summary(spec, [r for r in results if spec["columns"][r["column"]].get("in_readme")]),
        )


if __name__ == "__main__":
    main()
