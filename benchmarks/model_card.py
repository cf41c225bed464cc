"""Regenerate the model card's evaluation table for a model on vitrine's held-out KAGL split.

Held-out split (the default of `vitrine train clip`): 5% of products by id hash ('val', seen types) plus
every product of the article types held out by hash ('unseen', 10% of types, seed 0). Zero-shot scores
rank among all class names of the catalog (generalised zero-shot); retrieval queries the held-out titles
against a gallery of every product image.

    .venv/bin/python benchmarks/model_card.py --model vitrine:kagl-small [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

from vitrine.evaluate.runner import load_split_config, run_retrieval, run_zero_shot
from vitrine.models import create_model


def evaluate(model_name: str, data: str, split_config: str | None, ablations: bool, progress: bool, cache_dir: str | None = "runs/cache") -> dict:
    model = create_model(model_name)
    split = load_split_config(split_config)
    rows: dict[str, dict] = {}
    t0 = time.perf_counter()
    cache = dict(cache_dir=cache_dir)
    # The whole-catalog bank first: every split below then reads its rows from the cache.
    retrieval = {name: run_retrieval(data, model, galleries=[data], split=name, split_config=split, progress=progress,
                                     image_to_text=name == "heldout", **cache) for name in ("heldout", "val", "unseen")}
    common = dict(split_config=split, progress=progress, classes_from=[data], **cache)
    raw = dict(common, calibration=0.0)
    for name, split_name in (("seen types (val)", "val"), ("unseen types", "unseen")):
        report = run_zero_shot(data, "articleType", model, split=split_name, **common)  # raw, and calibrated beside it
        rows[f"articleType, {name}"] = report
        if "calibrated" in report:
            rows[f"articleType, {name}, calibrated"] = report["calibrated"]
    rows["articleType, unseen among unseen"] = run_zero_shot(data, "articleType", model, split="unseen", split_config=split, progress=progress, **cache)
    rows["baseColour (val)"] = run_zero_shot(data, "baseColour", model, split="val", **common)
    rows["gender (val)"] = run_zero_shot(data, "gender", model, split="val", **common)
    if ablations:
        rows["articleType, seen types (val), single template"] = run_zero_shot(data, "articleType", model, split="val", ensemble=False, **raw)
        rows["articleType, unseen among unseen, single template"] = run_zero_shot(data, "articleType", model, split="unseen", split_config=split, ensemble=False, progress=progress, **cache)
        rows["baseColour (val), single template"] = run_zero_shot(data, "baseColour", model, split="val", ensemble=False, **common)
        rows["gender (val), single template"] = run_zero_shot(data, "gender", model, split="val", ensemble=False, **common)
    return {"model": model_name, "seconds": round(time.perf_counter() - t0, 1), "zero_shot": rows, "retrieval": retrieval}


def print_table(result: dict) -> None:
    print(f"model {result['model']} (evaluated in {result['seconds']} s)\n")
    print("| zero-shot | n | classes | calibration | top-1 | top-5 | macro-F1 | weighted-F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in result["zero_shot"].items():
        print(f"| {name} | {r['n']} | {r['classes']} | {r['calibration']} | {r['top1']:.4f} | {r['top5']:.4f} | {r['macro_f1']:.4f} | {r['weighted_f1']:.4f} |")
    zs = result["zero_shot"]
    for kind, seen, unseen in (("raw", "articleType, seen types (val)", "articleType, unseen types"),
                               ("calibrated", "articleType, seen types (val), calibrated", "articleType, unseen types, calibrated")):
        if seen in zs and unseen in zs:
            s, u = zs[seen]["top1"], zs[unseen]["top1"]
            print(f"\narticleType generalised zero-shot, {kind}: S {s:.4f}, U {u:.4f}, H {2 * s * u / (s + u) if s + u else 0.0:.4f}")
    retrieval = result["retrieval"]
    r = retrieval["heldout"]
    print(f"\n| retrieval (exact product, gallery {r['gallery_size']}) | queries | R@1 | R@5 | R@10 | MRR |")
    print("|---|---|---|---|---|---|")
    for name, label in (("heldout", "all held-out titles"), ("val", "seen-type products (val)"), ("unseen", "unseen-type products")):
        r = retrieval[name]
        print(f"| text -> image, {label} | {r['n_queries']} | {r['R@1']:.4f} | {r['R@5']:.4f} | {r['R@10']:.4f} | {r['MRR']:.4f} |")
    i2t = retrieval["heldout"]["image_to_text"]
    print(f"| image -> text, all held-out | {i2t['n_queries']} | {i2t['R@1']:.4f} | {i2t['R@5']:.4f} | {i2t['R@10']:.4f} | {i2t['MRR']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vitrine:kagl-small")
    parser.add_argument("--cache-dir", default="runs/cache", help="whole-catalog embedding cache ('' to disable)")
    parser.add_argument("--data", default="../shared/data/kagl")
    parser.add_argument("--split-config", help="JSON with the split (default: vitrine's default split)")
    parser.add_argument("--no-ablations", action="store_true", help="skip the single-template rows")
    parser.add_argument("--json", help="also write the full results here")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    result = evaluate(args.model, args.data, args.split_config, not args.no_ablations, args.progress, args.cache_dir or None)
    print_table(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
