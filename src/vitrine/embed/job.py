"""Embed every product of a catalog with a registered model; resumable part by part."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vitrine.data.catalog import open_catalog
from vitrine.data.loader import iter_batches, prefetch
from vitrine.embed.parts import MANIFEST_FILE, PartStore, atomic_write_text
from vitrine.models import DEFAULT_MODEL, create_model


@dataclass(frozen=True)
class EmbedResult:
    out: str
    model: str
    count: int
    embed_dim: int
    skipped: int
    computed: int  # rows computed in this run (the rest came from an earlier, interrupted run)
    seconds: float
    images_per_second: float


def run_embed(
    data: str,
    model: str = DEFAULT_MODEL,
    out: str = "runs/embed",
    batch_size: int = 64,
    part_size: int = 4096,
    texts: bool = False,
    on_error: str = "fail",
    schema: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    encoder=None,
) -> EmbedResult:
    """Write `<out>/image_embeddings.npy` (+ `text_embeddings.npy` of titles with `texts`) and `metadata.csv`."""
    if part_size % batch_size:
        part_size = max(batch_size, part_size // batch_size * batch_size)
    reader = open_catalog(data, schema=schema, on_error=on_error, require_title=texts)
    encoder = encoder if encoder is not None else create_model(model)
    columns = ["id", "title", *reader.schema.attributes, "source", "row"]
    kinds = ["image", "text"] if texts else ["image"]
    store = PartStore(out, columns, kinds)
    job = {"data": os.path.abspath(data) if os.path.exists(data) else data, "model": model, "part_size": part_size,
           "batch_size": batch_size, "kinds": kinds, "on_error": on_error, "schema": reader.schema.name, "limit": limit}
    markers = store.start(job, overwrite=overwrite)
    done_rows = sum(m["rows"] for m in markers)
    start = markers[-1]["position"] if markers else 0
    if markers:
        reader.report.counts.update(markers[-1]["skipped"]["by_kind"])
        reader.report.examples.extend(markers[-1]["skipped"]["examples"])

    total = reader.count() if progress else None
    if limit is not None and total is not None:
        total = min(total, limit)
    bar = tqdm(total=total, initial=start, unit="img", desc=f"embed {Path(out).name}", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    computed = 0
    pending: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    rows: list[dict] = []
    index = len(markers)
    remaining = None if limit is None else max(0, limit - start)
    batches = prefetch(iter_batches(reader, encoder.image_transform, batch_size, start=start, limit=remaining))
    with torch.inference_mode():
        for batch in batches:
            pending["image"].append(encoder.encode_image(batch.pixels).float().numpy())
            if texts:
                pending["text"].append(encoder.encode_text([item.title or "" for item in batch.items]).float().numpy())
            rows.extend({**item.metadata(), "source": item.source, "row": item.row} for item in batch.items)
            computed += len(batch.items)
            bar.update(batch.position - bar.n)
            if len(rows) >= part_size:
                store.write(index, {k: np.concatenate(v) for k, v in pending.items()}, rows, {"position": batch.position, "skipped": batch.skipped})
                index, rows, pending = index + 1, [], {kind: [] for kind in kinds}
        if rows:
            store.write(index, {k: np.concatenate(v) for k, v in pending.items()}, rows, {"position": batch.position, "skipped": batch.skipped})
    bar.close()
    seconds = time.perf_counter() - t0
    count = store.merge(encoder.embed_dim)
    result = EmbedResult(
        out=str(out), model=model, count=count, embed_dim=encoder.embed_dim, skipped=reader.report.skipped,
        computed=computed, seconds=round(seconds, 3), images_per_second=round(computed / seconds, 1) if seconds > 0 else 0.0,
    )
    manifest = {**asdict(result), "data": job["data"], "kinds": kinds, "columns": columns, "errors": reader.report.to_dict(),
                "resumed_from_rows": done_rows}
    atomic_write_text(Path(out) / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return result
