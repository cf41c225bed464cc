"""Run the recipe grid (protocol split) and print each run's validation figures side by side.

Each config in `configs/grid/` is one change to `configs/kagl-base-protocol.json`. A run is chosen on these
validation figures (val products of seen types; calib types for the margin), never on the unseen types' figures,
which are printed for the record. Finished runs are read back, not retrained; run on an otherwise idle machine,
since the seconds are part of the table.

    .venv/bin/python benchmarks/recipe_grid.py [configs/grid/NAME.json ...] [--baseline runs/kagl-base-protocol]
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

COLUMNS = (
    ("seen", "val/articleType_top1_seen"),
    ("unseen", "val/articleType_top1_unseen"),
    ("unseen among unseen", "val/articleType_top1_unseen_among_unseen"),
    ("colour", "val/baseColour_top1"),
    ("gender", "val/gender_top1"),
    ("t2i R@1", "val/t2i_R@1"),
    ("t2i R@10 seen", "val/t2i_R@10"),
    ("t2i R@10 unseen", "val/t2i_R@10_unseen"),
    ("MRR", "val/t2i_MRR"),
)


def run_figures(run: Path) -> dict:
    info = json.loads((run / "model" / "training.json").read_text(encoding="utf-8"))
    metrics = info.get("final_metrics", {})
    calib = info.get("calibration", {}).get("articleType", {})
    row = {name: metrics.get(key) for name, key in COLUMNS}
    row["calib H (tuned margin)"] = calib.get("harmonic")
    row["margin"] = calib.get("gamma")
    row["seconds"] = info.get("seconds")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="grid configs (default: configs/grid/*.json)")
    parser.add_argument("--baseline", default="runs/kagl-base-protocol", help="a finished run printed first")
    parser.add_argument("--no-train", action="store_true", help="only print the runs that have finished")
    args = parser.parse_args()
    from vitrine.train.clip import train_clip
    from vitrine.train.config import TrainConfig

    rows = {}
    if Path(args.baseline, "model", "training.json").is_file():
        rows[f"baseline ({args.baseline})"] = run_figures(Path(args.baseline))
    for path in args.configs or sorted(glob.glob("configs/grid/*.json")):
        config = TrainConfig.from_file(path)
        done = Path(config.out, "model", "training.json").is_file()
        if not done and not args.no_train:
            print(f"training {path}", flush=True)
            train_clip(config, progress=False)
            done = True
        if done:
            rows[Path(path).stem] = run_figures(Path(config.out))
    names = [name for name, _ in COLUMNS] + ["calib H (tuned margin)", "margin", "seconds"]
    print("| run | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for run, row in rows.items():
        print(f"| {run} | " + " | ".join("" if row[n] is None else f"{row[n]:.4g}" for n in names) + " |")


if __name__ == "__main__":
    main()
