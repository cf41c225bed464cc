"""The delta: what commits append between two rewrites of the base index, so that a write costs its batch.

A large store's vectors are a *base* (`vectors-<base>.faiss`, written whole by a merge) plus a *delta log*
(`delta-<base>.log`) that every later commit appends one record to: the batch's keys and float32 vectors, and
its tombstones (the keys it deleted or replaced). SQLite holds the commit point: `base` (the generation whose
merge wrote the base file) and `delta_bytes` (the committed length of its log), set in the transaction that holds
the commit's metadata rows, so rows, vectors and tombstones commit together or not at all.

Why one append-only log per base rather than an immutable file per commit:

- A commit is one `pwrite` plus one `fsync` of its own bytes (and the SQLite commit), whatever the delta holds;
  the log's directory entry is fsynced once, with its first record. A file per commit costs a create, a rename
  and a directory fsync each time, and a delta of 100,000 one-product commits would be 100,000 files to open on
  every load, or need a compaction of small files: a second kind of commit with its own write amplification.
- Readers never see a half-written record: a reader reads up to the committed length its SQLite snapshot
  names and no further, and bytes below a committed length are never rewritten. Bytes past it (a commit that
  died before its SQLite commit, or whose transaction rolled back) are ignored, and only a writer truncates them,
  inside its write transaction (BEGIN IMMEDIATE, which every commit takes before it touches a file), so a
  truncation never races another writer's append. Each record carries a CRC-32: damage inside the committed
  length is an error that names the file, never searched.
- A worker's `refresh()` reads only the bytes committed since its last one: in proportion to the writes it missed.
- A merge writes a new base, which starts a new log: empty, or holding the records committed while a background
  merge ran (their bytes copied as they are: a record holds no offset); base numbers are commit generations and never
  reused, so a name is never reused either, and a reader holding an older state finds its files or finds them
  gone (and reloads), never other contents under the same name.

In memory a store holds `LayeredVectors`: the base `VectorIndex` (HNSW, IVF-PQ or flat) with the delta's
tombstones hidden (`VectorIndex.hide`: dead keys, as HNSW already keeps them), and the delta's vectors in a flat
index searched exactly. A search merges the base's top-k with the delta's; an attribute filter's keys are split
between the two and each side answers exactly as before (brute force over the allowed keys, or post-filtered).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitrine.errors import Damaged
from vitrine.failpoints import failpoint
from vitrine.index.plan import IndexOptions
from vitrine.index.vectors import VectorIndex

MAGIC = b"VDR1"
_HEADER = struct.Struct("<4sIIII")  # magic, vectors, tombstones, dimension, CRC-32 of the payload


class DeltaLogError(Damaged):
    """A delta log is shorter than its committed length, or damaged inside it."""

    code = "damaged_index"


@dataclass(frozen=True)
class Record:
    """One commit's change: vectors added under `keys`, and the keys `removed` (deleted or replaced)."""

    keys: np.ndarray
    vectors: np.ndarray
    removed: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.keys) + len(self.removed)


def encode(keys: np.ndarray, vectors: np.ndarray, removed: np.ndarray, dim: int) -> bytes:
    """One log record (little-endian): header, keys (int64), vectors (float32 rows), removed keys (int64)."""
    keys, removed = np.asarray(keys, "<i8"), np.asarray(removed, "<i8")
    vectors = np.ascontiguousarray(vectors, "<f4").reshape(len(keys), dim)
    payload = keys.tobytes() + vectors.tobytes() + removed.tobytes()
    return _HEADER.pack(MAGIC, len(keys), len(removed), dim, zlib.crc32(payload)) + payload


def decode(data: bytes, dim: int, origin: str = "delta log", offset: int = 0) -> list[Record]:
    """The records of `data` (whole records, as committed); DeltaLogError names the byte where one is damaged."""
    records, at = [], 0
    while at < len(data):
        where = f"{origin} is damaged at byte {offset + at}"
        if len(data) - at < _HEADER.size:
            raise DeltaLogError(f"{where}: a record header is cut short")
        magic, n, m, d, crc = _HEADER.unpack_from(data, at)
        if magic != MAGIC or d != dim:
            raise DeltaLogError(f"{where}: not a delta record of {dim}-d vectors")
        size = 8 * n + 4 * n * d + 8 * m
        payload = data[at + _HEADER.size : at + _HEADER.size + size]
        if len(payload) != size or zlib.crc32(payload) != crc:
            raise DeltaLogError(f"{where}: the record's checksum does not match")
        keys = np.frombuffer(payload, "<i8", n, 0).astype(np.int64)
        vectors = np.frombuffer(payload, "<f4", n * d, 8 * n).astype(np.float32).reshape(n, dim)
        removed = np.frombuffer(payload, "<i8", m, 8 * n + 4 * n * d).astype(np.int64)
        records.append(Record(keys, vectors, removed))
        at += _HEADER.size + size
    return records


def read_log(path: Path, start: int, end: int) -> bytes | None:
    """Bytes [start, end) of the log, or None when it is missing or shorter (a merge removed it meanwhile)."""
    if end <= start:
        return b""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
    except FileNotFoundError:
        return None
    return data if len(data) == end - start else None


