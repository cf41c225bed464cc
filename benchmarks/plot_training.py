"""Plot validation metrics against training time from one or more runs' metrics.csv.

.venv/bin/python benchmarks/plot_training.py runs/kagl-small --out docs/kagl-small-training.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

METRICS = [
    "val/articleType_top1_seen", "val/articleType_top1_unseen", "val/articleType_top1_unseen_among_unseen",
    "val/baseColour_top1", "val/gender_top1", "val/t2i_R@10",
]


def read(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row.get(METRICS[0])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", default="training.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for run in args.runs:
        rows = read(run)
        minutes = [float(r["time_s"]) / 60 for r in rows]
        for ax, metric in zip(axes.flat, METRICS):
            ax.plot(minutes, [float(r[metric]) for r in rows], marker="o", label=run.name)
            ax.set_title(metric.removeprefix("val/"))
            ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("training time (min, 2 CPU cores)")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    for run in args.runs:
        last = read(run)[-1]
        print(run.name, " ".join(f"{m.removeprefix('val/')}={float(last[m]):.3f}" for m in METRICS))


if __name__ == "__main__":
    main()
