"""`vitrine index build`: embed a catalog into a vector store (FAISS or Milvus), resumable after a crash at any
point."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vitrine.data.catalog import open_catalog
from vitrine.data.loader import iter_batches, prefetch
from vitrine.data.schema import CatalogSchema
from vitrine.data.tagged import with_tags
from vitrine.disk import temp_path, writing
from vitrine.index.plan import IndexOptions
from vitrine.index.runtime import int8_parity, record_runtime, runtime_of
from vitrine.index.stores import is_milvus, open_store, writers_lock


def _commit_locked(store, index: str, ids, vectors, metas, state) -> None:
    """One build commit under the writers' lock, after rereading what another writer (the service) committed: a full
    disk is a `DiskFullError` and leaves the commit before intact."""
    with writers_lock(index), writing(index):
        store.refresh()
        store.upsert(ids, vectors, metas, state=state)


SCHEMA_STATE = (
    "catalog_schema"  # the schema the index was built with (JSON): the service's facets and chips come from it
)
SKIPPED_MANIFEST = "skipped-rows.json"  # in an index directory: every catalog row a build skipped, and why


def index_schema(store) -> CatalogSchema | None:
    """The catalog schema saved with an index by `index build`, or None for an index built before it was saved."""
    text = store.get_state(SCHEMA_STATE)
    return CatalogSchema.from_dict(json.loads(text), origin="the index's saved schema") if text else None


def _open_for_build(index: str, model_name: str, dim: int, options, reader, runtime: str, parity: float | None = None):
    """The store to build into (created if missing) and the state its commits carry (runtime, schema)."""
    with writers_lock(index), writing(index):  # opening removes other generations' vector files: never mid-commit
        store = open_store(
            index, model=model_name, dim=dim, options=options, create=True, attributes=reader.schema.attributes
        )
    try:
        return store, {**record_runtime(store, runtime, parity), SCHEMA_STATE: json.dumps(reader.schema.to_dict())}
    except BaseException:
        store.close()
        raise


@contextmanager
def _fresh_or_resumable(index: str):
    """A build that fails before its first commit into a new index directory removes what it made (no half-made index
    with a lock and an empty database); one that fails later leaves committed products, which a rerun resumes."""
    fresh = not is_milvus(index) and not os.path.exists(index)
    try:
        yield
    except BaseException:
        if fresh and os.path.isdir(index):
            store = None
            try:
                store = open_store(index)
                committed = store.stats()["products"]
            except Exception:
                committed = 0
            finally:
                if store is not None:
                    store.close()
            if committed:
                print(
                    f"{index}: {committed} products were committed before the failure; rerun the same command to "
                    "resume",
                    file=sys.stderr,
                )
            else:
                shutil.rmtree(index, ignore_errors=True)
        raise


def _write_skipped(index: str, data: str, reader, resumed: bool) -> None:
    """List every skipped row in the index directory's manifest (rows skipped by earlier runs of a resumed build
    kept)."""
    if is_milvus(index):
        return
    path = os.path.join(index, SKIPPED_MANIFEST)
    earlier = []
    if resumed and os.path.isfile(path):
        earlier = json.loads(open(path, encoding="utf-8").read()).get("rows", [])
    rows = earlier + reader.report.rows
    if rows or os.path.isfile(path):
        with writers_lock(index), writing(index):
            tmp = temp_path(path)
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump({"catalog": _source(data), "skipped": len(rows), "rows": rows}, handle, indent=1)
            os.replace(tmp, path)


def _source(data: str) -> str:
    return os.path.abspath(data) if os.path.exists(data) else data


@dataclass(frozen=True)
class BuildResult:
    index: str
    products: int
    added: int
    skipped: int
    seconds: float
    products_per_second: float
    skipped_rows: str = ""  # the first skipped rows, named (all of them: skipped-rows.json in the index directory)


def build_index(
    data: str, index: str, model, batch_size: int = 64, commit_every: int = 4096, on_error: str = "skip", schema=None,
    progress: bool = True, options: IndexOptions | Mapping[str, object] | None = None,
    on_commit: Callable[[int, int], None] | None = None, tagger=None,
    keep_image: Callable[[str, object], None] | None = None,
) -> BuildResult:
    """Add every product of `data`; each commit stores the reader position with the rows, so a rerun continues.

    `index` is a directory (FAISS + SQLite) or `milvus:<file.db | URI>` (see vitrine.index.store). On FAISS a commit
    rewrites the vector file, so commits grow with the index (at least a quarter of it): the total written stays
    a few times the final index, and a crash loses at most that share.
    With a `tagger` (vitrine.tagging.Tagger), each product's predicted tags are stored with it (see `with_tags`).
    `keep_image(id, image)` is called for every product before its commit (the service keeps the images it shows).
    """
    reader = open_catalog(data, schema=schema, on_error=on_error, require_title=False)
    with _fresh_or_resumable(index):
        result = _build(
            data, index, model, reader, batch_size, commit_every, progress, options, on_commit, tagger, keep_image
        )
    return result


def _build(
    data, index, model, reader, batch_size, commit_every, progress, options, on_commit, tagger, keep_image
) -> BuildResult:
    store, runtime_state = _open_for_build(
        index, model.name, model.embed_dim, options, reader, runtime_of(model), int8_parity(model)
    )
    try:
        state_name = f"build:{_source(data)}"
        position = int(json.loads(store.get_state(state_name, '{"position": 0}'))["position"])
        bar = tqdm(
            total=reader.count() if progress else None, initial=position, unit="img", desc="index build",
            disable=not progress, dynamic_ncols=True,
        )
        t0, added = time.perf_counter(), 0
        ids, vectors, metas = [], [], []

        def commit(at: int, skipped: dict) -> None:
            _commit_locked(
                store,
                index,
                ids,
                np.concatenate(vectors),
                metas,
                {state_name: json.dumps({"position": at, "skipped": skipped}), **runtime_state},
            )
            if on_commit:
                on_commit(store.stats()["products"], at)

        with torch.inference_mode():
            for batch in prefetch(iter_batches(reader, model.image_transform, batch_size, start=position)):
                vectors.append(model.encode_image(batch.pixels).float().numpy())
                ids.extend(item.id for item in batch.items)
                batch_metas = [item.metadata() for item in batch.items]
                if tagger is not None:
                    tags = tagger.tags(tagger.embed([(item.image, item.id) for item in batch.items]))
                    batch_metas = [with_tags(meta, item_tags) for meta, item_tags in zip(batch_metas, tags)]
                metas.extend(batch_metas)
                if keep_image is not None:
                    for item in batch.items:
                        keep_image(item.id, item.image)
                added += len(batch.items)
                bar.update(batch.position - bar.n)
                if len(ids) >= store.min_commit(commit_every):
                    commit(batch.position, batch.skipped)
                    ids, vectors, metas = [], [], []
            if ids:
                commit(batch.position, batch.skipped)
        bar.close()
        seconds = time.perf_counter() - t0
        _write_skipped(index, data, reader, resumed=position > 0)
        result = BuildResult(
            index=str(index),
            products=store.stats()["products"],
            added=added,
            skipped=reader.report.skipped,
            seconds=round(seconds, 2),
            products_per_second=round(added / seconds, 1) if seconds else 0.0,
            skipped_rows=reader.report.first_rows(),
        )
    finally:
        store.close()
    return result


def build_index_ray(
    data: str, index: str, model_name: str, options_ray, batch_size: int = 64, commit_every: int = 4096,
    on_error: str = "skip", schema=None, progress: bool = True,
    options: IndexOptions | Mapping[str, object] | None = None, on_commit: Callable[[int, int], None] | None = None,
) -> BuildResult:
    """`build_index` with the encoding on a Ray Data actor pool: units of `commit_every` rows are encoded by the
    workers and upserted here as they complete; the store remembers the committed units, so a rerun encodes only
    the others."""
    from vitrine.embed.ray_engine import RaySession, encode_units_on_ray
    from vitrine.embed.units import plan_units
    from vitrine.models import create_model

    reader = open_catalog(data, schema=schema, on_error=on_error, require_title=False)
    dim = create_model(model_name).embed_dim
    store, runtime_state = _open_for_build(
        index, model_name, dim, options, reader, "torch"
    )  # the Ray actors encode with torch
    try:
        state_name = f"build-ray:{_source(data)}:{commit_every}"
        done = set(json.loads(store.get_state(state_name, '{"units": []}'))["units"])
        units = plan_units(data, schema=schema, part_size=commit_every)
        todo = [unit for unit in units if unit.index not in done]
        bar = tqdm(
            total=sum(u.stop - u.start for u in units),
            initial=sum(u.stop - u.start for u in units if u.index in done),
            unit="img",
            desc="index build (ray)",
            disable=not progress,
            dynamic_ncols=True,
        )
        t0, added, skipped = time.perf_counter(), 0, 0
        pending: list = []

        def commit() -> None:
            ids, vectors, metas, seen = [], [], [], set()
            for result in pending:
                for row, vector in zip(result.rows, result.image):
                    if row["id"] not in seen:  # ids repeated across units: the first one wins, as in one process
                        seen.add(row["id"])
                        ids.append(row["id"])
                        vectors.append(vector)
                        metas.append({k: v for k, v in row.items() if k not in ("source", "row")})
            done.update(result.index for result in pending)
            state = {state_name: json.dumps({"units": sorted(done)}), **runtime_state}
            if ids:
                _commit_locked(store, index, ids, np.stack(vectors), metas, state)
            else:
                _commit_locked(store, index, [], np.zeros((0, dim), np.float32), [], state)
            if on_commit:
                on_commit(store.stats()["products"], len(done))
            pending.clear()

        with RaySession(options_ray):
            for result in encode_units_on_ray(
                todo, model_name, options_ray, batch_size=batch_size, schema=schema, on_error=on_error
            ):
                pending.append(result)
                added += len(result.rows)
                skipped += result.skipped["skipped"]
                bar.update(units[result.index].stop - units[result.index].start)
                if sum(len(r.rows) for r in pending) >= store.min_commit(commit_every):
                    commit()
            if pending:
                commit()
        bar.close()
        seconds = time.perf_counter() - t0
        result = BuildResult(
            index=str(index),
            products=store.stats()["products"],
            added=added,
            skipped=skipped,
            seconds=round(seconds, 2),
            products_per_second=round(added / seconds, 1) if seconds else 0.0,
        )
    finally:
        store.close()
    return result