def append_log(path: Path, offset: int, data: bytes) -> int:
    """Write `data` at `offset` (the committed length) and fsync; returns the new length, to commit in SQLite.

    Call it inside the commit's write transaction: a tail past `offset` is a commit that never committed, and is
    cut first. The log's directory entry is made durable with its first record.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size < offset:
            raise DeltaLogError(f"{path} holds {size} bytes, fewer than the {offset} committed: the index is damaged")
        if size > offset:
            os.ftruncate(fd, offset)
        half = len(data) // 2
        _pwrite_all(fd, data[:half], offset)
        failpoint("index.delta_partial")  # half a record on disk, nothing synced or committed
        _pwrite_all(fd, data[half:], offset + half)
        os.fsync(fd)
    finally:
        os.close(fd)
    if offset == 0:
        fsync_dir(path.parent)
    return offset + len(data)


def truncate_log(path: Path, length: int) -> None:
    """Cut what lies past the committed `length` (call it holding the write transaction)."""
    try:
        if path.stat().st_size > length:
            os.truncate(path, length)
    except FileNotFoundError:
        pass


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class LayeredVectors:
    """The vectors a store searches: its base index with the delta's tombstones hidden, plus the delta's vectors.

    Offers what the store reads from `VectorIndex` (search, reconstruct, live_subset, live_items, live, kind, dead),
    over both layers; with an empty delta every call is the base's own.
    """

    def __init__(self, base: VectorIndex):
        self.base = base
        self.delta = VectorIndex.empty(base.dim, base.options)
        self.rows = 0  # vectors and tombstones appended since the base was written: what the merge rule measures

    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def dead(self) -> set[int]:
        """The base's dead keys (HNSW's removed vectors, and the delta's tombstones over the base)."""
        return self.base.dead

    @property
    def live(self) -> int:
        return self.base.live + self.delta.live

    @property
    def options(self) -> IndexOptions:
        return self.base.options

    @options.setter
    def options(self, options: IndexOptions) -> None:
        self.base.options = self.delta.options = options

    def apply(self, record: Record) -> None:
        """One committed record: its tombstones hide keys of either layer, its vectors join the delta."""
        if len(record.removed):
            self.delta.remove(self.delta.live_subset(record.removed))
            self.base.hide(record.removed)
        self.delta.add(record.keys, record.vectors)
        self.rows += record.rows

    def fold(self) -> VectorIndex:
        """The base with the delta merged in (dead vectors dropped where the kind can); the delta is left empty."""
        self.base.purge()
        self.base.add(*self.delta.live_items())
        self.delta, self.rows = VectorIndex.empty(self.dim, self.options), 0
        return self.base

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`VectorIndex.search` over both layers: each answers its own keys, the best k of the two are kept."""
        if not self.delta.stored:
            return self.base.search(queries, k, allowed)
        if allowed is None:
            parts = [index.search(queries, min(k, index.live)) for index in (self.base, self.delta) if index.live]
        else:
            allowed = np.asarray(allowed, dtype=np.int64)
            in_delta = self.delta.holds(allowed)
            parts = [
                index.search(queries, min(k, len(keys)), keys)
                for index, keys in ((self.base, allowed[~in_delta]), (self.delta, allowed[in_delta]))
                if len(keys)
            ]
        return _best(parts, len(queries), k)

    def reconstruct(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        if not self.delta.stored:
            return self.base.reconstruct(keys)
        in_delta = self.delta.holds(keys)
        out = np.empty((len(keys), self.dim), np.float32)
        out[in_delta] = self.delta.reconstruct(keys[in_delta])
        out[~in_delta] = self.base.reconstruct(keys[~in_delta])
        return out

    def live_subset(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        if not self.delta.stored:
            return self.base.live_subset(keys)
        return keys[self.base.holds(keys) | self.delta.holds(keys)]

    def live_items(self) -> tuple[np.ndarray, np.ndarray]:
        (base_keys, base_vectors), (delta_keys, delta_vectors) = self.base.live_items(), self.delta.live_items()
        return np.concatenate([base_keys, delta_keys]), np.concatenate([base_vectors, delta_vectors])


def _best(parts: list[tuple[np.ndarray, np.ndarray]], queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, keys) per query of several searches' answers, by score then key; -1 pads."""
    out_scores = np.full((queries, k), -np.inf, np.float32)
    out_keys = np.full((queries, k), -1, np.int64)
    if not parts:
        return out_scores, out_keys
    scores = np.concatenate([p[0] for p in parts], axis=1).astype(np.float32)
    keys = np.concatenate([p[1] for p in parts], axis=1)
    scores[keys < 0] = -np.inf
    for i in range(queries):
        order = np.lexsort((keys[i], -scores[i]))[:k]
        order = order[keys[i, order] >= 0]
        out_scores[i, : len(order)], out_keys[i, : len(order)] = scores[i, order], keys[i, order]
    return out_scores, out_keys
