"""Retrieval and zero-shot quality of one model under each runtime, side by side (the parity figures in
docs/performance.md).

For each runtime: text->image retrieval of the held-out titles (gallery: the whole catalog's images) and
generalised zero-shot articleType top-1 on the held-out split (all class names of the catalog), with the model's
default split. Deltas are against the first runtime given. Each runtime embeds the catalog itself (the cache is
keyed by runtime), so nothing is shared between the columns.

    .venv/bin/python benchmarks/runtime_quality.py --runtimes torch onnx onnx-int8
"""

from __future__ import annotations

import argparse
import json
import time

from vitrine.data.splits import load_split_config
from vitrine.evaluate.runner import run_retrieval, run_zero_shot
from vitrine.models import DEFAULT_MODEL, create_model


def measure(model_name: str, runtime: str, data: str, cache_dir: str, progress: bool) -> dict:
    model = create_model(model_name, runtime=runtime)
    split = load_split_config(None)
    t0 = time.perf_counter()
    retrieval = run_retrieval(
        data, model, galleries=[data], split="heldout", split_config=split, progress=progress, image_to_text=False,
        cache_dir=cache_dir,
    )
    zero_shot = run_zero_shot(
        data, "articleType", model, split="heldout", split_config=split, classes_from=[data], calibration=0.0,
        progress=progress, cache_dir=cache_dir,
    )
    return {
        "runtime": runtime, "seconds": round(time.perf_counter() - t0, 1), "queries": retrieval["n_queries"],
        "gallery": retrieval["gallery_size"], "R@1": retrieval["R@1"], "R@10": retrieval["R@10"],
        "MRR": retrieval["MRR"], "zero_shot_n": zero_shot.get("n"), "zero_shot_top1": zero_shot["top1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", default="../shared/data/kagl")
    parser.add_argument(
        "--runtimes", nargs="+", default=["torch", "onnx", "onnx-int8"], choices=["torch", "onnx", "onnx-int8"]
    )
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    rows = []
    for runtime in args.runtimes:
        rows.append(measure(args.model, runtime, args.data, args.cache_dir, not args.no_progress))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(f"\n{args.model} on {args.data}, held-out split; deltas against {base['runtime']}")
    print(
        "| runtime | t2i R@1 | t2i R@10 | MRR | zero-shot top-1 | delta R@10 | delta top-1 | seconds "
        "|\n|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['runtime']} | {r['R@1']:.4f} | {r['R@10']:.4f} | {r['MRR']:.4f} | {r['zero_shot_top1']:.4f} | "
            f"{r['R@10'] - base['R@10']:+.4f} | {r['zero_shot_top1'] - base['zero_shot_top1']:+.4f} | {r['seconds']} |"
        )


if __name__ == "__main__":
    main()
