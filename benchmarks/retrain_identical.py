"""Retrain the shipped kagl-base weights with today's code and compare them with the shipped files, tensor by tensor.

Usage (after `bash scripts/retrain-kagl-base.sh`, whose protocol run the shipping config inherits its margin from):
    .venv/bin/python benchmarks/retrain_identical.py [--out runs/identical]
Runs `vitrine train clip --config configs/kagl-base.json`, `train regions --config configs/regions-kagl-base.json`,
`train cir` stage 1 and stage 2 (the stage-2 run starts from this script's own stage-1 output) and the AGCN, each into
its own folder under --out, then prints, per shipped file, how many tensors are equal and the largest difference."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

WEIGHTS = Path("src/vitrine/models/weights")


def train(kind: str, config: dict, out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    path.write_text(json.dumps({**config, "out": str(out)}, indent=2))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vitrine", "train", kind, "--config", str(path), "--no-progress"], check=True)
    return time.perf_counter() - started


def compare(shipped: Path, retrained: Path) -> str:
    a, b = load_file(str(shipped)), load_file(str(retrained))
    equal = sum(k in b and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    worst = max(
        (float((a[k].float() - b[k].float()).abs().max()) for k in a if k in b and a[k].shape == b[k].shape),
        default=float("nan"),
    )
    keys = "match" if a.keys() == b.keys() else "DIFFER"
    return f"{equal}/{len(a)} tensors equal (keys {keys}), max abs diff {worst:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/identical")
    parser.add_argument(
        "--recipes", nargs="*", default=["clip", "regions", "cir", "agcn"], choices=["clip", "regions", "cir", "agcn"]
    )
    args = parser.parse_args()
    out = Path(args.out)
    load = lambda name: json.loads(Path("configs", name).read_text())  # noqa: E731
    rows = []
    if "clip" in args.recipes:
        seconds = train("clip", load("kagl-base.json"), out / "clip")
        rows.append(("kagl-base/model.safetensors", out / "clip/model/model.safetensors", seconds))
    if "regions" in args.recipes:
        seconds = train("regions", load("regions-kagl-base.json"), out / "regions")
        rows.append(("kagl-base-regions/model.safetensors", out / "regions/model/model.safetensors", seconds))
    if "cir" in args.recipes:
        seconds = train("cir", load("cir-kagl-base-stage1.json"), out / "stage1")
        rows.append(
            (
                "kagl-base-combiner/text_projection.safetensors", out / "stage1/combiner/text_projection.safetensors",
                seconds,
            )
        )
        seconds = train(
            "cir", {**load("cir-kagl-base-stage2.json"), "start": str(out / "stage1/combiner")}, out / "stage2"
        )
        rows.append(("kagl-base-combiner/combiner.safetensors", out / "stage2/combiner/combiner.safetensors", seconds))
    if "agcn" in args.recipes:
        seconds = train("cir", load("cir-kagl-base-agcn.json"), out / "agcn")
        rows.append(("kagl-base-agcn/combiner.safetensors", out / "agcn/combiner/combiner.safetensors", seconds))
    for shipped, retrained, seconds in rows:
        print(f"{shipped}: {compare(WEIGHTS / shipped, retrained)} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
