"""Multi-process training vs one process, side by side in one run: seconds per step and the weight difference.

Each recipe runs the same steps of the same config twice from scratch: once in one process (all cores), once
with `--nproc N` (torchrun, gloo, cores shared out). Seconds per step come from the runs' own training.json
(the training loop only: data loading and caching excluded). The weight difference compares the two models.

    .venv/bin/python benchmarks/ddp_training.py --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file


def train(config: Path, out: Path, steps: int, nproc: int) -> dict:
    command = [
        sys.executable, "-m", "vitrine", "train", "clip", "--config", str(config), "--out", str(out), "--max-steps",
        str(steps), "--no-progress",
    ]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "model" / "training.json").read_text())


def weight_difference(a: Path, b: Path) -> tuple[float, float]:
    x, y = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    worst = max(float((x[k].float() - y[k].float()).abs().max()) for k in x)
    mean = sum(float((x[k].float() - y[k].float()).abs().sum()) for k in x) / sum(x[k].numel() for k in x)
    return worst, mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["configs/kagl-base.json", "configs/kagl-small.json"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument(
        "--max-items",
        type=int,
        default=8192,
        help="cap the training pool of from-scratch recipes (decoded once per process)",
    )
    parser.add_argument("--out", default="runs/bench-ddp")
    args = parser.parse_args()

    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows = []
    for recipe in args.recipes:
        config = json.loads(Path(recipe).read_text())
        locked = config.get("freeze", {}).get("image_tower", False)
        if not locked:
            config["max_items"] = args.max_items
        name = Path(recipe).stem
        path = root / f"{name}.json"
        path.write_text(json.dumps(config))
        one = train(path, root / f"{name}-1", args.steps, 1)
        many = train(path, root / f"{name}-{args.nproc}", args.steps, args.nproc)
        worst, mean = weight_difference(root / f"{name}-1", root / f"{name}-{args.nproc}")
        rows.append(
            (
                name,
                "locked tower, cached features"
                if locked
                else f"full (image tower trains, BatchNorm), {args.max_items} items",
                config["batch_size"],
                one["seconds"] / one["steps"],
                many["seconds"] / many["steps"],
                worst,
                mean,
            )
        )

    print(f"\n{args.steps} steps per run, {os.cpu_count()} cores; {args.nproc} processes use gloo")
    print(
        f"\n| recipe | what trains | global batch | s/step, 1 process | s/step, {args.nproc} processes | speed-up | "
        "max abs weight diff | mean abs weight diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, what, batch, single, multi, worst, mean in rows:
        print(
            f"| {name} | {what} | {batch} | {single:.3f} | {multi:.3f} | {single / multi:.2f}x | {worst:.2e} | "
            f"{mean:.2e} |"
        )


if __name__ == "__main__":
    main()
