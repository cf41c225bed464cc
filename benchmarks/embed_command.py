"""`vitrine embed` as a whole command (start-up, decoding, transforms, the model, writing), per runtime, alternated in
one run: median wall seconds, CPU seconds, and how far each runtime's embeddings are from the first runtime's.

    .venv/bin/python benchmarks/embed_command.py --data ../shared/data/kagl-hires --runtimes onnx torch --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run_once(data: str, runtime: str, out: Path, texts: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command's process tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [
        sys.executable, "-m", "vitrine", "embed", "--data", data, "--runtime", runtime, "--out", str(out),
        "--overwrite", "--no-progress",
    ]
    subprocess.run(command + (["--texts"] if texts else []), check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/kagl-hires")
    parser.add_argument("--runtimes", nargs="+", default=["onnx", "torch"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-texts", action="store_true", help="embed images only (default: titles too, as --texts)")
    args = parser.parse_args()
    texts = not args.no_texts
    with tempfile.TemporaryDirectory(prefix="vitrine-embed-bench-") as scratch:
        outs = {runtime: Path(scratch) / runtime for runtime in args.runtimes}
        run_once(
            args.data, args.runtimes[0], outs[args.runtimes[0]], texts
        )  # warm the ONNX export cache and the page cache
        times: dict[str, list[tuple[float, float]]] = {runtime: [] for runtime in args.runtimes}
        for _ in range(args.repeats):
            for runtime in args.runtimes:  # alternated, so drift on a shared machine hits every runtime alike
                times[runtime].append(run_once(args.data, runtime, outs[runtime], texts))
        reference = args.runtimes[0]
        kinds = ["image", "text"] if texts else ["image"]
        arrays = {r: {k: np.load(outs[r] / f"{k}_embeddings.npy") for k in kinds} for r in args.runtimes}
    count = len(arrays[reference]["image"])
    print(
        f"vitrine embed --data {args.data}{' --texts' if texts else ''}: {count} products, {args.repeats} runs per "
        "runtime, alternated\n"
    )
    base = statistics.median(w for w, _ in times[args.runtimes[-1]])
    print(
        f"| runtime | median wall s | median CPU s | speed-up vs {args.runtimes[-1]} | min cosine to {reference} "
        f"({', '.join(kinds)}) |\n|---|---|---|---|---|"
    )
    for runtime in args.runtimes:
        wall, cpu = statistics.median(w for w, _ in times[runtime]), statistics.median(c for _, c in times[runtime])
        cosines = ", ".join(f"{min_cosine(arrays[runtime][k], arrays[reference][k]):.7f}" for k in kinds)
        print(f"| {runtime} | {wall:.2f} | {cpu:.1f} | {base / wall:.2f}x | {cosines} |")


if __name__ == "__main__":
    main()
