"""Metrics to a CSV file and to TensorBoard event files, one row per logged step."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class MetricsLogger:
    """Appends to `metrics.csv` (columns grow as new metrics appear) and writes `tb/` event files."""

    def __init__(self, out: str | os.PathLike, resume_step: int = 0):
        self.path = Path(out) / "metrics.csv"
        self.rows: list[dict] = []
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as handle:
                # A resumed run drops rows logged after its checkpoint; they are logged again.
                self.rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tb"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            self.tb = None

    def log(self, step: int, values: dict) -> None:
        self.rows.append({"step": step, **values})
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, step)
        self._write()

    def _write(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class NullLogger:
    """What ranks other than 0 log to in multi-process training: nothing."""

    def log(self, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass
