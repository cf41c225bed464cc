"""The embedded vector store: FAISS vectors + SQLite metadata in one directory, committed together.

Files: `index.sqlite` (the metadata rows and the commit state), `vectors-<base>.faiss` (the base index, written
whole) and `delta-<base>.log` (what commits appended since the base was written; see `delta.py`). SQLite's
`state` names the committed files: `generation` (bumped by every commit), `base` (the generation whose commit
wrote the base file), `delta_bytes` (the committed length of its log) and `kind`; the `dead` table holds the
base's dead keys as of that write (the log's tombstones add to them).

A commit runs in one SQLite write transaction that also holds its metadata rows. It either
- appends its vectors and tombstones to the delta log (write, fsync) and sets `delta_bytes`: bytes in proportion
  to the batch. A commit that takes the delta past its bound (more than `IndexOptions.delta_max_fraction` of the
  base's vectors or `delta_max_vectors` rows), or after which the catalog calls for another index kind, appends
  too, and starts a background merge (below); or
- merges inline, when the base is small (at most `delta_min_base` vectors: rewriting it is cheap), when
  `delta_max_vectors` is 0, or when the delta would pass `DELTA_HARD_FACTOR` times its bound (a background merge
  that is slow or failed: memory cannot run away): it writes `vectors-<n+1>.faiss` holding everything (temp
  file, fsync, rename, directory fsync) and sets `base = n+1`, `delta_bytes = 0`, `kind` and the dead keys; the
  old base and log are removed after the commit. `merge()` does it on demand.
A crash before the SQLite commit leaves commit n whole: a new base file is referenced by nothing, and log bytes
past the committed length are never read. Such files and tails are removed on open and after a failed commit,
inside a SQLite write transaction, so never while another process is committing.

A background merge (a thread of the process whose commit crossed the bound; `state.merging` names its base and
pid, so that other writers start none while it lives) reads the committed state (base + delta up to length L)
from the files and folds it into a new base (converting the kind if the catalog calls for it; FAISS on all cores
but one, left to requests). Without the write lock (readers and writers go on, answering from base + delta), it
writes the base to `merge-<base>.faiss.<pid>.tmp`, fsynced as it goes (a commit's fsync never waits for the whole
file), and copies the log's bytes committed past L to `merge-<base>.log.<pid>.tmp`, applying them to the new base
in memory. Then, briefly, under the writers' lock (`write.lock`, then the SQLite write transaction): if another
merge committed meanwhile it gives up; else it copies what was committed since its first copy, renames the two
files to `vectors-<g>.faiss` and `delta-<g>.log` (g: this commit's generation; the log holds the records committed
during the merge), fsyncs the directory and commits `base = g` with the tail's length, as an inline merge does.
The store adopts that state at its next `refresh`, commit or `wait_for_merge()`, without rereading; other
processes reread the new base on `refresh`. A crash before that commit leaves the delta as it was (temp files are
swept once their process is gone; renamed files are referenced by nothing), after it the new base; either way
every commit survives, and the next commit past the bound merges again.

The index kind follows the catalog (see `plan.py`): exact while small, HNSW above `exact_max`,
IVF-PQ when HNSW would not fit the memory budget. Conversions happen inside a merge.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from vitrine.disk import locked, sweep_temp, temp_path, writer_alive
from vitrine.errors import MissingFile
from vitrine.failpoints import failpoint
from vitrine.index.delta import (
    DeltaLogError,
    LayeredVectors,
    Record,
    append_log,
    decode,
    encode,
    fsync_dir,
    read_log,
    truncate_log,
)
from vitrine.index.metadata import MetadataStore
from vitrine.index.plan import IndexOptions, plan_index
from vitrine.index.store import IndexMismatchError, SearchHit, checked_queries, checked_rows
from vitrine.index.vectors import IVFPQ_MIN_VECTORS, VectorIndex
from vitrine.machine import usable_cores

DB_NAME = "index.sqlite"
__all__ = ["DB_NAME", "FaissStore", "IndexMismatchError", "SearchHit"]
_UPGRADE = {"flat": 0, "hnsw": 1, "ivfpq": 2}
FILTER_CACHE_SIZE = 512  # filters whose matching keys are kept (for the generation they were read in)
_SWEEP_WAIT_MS = 1000  # how long opening waits for another process's commit before leaving the sweep to a later open
DELTA_HARD_FACTOR = 4  # past this many times its bound the delta merges inline, whatever a background merge does
_MERGE_WAIT_MS = 600_000  # how long a background merge waits for the write transaction (an inline merge may hold it)
_SYNC_BYTES = 8 << 20  # a base file is fsynced every 8 MB as it is written (see `_write_synced`)
_MERGE_TEMP = (
    "merge-"  # a background merge's files until its commit: merge-<base>.faiss.<pid>.tmp, merge-<base>.log.<pid>.tmp
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Merged:
    """What a background merge committed, for its store to adopt: its generation (= base), the file it wrote, and the
    vectors of that commit (the base under the records committed during the merge, up to `delta_bytes` of the new
    log)."""

    generation: int
    file: os.stat_result
    vectors: LayeredVectors
    delta_bytes: int


@dataclass(frozen=True)
class _Committed:
    """What SQLite says is committed: the commit number, the base file's generation and kind, the log's length."""

    generation: int
    base: int
    kind: str
    delta_bytes: int


def _write_synced(index: VectorIndex, path: Path) -> None:
    """Write `index` to `path` and fsync it, `_SYNC_BYTES` at a time: an fsync of a commit made meanwhile (its log
    record's, SQLite's) then waits for a few MB of this file's writeback, never for the whole file's."""
    with open(path, "wb") as handle:
        pending = 0

        def write(chunk: bytes) -> int:
            nonlocal pending
            handle.write(chunk)
            pending += len(chunk)
            if pending >= _SYNC_BYTES:
                handle.flush()
                os.fdatasync(handle.fileno())
                pending = 0
            return len(chunk)

        faiss.write_index(index.index, faiss.PyCallbackIOWriter(write, 1 << 20))
        handle.flush()
        os.fsync(handle.fileno())


def _point_at(meta: MetadataStore, generation: int, base: VectorIndex, delta_bytes: int) -> None:
    """Inside a write transaction: the state names `vectors-<generation>.faiss` (`base`, its kind and dead keys) and
    the committed length of its log."""
    meta.set_dead_keys(base.dead)
    meta.set_state("kind", base.kind)
    meta.set_state("base", str(generation))
    meta.set_state("delta_bytes", str(delta_bytes))


class FaissStore:
    """Inner-product search over L2-normalised vectors, with attribute filters of any selectivity."""

    backend = "faiss"

    def __init__(
        self, directory: str | os.PathLike, model: str, dim: int,
        options: IndexOptions | Mapping[str, object] | None = None,
    ):
        """Create or open the index in `directory`; `options` (all, or a mapping of the ones to change) are saved with
        it."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.meta = MetadataStore(self.directory / DB_NAME)
        stored_model, stored_dim = self.meta.get_state("model"), self.meta.get_state("dim")
        if stored_model is not None and (stored_model != model or int(stored_dim) != dim):
            self.meta.close()
            raise IndexMismatchError(
                f"index {self.directory} was built with {stored_model} ({stored_dim}-d); "
                f"it cannot be queried or extended with {model} ({dim}-d). Rebuild it with that model or use --model "
                f"{stored_model}."
            )
        stored = self.meta.get_state("options")
        merged = IndexOptions.from_json(stored) if stored else IndexOptions()
        if isinstance(options, IndexOptions):
            merged = options
        elif options:
            merged = merged.replace(**options)  # a mapping: checked like any config
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
        self._merger: threading.Thread | None = (
            None  # the background merge started by this handle's last commit past the bound
        )
        self._merge_outcome: bool | BaseException | None = None  # whether it committed, or its error
        self._merged: _Merged | None = None  # what it committed, for this handle to adopt
        self._filter_cache: dict[tuple, np.ndarray] = {}  # (generation, filters) -> matching keys
        try:
            self._load()
        except BaseException:
            self.meta.close()
            raise
        self._sweep()

    def _committed(self, meta: MetadataStore | None = None) -> _Committed:
        """The committed state, read in one statement (so from one commit, inside a transaction or not), through `meta`
        (default: this store's connection)."""
        state = (meta or self.meta).get_states(("generation", "base", "kind", "delta_bytes"))
        generation = int(state["generation"])
        return _Committed(
            generation, int(state.get("base", generation)), state.get("kind", "flat"), int(state.get("delta_bytes", 0))
        )

    def _load(self, locked: bool = False) -> None:
        """(Re)read the committed state: what is on disk is the truth. The state and the base's dead keys are read in
        one snapshot; when another process merges (and removes those files) before they are read, the newer state is
        read instead. `locked`: inside this store's write transaction, where nothing can move."""
        while True:
            with nullcontext() if locked else self.meta.snapshot():
                committed, dead = self._committed(), self.meta.dead_keys()
            path = self._vectors_path(committed.base)
            try:
                base = VectorIndex.read(path, committed.kind, self.dim, self.options, dead) if path.is_file() else None
            except RuntimeError:  # faiss: the file went away between the check and the read
                base = None
            vectors = self._layered(base, committed)
            if (
                (base is None or vectors is None)
                and not locked
                and int(self.meta.get_state("generation")) != committed.generation
            ):
                continue
            if vectors is None:
                raise DeltaLogError(
                    f"{self._delta_path(committed.base)} is missing or shorter than its committed "
                    f"{committed.delta_bytes} "
                    f"bytes: the index {self.directory} is damaged; rebuild it or restore a snapshot"
                )
            self.generation, self.base_generation, self.delta_bytes, self.vectors = (
                committed.generation, committed.base, committed.delta_bytes, vectors,
            )
            return

    def _layered(self, base: VectorIndex | None, committed: _Committed) -> LayeredVectors | None:
        """`base` (None: empty) under the records of the log `committed` names; None when the log is gone or short."""
        path = self._delta_path(committed.base)
        data = read_log(path, 0, committed.delta_bytes)
        if data is None:
            return None
        vectors = LayeredVectors(base or VectorIndex.empty(self.dim, self.options))
        for record in decode(data, self.dim, str(path)):
            vectors.apply(record)
        return vectors

    def _adopt(self, committed: _Committed) -> None:
        """Take what this handle's background merge committed as the state in memory, when `committed` still names the
        very file it wrote: no reread, the records committed during the merge already applied."""
        merged = self._merged
        if merged is None or committed.generation < merged.generation:  # none, or its commit has not landed (yet)
            return
        self._merged = None  # adopted now, or never: its commit failed, or a newer base replaced it
        try:
            same = committed.base == merged.generation and os.path.samestat(
                merged.file, self._vectors_path(merged.generation).stat()
            )
        except FileNotFoundError:
            same = False
        if same and self.generation < merged.generation:
            self.generation = self.base_generation = merged.generation
            self.delta_bytes, self.vectors = merged.delta_bytes, merged.vectors

    def refresh(self) -> bool:
        """Reread the index if another process (or this one's background merge) committed since; returns whether it
        did. Commits that only appended cost the bytes they appended; a merge rereads the new base, except the one
        this handle's background merge built, which it adopts as it is."""
        return self._catch_up(self._committed())

    def _catch_up(self, committed: _Committed, locked: bool = False) -> bool:
        if committed.generation == self.generation:
            return False
        self._adopt(committed)
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
            raise MissingFile(f"no vitrine index in {directory} (missing {DB_NAME})")
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
                sweep_temp(self.directory, _MERGE_TEMP)  # a background merge's files, once its process is gone
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

    def _merge_rule(self, record: Record) -> str:
        """How this commit lands, by the rule in the module docstring: "append" to the delta, "background" (append,
        and merge in a thread) or "inline" (rewrite the base inside the commit)."""
        options, base, delta = self.options, self.vectors.base, self.vectors.delta
        rows = self.vectors.rows + record.rows
        if options.delta_max_vectors == 0 or base.stored <= options.delta_min_base:
            return "inline"
        bound = min(options.delta_max_vectors, options.delta_max_fraction * base.stored)
        if rows > DELTA_HARD_FACTOR * bound:
            return "inline"
        dead = len(base.dead) + int(base.holds(record.removed).sum())
        live = self.vectors.live + len(record.keys) - len(record.removed)
        if (
            rows > bound
            or self._rebuild_kind(live, base.kind, dead, base.stored + delta.live + len(record.keys)) is not None
        ):
            return "background"
        return "append"

    def _replanned(self, base: VectorIndex) -> VectorIndex:
        """The merged `base`, rebuilt as the kind `_rebuild_kind` names, if any."""
        target = self._rebuild_kind(base.live, base.kind, len(base.dead), base.stored)
        return base if target is None else VectorIndex.build(target, *base.live_items(), self.options)

    def _write(
        self, change: Callable[[], tuple[Record | None, object]], state: Mapping[str, str] | None = None,
        merge: bool = False,
    ):
        """One commit: inside one write transaction, `change()` writes the metadata rows and returns the vectors'
        record (None: nothing to commit) and the result; the record is appended to the delta or merged."""
        self._dirty, self._pending = False, None
        try:
            with self.meta.transaction():
                self._catch_up(self._committed(), locked=True)  # a writer that did not refresh first loses nothing
                record, result = change()
                if record is None:
                    return result
                rule = "inline" if merge else self._merge_rule(record)
                if rule == "inline":
                    self._merge(record)
                else:
                    self._append(record, rule == "background" and self._merge_wanted())
                for name, value in (state or {}).items():
                    self.meta.set_state(name, value)
                self.meta.set_state("generation", str(self.generation + 1))
        except BaseException:
            self._rollback()
            raise
        self._finish_commit()
        return result

    def _append(self, record: Record, background: bool = False) -> None:
        """Inside the transaction: the record onto the delta log; memory follows once the commit has landed.
        `background`: this commit also claims the background merge of this base (started once it has landed)."""
        end = append_log(
            self._delta_path(self.base_generation),
            self.delta_bytes,
            encode(record.keys, record.vectors, record.removed, self.dim),
        )
        failpoint("index.delta_written")  # record synced, metadata not yet committed
        self.meta.set_state("delta_bytes", str(end))
        self.meta.set_state("base", str(self.base_generation))  # indexes written before the delta have no `base` yet
        if background:
            self.meta.set_state("merging", f"{self.base_generation} {os.getpid()}")
        self._pending = ("append", record, end, background)

    def _merge(self, record: Record) -> None:
        """Inside the transaction: fold the record and the delta into a new base file and point the metadata at it."""
        self._dirty = True  # memory moves ahead of the commit: a failure rereads the committed state
        self.vectors.apply(record)
        self.vectors = LayeredVectors(self._replanned(self.vectors.fold()))
        path = self._vectors_path(self.generation + 1)
        tmp = path.with_name(path.name + ".tmp")
        _write_synced(self.vectors.base, tmp)
        failpoint("index.base_synced")  # the new base complete under its temp name
        os.replace(tmp, path)
        fsync_dir(self.directory)
        failpoint("index.vectors_written")  # new file in place, metadata not yet committed
        _point_at(self.meta, self.generation + 1, self.vectors.base, 0)
        self._pending = ("merge", self.base_generation)

    def _finish_commit(self) -> None:
        failpoint("index.committed")
        what, *details = self._pending
        self._pending = None
        self.generation += 1
        if what == "append":
            record, end, background = details
            try:
                self.vectors.apply(record)
            except BaseException:
                self._load()
                raise
            self.delta_bytes = end
            if background:
                self._merge_outcome = None
                self._merger = threading.Thread(
                    target=self._merge_in_background, name=f"vitrine-merge {self.directory}", daemon=True
                )
                self._merger.start()
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

    def _merge_wanted(self) -> bool:
        """Whether a commit past the bound starts a background merge: none runs in this handle, and `state.merging`
        names no live process merging this base (after a failed one of this process's, the hard bound merges)."""
        if self._merger is not None and self._merger.is_alive():
            return False
        base, _, pid = self.meta.get_state("merging", "").partition(" ")
        return not (base == str(self.base_generation) and writer_alive(int(pid)))

    def _merge_in_background(self) -> None:
        """The background merge, in this handle's thread (the steps in the module docstring), through its own SQLite
        connection: the store's may be inside another thread's transaction."""
        outcome: bool | BaseException = False
        temps: list[Path] = []
        meta = None
        try:
            meta = MetadataStore(self.directory / DB_NAME)
            meta.db.execute(f"PRAGMA busy_timeout = {_MERGE_WAIT_MS}")
            faiss.omp_set_num_threads(
                max(1, usable_cores() - 1)
            )  # this thread's FAISS calls only: a core left to requests
            with meta.snapshot():
                start, dead = self._committed(meta), meta.dead_keys()
            temps = [temp_path(self.directory / f"{_MERGE_TEMP}{start.base:08d}.{ext}") for ext in ("faiss", "log")]
            try:
                vectors = self._layered(
                    VectorIndex.read(self._vectors_path(start.base), start.kind, self.dim, self.options, dead), start
                )
            except RuntimeError:  # faiss: the base file is gone, another merge committed since
                vectors = None
            if vectors is None:
                return
            base = self._replanned(vectors.fold())
            base.holds(np.zeros(0, np.int64))  # its sorted keys now, not in the commit that adopts it
            _write_synced(base, temps[0])
            failpoint("index.merge_built")  # the new base complete under its temp name, nothing renamed or committed
            vectors = LayeredVectors(base)  # and, in memory, the records committed during the merge over it
            copied = self._copy_tail(
                start, start.delta_bytes, self._committed(meta), temps[1], vectors
            )  # most of them, unlocked
            if copied is None:
                return
            failpoint("index.merge_tail_copied")  # the records committed so far copied and synced, nothing committed
            with locked(self.directory), meta.transaction():
                now = self._committed(meta)
                if self._copy_tail(start, copied, now, temps[1], vectors) is None:
                    return
                generation, tail = now.generation + 1, now.delta_bytes - start.delta_bytes
                os.replace(temps[0], self._vectors_path(generation))
                if tail:
                    os.replace(temps[1], self._delta_path(generation))
                fsync_dir(self.directory)
                failpoint("index.merge_renamed")  # the new base and log in place, not committed: referenced by nothing
                _point_at(meta, generation, base, tail)
                meta.set_state("generation", str(generation))
                self._merged = _Merged(generation, self._vectors_path(generation).stat(), vectors, tail)
            outcome = True
            failpoint("index.merge_committed")  # committed; the old base and log not yet removed
            self._vectors_path(start.base).unlink(missing_ok=True)
            self._delta_path(start.base).unlink(missing_ok=True)
        except BaseException as error:
            if outcome is False:
                self._merged = None
            outcome = error
            log.warning(
                "background merge of %s failed (%r): the delta keeps growing, and merges inline past %dx its bound",
                self.directory,
                error,
                DELTA_HARD_FACTOR,
            )
        finally:
            for temp in temps:
                temp.unlink(missing_ok=True)
            if meta is not None:
                meta.close()
            self._merge_outcome = outcome

    def _copy_tail(
        self, start: _Committed, since: int, now: _Committed, tmp: Path, vectors: LayeredVectors
    ) -> int | None:
        """Copy the records of `start`'s log committed from `since` to `now` into the new log `tmp` (at their offset
        past
        `start`'s length) and apply them to `vectors`; returns the length copied to, or None when another merge
        committed after `start`."""
        path = self._delta_path(start.base)
        data = read_log(path, since, now.delta_bytes) if now.base == start.base else None
        if data:
            records = decode(data, self.dim, str(path), offset=since)  # checked before a byte of them is copied
            append_log(tmp, since - start.delta_bytes, data)
            for record in records:
                vectors.apply(record)
        return None if data is None else now.delta_bytes

    def wait_for_merge(self) -> bool:
        """Wait for the background merge this handle started, if any, and adopt the base it committed; returns whether
        it committed one (False: none ran, or another merge committed first) and raises its error. Not while holding
        the writers' lock: the merge takes it to commit."""
        merger, self._merger = self._merger, None
        if merger is None:
            return False
        merger.join()
        outcome, self._merge_outcome = self._merge_outcome, None
        if isinstance(outcome, BaseException):
            raise outcome
        self.refresh()
        return bool(outcome)

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping] | None = None,
        state: Mapping[str, str] | None = None,
    ) -> None:
        """Add products, or replace the vector and metadata of ids already present; atomic.

        `state` entries (e.g. a build's resume position) are committed in the same transaction.
        """
        vectors, metadata = checked_rows(ids, vectors, metadata, self.dim)
        rows = [
            (item_id, meta.get("title"), {k: v for k, v in meta.items() if k not in ("id", "title")})
            for item_id, meta in zip(ids, metadata)
        ]

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

        Commits start a background merge once the delta passes its bound; this is for a quiet moment (`vitrine index
        merge`) or before copying the index. Call it as a writer (under the writers' lock where several processes
        write)."""

        def change():
            if not self.vectors.rows:
                return None, False
            return Record(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)), True

        return self._write(change, merge=True)

    def search(
        self, queries: np.ndarray, k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> list[list[SearchHit]]:
        """Top-k products per query (rows of `queries`), restricted to those matching every filter.

        The metadata may be newer than the vectors in memory (another process committed after `refresh`): products
        it no longer has are left out of the hits, and filters keep only the keys these vectors hold.
        """
        queries = checked_queries(queries, k, self.dim)
        # Current (the usual case: `refresh` ran) and nothing to read but rows: no transaction; a product deleted
        # meanwhile is left out, as one deleted just before would be.
        if (not filters or self._filter_key(filters) in self._filter_cache) and int(
            self.meta.get_state("generation")
        ) == self.generation:
            return self._search(queries, k, filters, behind=False)
        with self.meta.snapshot():  # the generation, the filter's keys and the hits' rows: one committed state
            return self._search(queries, k, filters, behind=int(self.meta.get_state("generation")) != self.generation)

    def _search(
        self, queries: np.ndarray, k: int, filters: Mapping[str, str | Sequence[str]] | None, behind: bool
    ) -> list[list[SearchHit]]:
        allowed = None
        if filters:
            allowed = self._matching_keys(filters, behind)
            if not len(allowed):
                return [[] for _ in queries]
        k = min(k, self.vectors.live if allowed is None else len(allowed))
        if not k:
            return [[] for _ in queries]
        scores, keys = self.vectors.search(queries, k, allowed)
        # not behind: these vectors are the committed state, so every key they return exists (rows from memory)
        products = self.meta.products(sorted({int(key) for key in keys.ravel() if key >= 0}), live=not behind)
        return [
            [
                SearchHit(products[key]["id"], score, products[key], score)
                for score, key in zip(row_s.tolist(), row_k.tolist())
                if key in products
            ]
            for row_s, row_k in zip(scores, keys)
        ]

    def _matching_keys(self, filters: Mapping[str, str | Sequence[str]], behind: bool) -> np.ndarray:
        """The keys matching `filters` that these vectors hold; kept per generation (a query's named values repeat)."""
        if behind:  # only then can the metadata hold keys these vectors lack
            return self.vectors.live_subset(np.asarray(self.meta.matching_keys(filters), dtype=np.int64))
        wanted = self._filter_key(filters)
        keys = self._filter_cache.get(wanted)
        if keys is None:
            keys = np.asarray(self.meta.matching_keys(filters), dtype=np.int64)
            if (
                len(self._filter_cache) >= FILTER_CACHE_SIZE
                or next(iter(self._filter_cache), wanted)[0] != self.generation
            ):
                self._filter_cache.clear()
            self._filter_cache[wanted] = keys
        return keys

    def _filter_key(self, filters: Mapping[str, str | Sequence[str]]) -> tuple:
        return (
            self.generation,
            tuple(
                sorted(
                    (name, (values,) if isinstance(values, str) else tuple(sorted(values)))
                    for name, values in filters.items()
                )
            ),
        )

    def lexical(
        self, words: Sequence[str], k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None,
        vector: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """Products whose title or attribute values hold the words, by BM25 (SQLite FTS5), best first; with `vector`,
        each hit's cosine to it as well."""
        ranked = self.meta.lexical(words, k, filters)  # one statement: one committed state
        # rows of existing keys from memory; one deleted since the statement is left out, as if deleted just before
        products = self.meta.products([key for key, _ in ranked], live=True)
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

    def page(
        self, offset: int, limit: int, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> tuple[int, list[dict]]:
        return self.meta.page(offset, limit, filters)

    def fields(self) -> set[str]:
        return self.meta.fields()

    def field_values(self, per_field: int = 50) -> dict[str, list[tuple[str, int]]]:
        return self.meta.field_values(per_field)

    def get_state(self, name: str, default: str | None = None) -> str | None:
        return self.meta.get_state(name, default)

    def min_commit(self, requested: int) -> int:
        """Bulk loads: a build's commits grow with the index (at least a quarter of it), so that the base is rewritten
        as few times as before (inline past the delta's hard bound, else in the background); small writes append."""
        return max(requested, self.vectors.live // 4)

    def stats(self) -> dict:
        return {
            "model": self.model, "dim": self.dim, "vectors": self.vectors.live, "products": self.meta.count(),
            "generation": self.generation, "index_kind": self.vectors.kind, "dead_vectors": len(self.vectors.dead),
            "base_generation": self.base_generation, "delta_vectors": self.vectors.delta.live,
            "delta_rows": self.vectors.rows, "delta_bytes": self.delta_bytes, "backend": "faiss",
            "index": str(self.directory),
        }

    def close(self) -> None:
        """Close the index once the background merge in flight, if any, has finished (it takes the writers' lock to
        commit: do not close while holding it)."""
        if self._merger is not None:
            self._merger.join()
        self.meta.close()
