"""`vitrine index images`: store the catalog images of an index's products, so the service can show them; resumable."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vitrine.data.catalog import open_catalog
from vitrine.errors import MissingFile
from vitrine.index.store import images_dir
from vitrine.index.stores import open_store
from vitrine.serve.images import ImageStore, sweep_images


@dataclass(frozen=True)
class BackfillResult:
    images: str  # the images directory written to
    stored: int
    present: int  # already stored, left as they were
    not_indexed: int  # catalog ids the index does not hold
    failed: int  # rows reported and skipped: bad images and malformed rows
    examples: tuple[str, ...]  # the first few failures, naming row and id
    seconds: float


def backfill_images(
    data: str, index: str, images: str | os.PathLike | None = None, schema=None, on_error: str = "skip",
    overwrite: bool = False, progress: bool = True,
) -> BackfillResult:
    """Save the image of every catalog row whose id is in `index` and not yet stored (all of them with `overwrite`).

    Nothing records progress: a rerun skips what is stored, so an interrupted run resumes where it stopped. The index
    is only read, never created; `images` defaults to the directory the service reads (`images_dir(index)`).
    """
    reader = open_catalog(data, schema=schema, on_error=on_error, require_title=False)
    try:
        store = open_store(index)
    except FileNotFoundError as exc:
        raise MissingFile(f"{exc}; build it first with `vitrine index build --data ... --index {index}`") from None
    try:
        pictures = ImageStore(Path(images) if images else images_dir(index))
        sweep_images(index, pictures)  # temp files of an earlier run that was killed mid-write
        bar = tqdm(
            total=reader.count() if progress else None, unit="img", desc="index images", disable=not progress,
            dynamic_ncols=True,
        )
        t0, stored, present, not_indexed = time.perf_counter(), 0, 0, 0
        for record in reader.records():
            # the cheap checks first: most rows of a rerun end here without reading their image
            if store.product(record.id) is None:
                not_indexed += 1
            elif not overwrite and pictures.has(record.id):
                present += 1
            else:
                item = reader.decode_or_skip(record)
                if item is not None:
                    pictures.save(record.id, item.image)
                    stored += 1
            bar.update(reader.position - bar.n)
        bar.update(reader.position - bar.n)
        bar.close()
    finally:
        store.close()
    return BackfillResult(
        images=str(pictures.directory), stored=stored, present=present, not_indexed=not_indexed,
        failed=reader.report.skipped, examples=tuple(reader.report.examples),
        seconds=round(time.perf_counter() - t0, 2),
    )
