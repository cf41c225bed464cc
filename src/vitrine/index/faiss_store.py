"""The embedded vector store: FAISS vectors + SQLite metadata in one directory, committed together.

Files: `index.sqlite` (the metadata rows and the commit state), `vectors-<base>.faiss` (the base index, written
whole) and `delta-<base>.log` (what commits appended since the base was written; see `delta.py`). SQLite's
`state` names the committed files: `generation` (bumped by every commit), `base` (the generation whose commit
wrote the base file), `delta_bytes` (the committed length of its log) and `kind`; the `dead` table holds the
base's dead keys as of that write (the log's tombstones add to them).

A commit runs in one SQLite write transaction that also holds its metadata rows. It either
- appends its vectors and tombstones to the delta log (write, fsync) and sets `delta_bytes`: bytes in proportion
  to the batch; or
- merges, when the delta would outgrow its bound (more than `IndexOptions.delta_max_fraction` of the base's
  vectors or `delta_max_vectors` rows), when the base is small (at most `delta_min_base` vectors: rewriting it
  is cheap), or when the catalog calls for another index kind: it writes `vectors-<n+1>.faiss` holding
  everything (temp file, fsync, rename, directory fsync) and sets `base = n+1`, `delta_bytes = 0`, `kind` and
  the dead keys; the old base and log are removed after the commit. `merge()` does it on demand.
A crash before the SQLite commit leaves commit n whole: a new base file is referenced by nothing, and log bytes
past the committed length are never read. Such files and tails are removed on open and after a failed commit,
inside a SQLite write transaction, so never while another process is committing.

The index kind follows the catalog (see `plan.py`): exact while small, HNSW above `exact_max`,
IVF-PQ when HNSW would not fit the memory budget. Conversions happen inside a merge.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vitrine.failpoints import failpoint
from vitrine.index.delta import DeltaLogError, LayeredVectors, Record, append_log, decode, encode, fsync_dir, read_log, truncate_log
from vitrine.index.metadata import MetadataStore
from vitrine.index.plan import IndexOptions, plan_index
from vitrine.index.store import IndexMismatchError, SearchHit, checked_queries, checked_rows
from vitrine.index.vectors import IVFPQ_MIN_VECTORS, VectorIndex

DB_NAME = "index.sqlite"
__all__ = ["DB_NAME", "FaissStore", "IndexMismatchError", "SearchHit"]
_UPGRADE = {"flat": 0, "hnsw": 1, "ivfpq": 2}
_SWEEP_WAIT_MS = 1000  # how long opening waits for another process's commit before leaving the sweep to a later open


@dataclass(frozen=True)
class _Committed:
    """What SQLite says is committed: the commit number, the base file's generation and kind, the log's length."""

    generation: int
    base: int
    kind: str
    delta_bytes: int


class FaissStore:
    """Inner-product search over L2-normalised vectors, with attribute filters of any selectivity."""

    backend = "faiss"

    def __init__(self, directory: str | os.PathLike, model: str, dim: int, options: IndexOptions | Mapping[str, object] | None = None):
        """Create or open the index in `directory`; `options` (all, or a mapping of the ones to change) are saved with it."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.meta = MetadataStore(self.directory / DB_NAME)
        stored_model, stored_dim = self.meta.get_state("model"), self.meta.get_state("dim")
        if stored_model is not None and (stored_model != model or int(stored_dim) != dim):
            self.meta.close()
            raise IndexMismatchError(f"index {self.directory} was built with {stored_model} ({stored_dim}-d); "
                                     f"it cannot be queried or extended with {model} ({dim}-d). Rebuild it with that model or use --model {stored_model}.")
        stored = self.meta.get_state("options")
        merged = IndexOptions.from_json(stored) if stored else IndexOptions()
        if isinstance(options, IndexOptions):
            merged = options
        elif options:
            merged = replace(merged, **options)
        if stored_model is None or merged.to_json() != stored:
            with self.meta.transaction():
                if stored_model is None:
                    self.meta.set_state("model", model)
                    self.meta.set_state("dim", str(dim))
                    self.meta.set_state("generation", "0")
                    self.meta.set_state("kind", "flat")
                self.meta.set_state("options", merged.to_json())
        self.model, self.dim = model, dim
        self.options = IndexOptions.from_json(self.meta.get_state("options"))
        self._dirty, self._pending = False, None
        try:
            self._load()
        except BaseException:
            self.meta.close()
            raise
        self._sweep()

    def _committed(self) -> _Committed:
        """The committed state (read it inside a snapshot or a write transaction, or it may mix two commits)."""
        generation = int(self.meta.get_state("generation"))
        return _Committed(generation, int(self.meta.get_state("base", str(generation))), self.meta.get_state("kind", "flat"),
                          int(self.meta.get_state("delta_bytes", "0")))

    def _load(self, locked: bool = False) -> None:
        """(Re)read the committed state: what is on disk is the truth. The state and the base's dead keys are read in
        one snapshot; when another process merges (and removes those files) before they are read, the newer state is
        read instead. `locked`: inside this store's write transaction, where nothing can move."""
        while True:
            with nullcontext() if locked else self.meta.snapshot():
                committed, dead = self._committed(), self.meta.dead_keys()
            path, log = self._vectors_path(committed.base), self._delta_path(committed.base)
            try:
                base = VectorIndex.read(path, committed.kind, self.dim, self.options, dead) if path.is_file() else None
            except RuntimeError:  # faiss: the file went away between the check and the read
                base = None
            data = read_log(log, 0, committed.delta_bytes)
            if (base is None or data is None) and not locked and int(self.meta.get_state("generation")) != committed.generation:
                continue
            if data is None:
                raise DeltaLogError(f"{log} is missing or shorter than its committed {committed.delta_bytes} bytes: the index "
                                    f"{self.directory} is damaged; rebuild it or restore a snapshot")
            vectors = LayeredVectors(base or VectorIndex.empty(self.dim, self.options))
            for record in decode(data, self.dim, str(log)):
                vectors.apply(record)
            self.generation, self.base_generation, self.delta_bytes, self.vectors = (committed.generation, committed.base,
                                                                                     committed.delta_bytes, vectors)
            return

    def refresh(self) -> bool:
        """Reread the index if another process committed since; returns whether it did. Commits that only appended
        cost the bytes they appended; a merge rereads the new base."""
        with self.meta.snapshot():
            committed = self._committed()
        return self._catch_up(committed)

    def _catch_up(self, committed: _Committed, locked: bool = False) -> bool:
        if committed.generation == self.generation:
            return False
        if committed.base == self.base_generation:
            data = read_log(self._delta_path(committed.base), self.delta_bytes, committed.delta_bytes)
            if data is not None:  # None: a merge removed the log since `committed` was read
                records = decode(data, self.dim, str(self._delta_path(committed.base)), offset=self.delta_bytes)
                try:
                    for record in records:
                        self.vectors.apply(record)
                except BaseException:
                    self._load(locked)
                    raise
                self.generation, self.delta_bytes = committed.generation, committed.delta_bytes
                return True
        self._load(locked)
        return True

    @classmethod
    def open(cls, directory: str | os.PathLike, model: str | None = None) -> "FaissStore":
        """Open an existing index; with `model`, refuse a mismatch."""
        db = Path(directory) / DB_NAME
        if not db.is_file():
            raise FileNotFoundError(f"no vitrine index in {directory} (missing {DB_NAME})")
        meta = MetadataStore(db)
        stored_model, stored_dim = meta.get_state("model"), int(meta.get_state("dim"))
        meta.close()
        return cls(directory, model or stored_model, stored_dim)

    def _vectors_path(self, generation: int) -> Path:
        return self.directory / f"vectors-{generation:08d}.faiss"

    def _delta_path(self, base: int) -> Path:
        return self.directory / f"delta-{base:08d}.log"

    def _sweep(self) -> None:
        """Remove the files no commit references (a base or log whose commit died) and the log's uncommitted tail.

        Inside a write transaction, so never beside another process's commit in progress: when one holds the lock
        past `_SWEEP_WAIT_MS` (a long merge), or the index is read-only, the sweep is left to a later open.
        """
        db = self.meta.db
        wait = db.execute("PRAGMA busy_timeout").fetchone()[0]
        db.execute(f"PRAGMA busy_timeout = {_SWEEP_WAIT_MS}")
        try:
            with self.meta.transaction():
                committed = self._committed()
                keep = {self._vectors_path(committed.base).name}
                if committed.delta_bytes:
                    keep.add(self._delta_path(committed.base).name)
                    truncate_log(self._delta_path(committed.base), committed.delta_bytes)
                for stale in [*self.directory.glob("vectors-*.faiss*"), *self.directory.glob("delta-*.log*")]:
                    if stale.name not in keep:
                        stale.unlink(missing_ok=True)
        except sqlite3.OperationalError:
            pass
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(wait)}")

    def _rebuild_kind(self, live: int, kind: str, dead: int, stored: int) -> str | None:
        """The kind to rebuild the base as: the one the catalog's size now calls for, or HNSW again once many of its
        vectors are dead; None to keep it."""
        target = plan_index(live, self.dim, self.options).kind
        if _UPGRADE[target] > _UPGRADE[kind] and not (target == "ivfpq" and live < IVFPQ_MIN_VECTORS):
            return target
        if kind == "hnsw" and dead > self.options.compact_dead_fraction * stored:
            return "hnsw"
        return None

    def _must_merge(self, record: Record) -> bool:
        """Whether this commit rewrites the base rather than append to the delta (the rule in the module docstring)."""
        options, base, delta = self.options, self.vectors.base, self.vectors.delta
        rows = self.vectors.rows + record.rows
        if options.delta_max_vectors == 0 or base.stored <= options.delta_min_base:
            return True
        if rows > options.delta_max_vectors or rows > options.delta_max_fraction * base.stored:
            return True
        dead = len(base.dead) + int(base.holds(record.removed).sum())
        live = self.vectors.live + len(record.keys) - len(record.removed)
        return self._rebuild_kind(live, base.kind, dead, base.stored + delta.live + len(record.keys)) is not None

    def _replan(self) -> None:
        """Rebuild the (merged) base as the kind `_rebuild_kind` names, if any."""
        base = self.vectors.base
        target = self._rebuild_kind(base.live, base.kind, len(base.dead), base.stored)
        if target is not None:
            keys, vectors = base.live_items()
            self.vectors = LayeredVectors(VectorIndex.build(target, keys, vectors, self.options))

    def _write(self, change: Callable[[], tuple[Record | None, object]], state: Mapping[str, str] | None = None, merge: bool = False):
        """One commit: inside one write transaction, `change()` writes the metadata rows and returns the vectors'
        record (None: nothing to commit) and the result; the record is appended to the delta or merged."""
        self._dirty, self._pending = False, None
        try:
            with self.meta.transaction():
                self._catch_up(self._committed(), locked=True)  # a writer that did not refresh first loses nothing
                record, result = change()
                if record is None:
                    return result
                if merge or self._must_merge(record):
                    self._merge(record)
                else:
                    self._append(record)
                for name, value in (state or {}).items():
                    self.meta.set_state(name, value)
                self.meta.set_state("generation", str(self.generation + 1))
        except BaseException:
            self._rollback()
            raise
        self._finish_commit()
        return result

    def _append(self, record: Record) -> None:
        """Inside the transaction: the record onto the delta log; memory follows once the commit has landed."""
        end = append_log(self._delta_path(self.base_generation), self.delta_bytes, encode(record.keys, record.vectors, record.removed, self.dim))
        failpoint("index.delta_written")  # record synced, metadata not yet committed
        self.meta.set_state("delta_bytes", str(end))
        self.meta.set_state("base", str(self.base_generation))  # indexes written before the delta have no `base` yet
        self._pending = ("append", record, end)

    def _merge(self, record: Record) -> None:
        """Inside the transaction: fold the record and the delta into a new base file and point the metadata at it."""
        self._dirty = True  # memory moves ahead of the commit: a failure rereads the committed state
        self.vectors.apply(record)
        self.vectors.fold()
        self._replan()
        path = self._vectors_path(self.generation + 1)
        tmp = path.with_name(path.name + ".tmp")
        self.vectors.base.write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        failpoint("index.base_synced")  # the new base complete under its temp name
        os.replace(tmp, path)
        fsync_dir(self.directory)
        failpoint("index.vectors_written")  # new file in place, metadata not yet committed
        self.meta.set_dead_keys(self.vectors.dead)
        self.meta.set_state("kind", self.vectors.kind)
        self.meta.set_state("base", str(self.generation + 1))
        self.meta.set_state("delta_bytes", "0")
        self._pending = ("merge", self.base_generation)

    def _finish_commit(self) -> None:
        failpoint("index.committed")
        what, *details = self._pending
        self._pending = None
        self.generation += 1
        if what == "append":
            record, end = details
            try:
                self.vectors.apply(record)
            except BaseException:
                self._load()
                raise
            self.delta_bytes = end
        else:
            failpoint("index.merged")  # committed; the old base and log not yet removed
            old, self.base_generation, self.delta_bytes = details[0], self.generation, 0
            self._vectors_path(old).unlink(missing_ok=True)
            self._delta_path(old).unlink(missing_ok=True)

    def _rollback(self) -> None:
        """After a failed commit: reread the committed state if memory moved ahead of it, and sweep what it left."""
        self._pending = None
        if self._dirty:
            self._load()
        try:
            self._sweep()
        except OSError:  # best effort, never in place of the commit's own error: the next open sweeps again
            pass

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping] | None = None, state: Mapping[str, str] | None = None) -> None:
        """Add products, or replace the vector and metadata of ids already present; atomic.

        `state` entries (e.g. a build's resume position) are committed in the same transaction.
        """
        vectors, metadata = checked_rows(ids, vectors, metadata, self.dim)
        rows = [(item_id, meta.get("title"), {k: v for k, v in meta.items() if k not in ("id", "title")}) for item_id, meta in zip(ids, metadata)]

        def change():
            keys, replaced = self.meta.upsert(rows)
            return Record(np.asarray(keys, dtype=np.int64), vectors, np.asarray(replaced, dtype=np.int64)), None

        self._write(change, state)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove products by id; returns how many existed. Atomic."""
        def change():
            keys = np.asarray(self.meta.delete(list(ids)), dtype=np.int64)
            return Record(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32), keys), len(keys)

        return self._write(change)

    def merge(self) -> bool:
        """Fold the delta into a new base file now, as one atomic commit; False when the delta is empty (nothing done).

        Commits merge by themselves once the delta passes its bound; this is for a quiet moment (`vitrine index merge`)
        or before copying the index. Call it as a writer (under the writers' lock where several processes write)."""
        def change():
            if not self.vectors.rows:
                return None, False
            return Record(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)), True

        return self._write(change, merge=True)

    def search(self, queries: np.ndarray, k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None) -> list[list[SearchHit]]:
        """Top-k products per query (rows of `queries`), restricted to those matching every filter.

        The metadata may be newer than the vectors in memory (another process committed after `refresh`): products
        it no longer has are left out of the hits, and filters keep only the keys these vectors hold.
        """
        queries = checked_queries(queries, k, self.dim)
        with self.meta.snapshot():  # the generation, the filter's keys and the hits' rows: one committed state
            behind = int(self.meta.get_state("generation")) != self.generation
            allowed = None
            if filters:
                allowed = np.asarray(self.meta.matching_keys(filters), dtype=np.int64)
                if behind:  # only then can the metadata hold keys these vectors lack
                    allowed = self.vectors.live_subset(allowed)
                if not len(allowed):
                    return [[] for _ in queries]
            k = min(k, self.vectors.live if allowed is None else len(allowed))
            if not k:
                return [[] for _ in queries]
            scores, keys = self.vectors.search(queries, k, allowed)
            products = self.meta.products(sorted({int(key) for key in keys.ravel() if key >= 0}))
        return [[SearchHit(products[int(key)]["id"], float(score), products[int(key)], float(score)) for score, key in zip(row_s, row_k)
                 if key >= 0 and int(key) in products] for row_s, row_k in zip(scores, keys)]

    def lexical(self, words: Sequence[str], k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None,
                vector: np.ndarray | None = None) -> list[SearchHit]:
        """Products whose title or attribute values hold the words, by BM25 (SQLite FTS5), best first; with `vector`,
        each hit's cosine to it as well."""
        with self.meta.snapshot():
            ranked = self.meta.lexical(words, k, filters)
            products = self.meta.products([key for key, _ in ranked])
        ranked = [(key, score) for key, score in ranked if key in products]
        similarity: dict[int, float] = {}
        if vector is not None and ranked:
            keys = self.vectors.live_subset(np.asarray([key for key, _ in ranked], dtype=np.int64))
            if len(keys):
                query = checked_queries(vector, 1, self.dim)[0]
                similarity = dict(zip(keys.tolist(), (self.vectors.reconstruct(keys) @ query).tolist()))
        return [SearchHit(products[key]["id"], score, products[key], similarity.get(key)) for key, score in ranked]

    def sample(self, n: int) -> list[dict]:
        return self.meta.sample(n)

    def vectors_of(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(the ids of `ids` this store holds, in order, and their vectors); IVF-PQ's are decoded, so approximate."""
        keys = self.meta.keys_for(list(ids))
        wanted = [i for i in ids if i in keys]
        # metadata newer than the vectors in memory (another process committed): a key these vectors lack is left out
        live = set(self.vectors.live_subset(np.asarray([keys[i] for i in wanted], dtype=np.int64)).tolist())
        found = [i for i in wanted if keys[i] in live]
        return found, self.vectors.reconstruct(np.asarray([keys[i] for i in found], dtype=np.int64))

    def product(self, product_id: str) -> dict | None:
        return self.meta.product(product_id)

    def page(self, offset: int, limit: int, filters: Mapping[str, str | Sequence[str]] | None = None) -> tuple[int, list[dict]]:
        return self.meta.page(offset, limit, filters)

    def fields(self) -> set[str]:
        return self.meta.fields()

    def field_values(self, per_field: int = 50) -> dict[str, list[tuple[str, int]]]:
        return self.meta.field_values(per_field)

    def get_state(self, name: str, default: str | None = None) -> str | None:
        return self.meta.get_state(name, default)

    def min_commit(self, requested: int) -> int:
        """Bulk loads: a commit that outgrows the delta rewrites the base, so a build's commits grow with the index
        (at least a quarter of it) and merge each time, as few rewrites as before; small writes append."""
        return max(requested, self.vectors.live // 4)

    def stats(self) -> dict:
        return {"model": self.model, "dim": self.dim, "vectors": self.vectors.live, "products": self.meta.count(),
                "generation": self.generation, "index_kind": self.vectors.kind, "dead_vectors": len(self.vectors.dead),
                "base_generation": self.base_generation, "delta_vectors": self.vectors.delta.live, "delta_rows": self.vectors.rows,
                "delta_bytes": self.delta_bytes, "backend": "faiss", "index": str(self.directory)}

    def close(self) -> None:
        self.meta.close()
