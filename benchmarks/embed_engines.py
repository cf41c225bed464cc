"""Embedding throughput: in-process vs Ray Data with 1 and 2 workers, side by side in one run, on KAGL shards.

Each engine embeds the same shards from scratch (fresh output) with the same model and batch size; the Ray runs
reuse one local Ray started up front (its start time is printed apart: a real cluster is already running), so
their time includes planning, the actors loading the model once each, and committing the parts. The Ray outputs
are checked against the in-process one: same ids in the same order, largest embedding difference.

    .venv/bin/python benchmarks/embed_engines.py --data '../shared/data/kagl/shards/kagl-{000000..000001}.tar'
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import time
from pathlib import Path

import numpy as np


def read_ids(out: Path) -> list[str]:
    with open(out / "metadata.csv", newline="", encoding="utf-8") as handle:
        return [row["id"] for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default="../shared/data/kagl/shards/kagl-{000000..000001}.tar", help="catalog (WebDataset shards)"
    )
    parser.add_argument("--model", default="vitrine:kagl-base")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--part-size", type=int, default=1024, help="rows per unit of work (and per committed part)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray actor pool sizes to measure")
    parser.add_argument("--out", default="runs/bench-embed-engines")
    args = parser.parse_args()

    import ray
    import torch

    from vitrine.embed import run_embed
    from vitrine.embed.ray_engine import RayOptions

    cores = os.cpu_count() or 1
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    common = dict(
        data=args.data, model=args.model, batch_size=args.batch_size, part_size=args.part_size, progress=False,
        overwrite=True,
    )
    torch.set_num_threads(cores)
    local = run_embed(out=str(out / "local"), **common)
    rows = [("in-process", cores, local.count, local.seconds, local.images_per_second, "", "")]
    reference_ids, reference = read_ids(out / "local"), np.load(out / "local" / "image_embeddings.npy")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    start = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - start
    for workers in args.workers:
        options = RayOptions(workers=workers)
        result = run_embed(out=str(out / f"ray-{workers}"), engine="ray", ray=options, **common)
        same_ids = read_ids(out / f"ray-{workers}") == reference_ids
        diff = float(np.abs(np.load(out / f"ray-{workers}" / "image_embeddings.npy") - reference).max())
        rows.append(
            (
                f"Ray Data, {workers} worker(s)", options.threads_per_worker(), result.count, result.seconds,
                result.images_per_second, "yes" if same_ids else "NO", f"{diff:.2e}",
            )
        )
    ray.shutdown()

    print(
        f"\nmodel {args.model}, batch {args.batch_size}, units of {args.part_size} rows, {cores} cores; "
        f"local Ray started in {ray_start:.1f}s (not included below)"
    )
    print(
        "\n| engine | torch threads per worker | images | seconds | images/s | vs in-process | same ids | max abs diff "
        "|"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][4]
    for name, threads, count, seconds, rate, same, diff in rows:
        print(f"| {name} | {threads} | {count:,} | {seconds:.1f} | {rate:.1f} | {rate / base:.2f}x | {same} | {diff} |")


if __name__ == "__main__":
    main()
