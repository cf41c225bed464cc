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
from vitrine.data.loader import Batch, iter_batches, map_ordered, prefetch
from vitrine.embed.parts import MANIFEST_FILE, PartStore, atomic_write_text
from vitrine.embed.ray_engine import RayOptions, RaySession, encode_units_on_ray
from vitrine.embed.units import plan_units
from vitrine.errors import InvalidInput
from vitrine.machine import usable_cores
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
    data: str, model: str = DEFAULT_MODEL, out: str = "runs/embed", batch_size: int = 64, part_size: int = 4096,
    texts: bool = False, on_error: str = "fail", schema: str | None = None, limit: int | None = None,
    overwrite: bool = False, progress: bool = True, encoder=None, engine: str = "local", ray: RayOptions | None = None,
) -> EmbedResult:
    """Write `<out>/image_embeddings.npy` (+ `text_embeddings.npy` of titles with `texts`) and `metadata.csv`.

    `engine="ray"` encodes on a Ray Data actor pool (`ray`: address, workers) instead of in this process;
    the output is the same (same ids in the same order, embeddings equal to float precision).
    """
    if engine == "ray":
        if limit is not None or encoder is not None:
            raise InvalidInput(
                "--limit (and a ready encoder) are for the in-process engine; --engine ray embeds the whole catalog"
            )
        return _run_embed_ray(
            data, model, out, batch_size, part_size, texts, on_error, schema, overwrite, progress, ray or RayOptions()
        )
    if engine != "local":
        raise InvalidInput(f"unknown engine {engine!r}: local or ray")
    if part_size % batch_size:
        part_size = max(batch_size, part_size // batch_size * batch_size)
    reader = open_catalog(data, schema=schema, on_error=on_error, require_title=texts)
    encoder = encoder if encoder is not None else create_model(model)
    store, job, kinds, columns = _start_job(
        reader, data, model, out, batch_size, part_size, texts, on_error, overwrite, limit=limit
    )
    markers = store.committed()
    done_rows = sum(m["rows"] for m in markers)
    start = markers[-1]["position"] if markers else 0
    if markers:
        reader.report.counts.update(markers[-1]["skipped"]["by_kind"])
        reader.report.examples.extend(markers[-1]["skipped"]["examples"])

    total = reader.count() if progress else None
    if limit is not None and total is not None:
        total = min(total, limit)
    bar = tqdm(
        total=total, initial=start, unit="img", desc=f"embed {Path(out).name}", disable=not progress, dynamic_ncols=True
    )
    t0 = time.perf_counter()
    computed = 0
    pending: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    rows: list[dict] = []
    index = len(markers)
    remaining = None if limit is None else max(0, limit - start)
    batches = prefetch(iter_batches(reader, encoder.image_transform, batch_size, start=start, limit=remaining), depth=4)
    encode, workers = batch_encoder(encoder, texts)
    for batch, arrays in map_ordered(encode, batches, workers):
        for kind, array in arrays.items():
            pending[kind].append(array)
        rows.extend({**item.metadata(), "source": item.source, "row": item.row} for item in batch.items)
        computed += len(batch.items)
        bar.update(batch.position - bar.n)
        if len(rows) >= part_size:
            store.write(
                index, {k: np.concatenate(v) for k, v in pending.items()}, rows,
                {"position": batch.position, "skipped": batch.skipped},
            )
            index, rows, pending = index + 1, [], {kind: [] for kind in kinds}
    if rows:
        store.write(
            index, {k: np.concatenate(v) for k, v in pending.items()}, rows,
            {"position": batch.position, "skipped": batch.skipped},
        )
    bar.close()
    count, _ = store.merge(encoder.embed_dim)
    return _finish(
        store, job, model, encoder.embed_dim, count, computed, time.perf_counter() - t0, reader.report.to_dict(),
        done_rows,
    )


def batch_encoder(encoder, texts: bool):
    """(a function embedding one batch's images, and titles with `texts`, -> (batch, arrays); how many batches to run
    at once). An encoder whose calls may run concurrently (ONNX Runtime) runs one batch per core with one thread
    each; torch runs one batch at a time on its own threads."""
    workers = usable_cores() if getattr(encoder, "concurrent_calls", False) else 1
    if workers > 1:
        encoder = encoder.with_threads(1)

    def encode(batch: Batch) -> tuple[Batch, dict[str, np.ndarray]]:
        with torch.inference_mode():
            arrays = {"image": encoder.encode_image(batch.pixels).float().numpy()}
            if texts:
                arrays["text"] = encoder.encode_text([item.title or "" for item in batch.items]).float().numpy()
        return batch, arrays

    return encode, workers


def _start_job(reader, data, model, out, batch_size, part_size, texts, on_error, overwrite, **extra):
    """The part store for `out`, checked to hold this same job (or emptied with `overwrite`)."""
    columns = ["id", "title", *reader.schema.attributes, "source", "row"]
    kinds = ["image", "text"] if texts else ["image"]
    store = PartStore(out, columns, kinds)
    job = {
        "data": os.path.abspath(data) if os.path.exists(data) else data,
        "model": model,
        "part_size": part_size,
        "batch_size": batch_size,
        "kinds": kinds,
        "on_error": on_error,
        "schema": reader.schema.name,
        **extra,
    }
    store.start(job, overwrite=overwrite)
    return store, job, kinds, columns


def _finish(
    store: PartStore, job: dict, model: str, dim: int, count: int, computed: int, seconds: float, errors: dict,
    done_rows: int,
) -> EmbedResult:
    result = EmbedResult(
        out=str(store.out),
        model=model,
        count=count,
        embed_dim=dim,
        skipped=errors["skipped"],
        computed=computed,
        seconds=round(seconds, 3),
        images_per_second=round(computed / seconds, 1) if seconds > 0 else 0.0,
    )
    manifest = {
        **asdict(result),
        "data": job["data"],
        "kinds": job["kinds"],
        "columns": store.columns,
        "errors": errors,
        "resumed_from_rows": done_rows,
        "engine": job.get("engine", "local"),
    }
    atomic_write_text(store.out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return result


def _run_embed_ray(
    data, model, out, batch_size, part_size, texts, on_error, schema, overwrite, progress, options: RayOptions
) -> EmbedResult:
    """The Ray engine: one part per catalog unit, committed by the driver as units complete (in any order)."""
    reader = open_catalog(data, schema=schema, on_error=on_error, require_title=texts)
    store, job, kinds, _ = _start_job(
        reader, data, model, out, batch_size, part_size, texts, on_error, overwrite, engine="ray"
    )
    units = plan_units(data, schema=schema, part_size=part_size)
    done = {m["index"]: m for m in store.committed_any()}
    todo = [unit for unit in units if unit.index not in done]
    done_rows = sum(m["rows"] for m in done.values())
    bar = tqdm(
        total=sum(u.stop - u.start for u in units),
        initial=sum(u.stop - u.start for u in units if u.index in done),
        unit="img",
        desc=f"embed {Path(out).name} (ray)",
        disable=not progress,
        dynamic_ncols=True,
    )
    t0, computed, dim = time.perf_counter(), 0, None
    with RaySession(options):
        for result in encode_units_on_ray(
            todo, model, options, batch_size=batch_size, texts=texts, schema=schema, on_error=on_error
        ):
            unit = units[result.index]
            arrays = {"image": result.image, **({"text": result.text} if texts else {})}
            store.write(unit.index, arrays, result.rows, {"unit": asdict(unit), "skipped": result.skipped})
            computed += len(result.rows)
            dim = result.image.shape[1]
            bar.update(unit.stop - unit.start)
    bar.close()
    seconds = time.perf_counter() - t0
    markers = store.committed_any()
    if dim is None:
        dim = (
            np.load(store.parts / f"part-{markers[0]['index']:06d}.image.npy").shape[1]
            if markers
            else create_model(model).embed_dim
        )
    count, dropped = store.merge(dim, on_duplicate=on_error)
    errors = _sum_reports([m["skipped"] for m in markers], dropped)
    return _finish(store, job, model, dim, count, computed, seconds, errors, done_rows)


def _sum_reports(reports: list[dict], duplicates: list[str]) -> dict:
    """One error report from the units' reports, plus the cross-unit duplicate ids the merge left out."""
    by_kind: dict[str, int] = {}
    examples: list[str] = []
    for report in reports:
        for kind, n in report.get("by_kind", {}).items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        examples.extend(report.get("examples", []))
    if duplicates:
        by_kind["duplicate id"] = by_kind.get("duplicate id", 0) + len(duplicates)
        examples.extend(f"duplicate id {d!r} in a later unit" for d in duplicates)
    return {"skipped": sum(by_kind.values()), "by_kind": dict(sorted(by_kind.items())), "examples": examples[:20]}
