"""The embedded vector store: a FAISS index + SQLite metadata, committed together by generation number.

A commit writes `vectors-<n+1>.faiss` (temp file, fsync, rename) and only then, in one SQLite
transaction, the metadata rows and `generation = n+1`. A crash before that transaction leaves
generation n and its file untouched; files of other generations are removed on open.

The index kind follows the catalog (see `plan.py`): exact while small, HNSW above `exact_max`,
IVF-PQ when HNSW would not fit the memory budget. Conversions happen inside a commit.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from vitrine.failpoints import failpoint
from vitrine.index.metadata import MetadataStore
from vitrine.index.plan import IndexOptions, plan_index
from vitrine.index.store import IndexMismatchError, SearchHit, checked_queries, checked_rows
from vitrine.index.vectors import IVFPQ_MIN_VECTORS, VectorIndex

DB_NAME = "index.sqlite"
__all__ = ["DB_NAME", "FaissStore", "IndexMismatchError", "SearchHit"]


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
        self._load()
        for stale in self.directory.glob("vectors-*.faiss*"):
            if stale != self._vectors_path(self.generation):
                stale.unlink()

    def _load(self) -> None:
        """(Re)read the committed generation: what is on disk is the truth. Its number, kind and dead keys are read
        in one snapshot; when another process commits (and removes that generation's file) before the file is
        read, the newer generation is read instead."""
        while True:
            with self.meta.snapshot():
                generation, kind = int(self.meta.get_state("generation")), self.meta.get_state("kind", "flat")
                dead = self.meta.dead_keys()
            path = self._vectors_path(generation)
            try:
                vectors = VectorIndex.read(path, kind, self.dim, self.options, dead) if path.is_file() else None
            except RuntimeError:  # faiss: the file went away between the check and the read
                vectors = None
            if vectors is None and int(self.meta.get_state("generation")) != generation:
                continue
            self.generation, self.vectors = generation, vectors or VectorIndex.empty(self.dim, self.options)
            return

    def refresh(self) -> bool:
        """Reread the index if another process committed since; returns whether it did."""
        if int(self.meta.get_state("generation")) == self.generation:
            return False
        self._load()
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

    def _replan(self) -> None:
        """Move to the index kind the catalog's size now calls for; rebuild HNSW once many of its vectors are dead."""
        current = self.vectors
        target = plan_index(current.live, self.dim, self.options).kind
        upgrade = {"flat": 0, "hnsw": 1, "ivfpq": 2}
        if upgrade[target] > upgrade[current.kind] and not (target == "ivfpq" and current.live < IVFPQ_MIN_VECTORS):
            keys, vectors = current.live_items()
            self.vectors = VectorIndex.build(target, keys, vectors, self.options)
        elif current.kind == "hnsw" and len(current.dead) > self.options.compact_dead_fraction * current.stored:
            keys, vectors = current.live_items()
            self.vectors = VectorIndex.build("hnsw", keys, vectors, self.options)

    def _commit(self, state: Mapping[str, str] | None) -> None:
        """Inside the caller's transaction: write the next generation's file and point the metadata at it."""
        self._replan()
        path = self._vectors_path(self.generation + 1)
        tmp = path.with_name(path.name + ".tmp")
        self.vectors.write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        failpoint("index.vectors_written")  # new file in place, metadata not yet committed
        for name, value in (state or {}).items():
            self.meta.set_state(name, value)
        self.meta.set_dead_keys(self.vectors.dead)
        self.meta.set_state("kind", self.vectors.kind)
        self.meta.set_state("generation", str(self.generation + 1))

    def _finish_commit(self) -> None:
        failpoint("index.committed")
        old = self._vectors_path(self.generation)
        self.generation += 1
        old.unlink(missing_ok=True)

    def _rollback(self) -> None:
        """After a failed commit, drop what changed in memory and reread the committed generation."""
        self._vectors_path(self.generation + 1).unlink(missing_ok=True)
        self._load()

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping] | None = None, state: Mapping[str, str] | None = None) -> None:
        """Add products, or replace the vector and metadata of ids already present; atomic.

        `state` entries (e.g. a build's resume position) are committed in the same transaction.
        """
        vectors, metadata = checked_rows(ids, vectors, metadata, self.dim)
        rows = [(item_id, meta.get("title"), {k: v for k, v in meta.items() if k not in ("id", "title")}) for item_id, meta in zip(ids, metadata)]
        try:
            with self.meta.transaction():
                keys, replaced = self.meta.upsert(rows)
                self.vectors.remove(np.asarray(replaced, dtype=np.int64))
                self.vectors.add(np.asarray(keys, dtype=np.int64), vectors)
                self._commit(state)
        except BaseException:
            self._rollback()
            raise
        self._finish_commit()

    def delete(self, ids: Sequence[str]) -> int:
        """Remove products by id; returns how many existed. Atomic."""
        try:
            with self.meta.transaction():
                keys = np.asarray(self.meta.delete(list(ids)), dtype=np.int64)
                self.vectors.remove(keys)
                self._commit(None)
        except BaseException:
            self._rollback()
            raise
        self._finish_commit()
        return len(keys)

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
        """A commit rewrites the vector file, so commits grow with the index: at least a quarter of it."""
        return max(requested, self.vectors.live // 4)

    def stats(self) -> dict:
        return {"model": self.model, "dim": self.dim, "vectors": self.vectors.live, "products": self.meta.count(),
                "generation": self.generation, "index_kind": self.vectors.kind, "dead_vectors": len(self.vectors.dead),
                "backend": "faiss", "index": str(self.directory)}

    def close(self) -> None:
        self.meta.close()
