"""Where a trained model's generalised zero-shot margin comes from: tuned on its own calib types, or inherited.

A protocol run holds types out ('calib') and tunes the calibrated-stacking margin on them. A shipping run trains on
every type, so it has nothing to tune on; it inherits the margin of the protocol run of the same recipe
(`calibration_from` in its config) and records that run as the margin's source.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vitrine.errors import InvalidInput
from vitrine.models.dual import TRAINING_INFO_NAME


class CalibrationSourceError(InvalidInput):
    """`calibration_from` names no usable protocol run."""

    code = "bad_calibration_source"


def _training_info_path(source: str | os.PathLike) -> Path:
    """A training.json itself, a model directory holding one, or a run directory whose model/ does."""
    path = Path(source)
    for candidate in (path, path / TRAINING_INFO_NAME, path / "model" / TRAINING_INFO_NAME):
        if candidate.is_file():
            return candidate
    raise CalibrationSourceError(
        f"calibration_from: no {TRAINING_INFO_NAME} at {source} (nor in its model/ folder); train the protocol config "
        "of this recipe first (e.g. vitrine train clip --config configs/kagl-base-protocol.json); to fine-tune a "
        "shipped model "
        "on your own catalog, `vitrine adapt --catalog PATH --out DIR` (or `vitrine train clip --model "
        "vitrine:kagl-base --data PATH` "
        "without --config) inherits that model's margin instead"
    )


def inherited_calibration(source: str | os.PathLike) -> dict[str, dict]:
    """The margins a protocol run tuned on its calib types, each marked with where it came from."""
    path = _training_info_path(source)
    info = json.loads(path.read_text(encoding="utf-8"))
    tuned = info.get("calibration") or {}
    if not tuned:
        raise CalibrationSourceError(f"calibration_from: {path} holds no tuned margin (its run had no calib types)")
    split = info.get("config", {}).get("split", {})
    origin = {
        "from": str(path),
        "tuned_on": "calib types of that run" if not _inherited(tuned) else "that model's own source (via)",
        "split": {k: split.get(k) for k in ("seed", "holdout_field", "holdout_fraction", "calibration_fraction")},
    }
    return {
        field: {
            **{k: v for k, v in entry.items() if k != "source"},
            "source": {
                **origin,
                **(
                    {"via": entry["source"]}
                    if isinstance(entry.get("source"), dict) and entry["source"].get("from")
                    else {}
                ),
            },
        }
        for field, entry in tuned.items()
    }


def _inherited(tuned: dict) -> bool:
    return any(isinstance(entry.get("source"), dict) and entry["source"].get("from") for entry in tuned.values())


def training_calibration(tuned: dict | None, calibration_from: str | None) -> dict[str, dict]:
    """training.json's "calibration": the run's own tuned margin when it had calib types, else the inherited one."""
    if tuned:
        return {tuned["field"]: {**tuned, "source": {"tuned_on": "calib types of this run"}}}
    if calibration_from:
        return inherited_calibration(calibration_from)
    return {}
