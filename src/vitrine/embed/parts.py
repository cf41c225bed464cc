"""Resumable output: numbered parts committed atomically, merged into single files at the end."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

JOB_FILE = "job.json"
MANIFEST_FILE = "manifest.json"
METADATA_FILE = "metadata.csv"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


class PartStore:
    """`parts/part-NNNNNN.{<kind>.npy,csv,json}`; the .json marker is written last and commits a part."""

    def __init__(self, out: str | os.PathLike, columns: list[str], kinds: list[str]):
        self.out = Path(out)
        self.parts = self.out / "parts"
        self.columns = columns
        self.kinds = kinds

    def start(self, job: dict, overwrite: bool = False) -> list[dict]:
        """Create the output dir, or check it belongs to the same job; return committed part markers."""
        self.parts.mkdir(parents=True, exist_ok=True)
        job_path = self.out / JOB_FILE
        if job_path.is_file() and not overwrite:
            previous = json.loads(job_path.read_text(encoding="utf-8"))
            if previous != job:
                diff = {k: (previous.get(k), job.get(k)) for k in set(previous) | set(job) if previous.get(k) != job.get(k)}
                raise ValueError(f"{self.out} holds output of a different embed job ({diff}); choose a new --out or pass --overwrite")
        else:
            for stale in self.parts.iterdir():
                stale.unlink()
            for name in (MANIFEST_FILE, METADATA_FILE, *(f"{kind}_embeddings.npy" for kind in ("image", "text"))):
                (self.out / name).unlink(missing_ok=True)
            atomic_write_text(job_path, json.dumps(job, indent=2, sort_keys=True) + "\n")
        return self.committed()

    def committed(self) -> list[dict]:
        markers = []
        for index in range(10**6):
            path = self.parts / f"part-{index:06d}.json"
            if not path.is_file():
                break
            markers.append(json.loads(path.read_text(encoding="utf-8")))
        return markers

    def write(self, index: int, arrays: dict[str, np.ndarray], rows: list[dict], marker: dict) -> None:
        stem = self.parts / f"part-{index:06d}"
        for kind, array in arrays.items():
            atomic_save_npy(Path(f"{stem}.{kind}.npy"), array.astype(np.float32, copy=False))
        tmp = Path(f"{stem}.csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, f"{stem}.csv")
        atomic_write_text(Path(f"{stem}.json"), json.dumps({**marker, "index": index, "rows": len(rows)}, sort_keys=True) + "\n")

    def merge(self, dim: int) -> int:
        """Concatenate committed parts into `<kind>_embeddings.npy` and `metadata.csv`, streaming."""
        markers = self.committed()
        total = sum(m["rows"] for m in markers)
        for kind in self.kinds:
            final = self.out / f"{kind}_embeddings.npy"
            tmp = final.with_name(final.name + ".tmp.npy")
            merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
            offset = 0
            for m in markers:
                array = np.load(self.parts / f"part-{m['index']:06d}.{kind}.npy")
                merged[offset : offset + len(array)] = array
                offset += len(array)
            merged.flush()
            del merged
            os.replace(tmp, final)
        tmp = self.out / (METADATA_FILE + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            out.write(",".join(self.columns) + "\n")
            for m in markers:
                with open(self.parts / f"part-{m['index']:06d}.csv", encoding="utf-8") as part:
                    next(part)
                    for line in part:
                        out.write(line)
        os.replace(tmp, self.out / METADATA_FILE)
        return total
