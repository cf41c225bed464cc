"""A catalog cut into independent units of work (a shard's row range, a folder's row range) and their encoding.

Units are what a distributed engine hands to its workers: each names its source and scan range, so a worker
reads, decodes and preprocesses its own images. Concatenated in index order, units give the catalog's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vitrine.data.catalog import detect_format, open_catalog
from vitrine.data.loader import iter_batches
from vitrine.data.records import Record
from vitrine.data.shards import resolve_shards
from vitrine.data.tagged import with_tags
from vitrine.errors import InvalidInput


@dataclass(frozen=True)
class Unit:
    index: int
    source: str  # one shard file, or the catalog folder
    start: int  # scan positions [start, stop) within the source, bad rows included
    stop: int


@dataclass
class UnitResult:
    index: int
    rows: list[dict]  # metadata rows (id, title, attributes, source, row), in catalog order
    image: np.ndarray  # (n, dim) float32
    text: np.ndarray | None  # (n, dim) float32 title embeddings, when asked for
    skipped: dict  # the reader's error report for this unit


def plan_units(data: str, schema=None, part_size: int = 4096) -> list[Unit]:
    """Units of at most `part_size` scan positions: per shard for WebDataset shards, row ranges for a folder."""
    if part_size < 1:
        raise InvalidInput("part_size must be >= 1")
    if detect_format(data) == "shards":
        sizes = [(path, open_catalog(path, schema=schema).count()) for path in resolve_shards(data)]
    else:
        sizes = [(str(data), open_catalog(data, schema=schema).count())]
    units: list[Unit] = []
    for source, size in sizes:
        for start in range(0, size, part_size):
            units.append(Unit(len(units), source, start, min(size, start + part_size)))
    return units


class _RangeReader:
    """A reader view that ends its scan at position `stop`."""

    def __init__(self, reader, stop: int):
        self._reader, self._stop = reader, stop

    def records(self, start: int = 0) -> Iterator[Record]:
        for record in self._reader.records(start=start):
            if self._reader.position > self._stop:
                return
            yield record

    def __getattr__(self, name):
        return getattr(self._reader, name)


def encode_unit(
    unit: Unit, encoder, batch_size: int = 64, texts: bool = False, schema=None, on_error: str = "fail", tagger=None
) -> UnitResult:
    """Read, decode, preprocess and encode one unit, in the calling process (a worker)."""
    reader = open_catalog(unit.source, schema=schema, on_error=on_error, require_title=texts)
    images, titles, rows = [], [], []
    with torch.inference_mode():
        for batch in iter_batches(
            _RangeReader(reader, unit.stop), encoder.image_transform, batch_size, start=unit.start
        ):
            images.append(encoder.encode_image(batch.pixels).float().numpy())
            if texts:
                titles.append(encoder.encode_text([item.title or "" for item in batch.items]).float().numpy())
            batch_rows = [{**item.metadata(), "source": item.source, "row": item.row} for item in batch.items]
            if tagger is not None:
                tags = tagger.tags(tagger.embed([(item.image, item.id) for item in batch.items]))
                batch_rows = [with_tags(row, item_tags) for row, item_tags in zip(batch_rows, tags)]
            rows.extend(batch_rows)
    dim = encoder.embed_dim
    return UnitResult(
        unit.index,
        rows,
        np.concatenate(images) if images else np.zeros((0, dim), np.float32),
        (np.concatenate(titles) if titles else np.zeros((0, dim), np.float32)) if texts else None,
        reader.report.to_dict(),
    )
