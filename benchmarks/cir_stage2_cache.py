"""Stage-2 (Combiner) training speed with cached features vs recomputing them every step, side by side.

Both runs train the same Combiner on the same triplets for the same number of steps; the uncached run
recomputes reference and target image features through the image tower, and the modification texts
through MiniLM, at every step (pixels are decoded into memory once beforehand, which favours it).
Prints seconds per step (each run's mean over --steps steps; the median over --repeats runs) and the
extrapolated seconds per epoch.

    .venv/bin/python benchmarks/cir_stage2_cache.py --config configs/cir-kagl-stage2.json --steps 30
"""
from __future__ import annotations

import argparse
import tempfile

from vitrine.cir.config import CirTrainConfig
from vitrine.cir.train import train_cir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/cir-kagl-stage2.json")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = CirTrainConfig.from_file(args.config).replace(val_triplets=None, max_steps=args.steps)
    rows = {}
    for cached in (True, False):
        per_step = []
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as out:
                result = train_cir(base.replace(out=out, cached_features=cached), progress=False)
            per_step.append(result.seconds / result.steps)
        per_step.sort()
        rows[cached] = (per_step[len(per_step) // 2], result.seconds_per_epoch / (result.seconds / result.steps) * per_step[len(per_step) // 2])
    print("| features | s/step (median of runs) | s/epoch (extrapolated) |\n|---|---|---|")
    for cached, (step, epoch) in rows.items():
        print(f"| {'cached' if cached else 'recomputed'} | {step:.4f} | {epoch:.1f} |")
    print(f"speed-up of the cache: {rows[False][0] / rows[True][0]:.1f}x per step")


if __name__ == "__main__":
    main()
