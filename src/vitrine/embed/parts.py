"""Resumable output: numbered parts committed atomically, merged into single files at the end."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from vitrine.errors import InvalidInput

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
        self.sweep()
        job_path = self.out / JOB_FILE
        if job_path.is_file() and not overwrite:
            previous = json.loads(job_path.read_text(encoding="utf-8"))
            if previous != job:
                diff = {
                    k: (previous.get(k), job.get(k)) for k in set(previous) | set(job) if previous.get(k) != job.get(k)
                }
                raise InvalidInput(
                    f"{self.out} holds output of a different embed job ({diff}); choose a new --out or pass --overwrite"
                )
        else:
            for stale in self.parts.iterdir():
                stale.unlink()
            for name in (MANIFEST_FILE, METADATA_FILE, *(f"{kind}_embeddings.npy" for kind in ("image", "text"))):
                (self.out / name).unlink(missing_ok=True)
            atomic_write_text(job_path, json.dumps(job, indent=2, sort_keys=True) + "\n")
        return self.committed()

    def sweep(self) -> list[Path]:
        """Remove the temp files a killed run left (a job has one writer: a rerun is the only one writing here)."""
        ours = (
            JOB_FILE,
            MANIFEST_FILE,
            METADATA_FILE,
            "image_embeddings.npy",
            "text_embeddings.npy",
        )  # --out may hold other files
        stale = [p for p in sorted(self.parts.iterdir()) if p.name.endswith((".tmp", ".tmp.npy"))]
        stale += [
            self.out / f"{name}{suffix}"
            for name in ours
            for suffix in (".tmp", ".tmp.npy")
            if (self.out / f"{name}{suffix}").is_file()
        ]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def committed_any(self) -> list[dict]:
        """Every committed part's marker in index order, gaps allowed (engines that finish parts out of order)."""
        markers = [json.loads(path.read_text(encoding="utf-8")) for path in self.parts.glob("part-*.json")]
        return sorted(markers, key=lambda m: m["index"])

    def committed(self) -> list[dict]:
        """The committed parts from part 0 up to the first missing one (a sequential job's resume point)."""
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
        atomic_write_text(
            Path(f"{stem}.json"), json.dumps({**marker, "index": index, "rows": len(rows)}, sort_keys=True) + "\n"
        )

    def merge(self, dim: int, on_duplicate: str = "fail") -> tuple[int, list[str]]:
        """Concatenate committed parts into `<kind>_embeddings.npy` and `metadata.csv`, streaming.

        An id already seen in an earlier part (parts encoded apart cannot check each other) raises with `fail`,
        or is left out with `skip`; returns (rows written, the ids left out).
        """
        markers = self.committed_any()
        keep, seen, dropped = [], set(), []
        for m in markers:
            with open(self.parts / f"part-{m['index']:06d}.csv", newline="", encoding="utf-8") as part:
                ids = [row["id"] for row in csv.DictReader(part)]
            mask = np.ones(len(ids), dtype=bool)
            for i, item_id in enumerate(ids):
                if item_id in seen:
                    if on_duplicate == "fail":
                        raise InvalidInput(
                            f"duplicate id {item_id!r} (part {m['index']}): ids must be unique across the catalog; "
                            f"rerun with --on-error skip to keep the first"
                        )
                    mask[i] = False
                    dropped.append(item_id)
                seen.add(item_id)
            keep.append(mask)
        total = int(sum(mask.sum() for mask in keep))
        for kind in self.kinds:
            final = self.out / f"{kind}_embeddings.npy"
            tmp = final.with_name(final.name + ".tmp.npy")
            merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
            offset = 0
            for m, mask in zip(markers, keep):
                array = np.load(self.parts / f"part-{m['index']:06d}.{kind}.npy")[mask]
                merged[offset : offset + len(array)] = array
                offset += len(array)
            merged.flush()
            del merged
            os.replace(tmp, final)
        tmp = self.out / (METADATA_FILE + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            out.write(",".join(self.columns) + "\n")
            for m, mask in zip(markers, keep):
                with open(self.parts / f"part-{m['index']:06d}.csv", encoding="utf-8", newline="") as part:
                    if mask.all():
                        next(part)
                        out.writelines(part)
                    else:
                        writer = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore")
                        writer.writerows(row for row, kept in zip(csv.DictReader(part), mask) if kept)
        os.replace(tmp, self.out / METADATA_FILE)
        return total, dropped
