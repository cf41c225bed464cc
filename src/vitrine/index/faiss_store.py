"""The embedded vector store: FAISS vectors + SQLite metadata, committed together by generation number.

A commit writes `vectors-<n+1>.faiss` (temp file, then rename) and only then, in one SQLite
transaction, the metadata rows and `generation = n+1`. A crash before that transaction leaves
generation n and its file untouched; files of other generations are removed on open.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitrine.index.metadata import MetadataStore

DB_NAME = "index.sqlite"


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    metadata: dict


class IndexMismatchError(ValueError):
    """The index was built with another model (or dimension) than the one querying it."""


class FaissStore:
    """Exact inner-product search over L2-normalised vectors, with attribute filters of any selectivity."""

    def __init__(self, directory: str | os.PathLike, model: str, dim: int):
        import faiss

        self._faiss = faiss
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.meta = MetadataStore(self.directory / DB_NAME)
        stored_model, stored_dim = self.meta.get_state("model"), self.meta.get_state("dim")
        if stored_model is None:
            with self.meta.transaction():
                self.meta.set_state("model", model)
                self.meta.set_state("dim", str(dim))
                self.meta.set_state("generation", "0")
        elif stored_model != model or int(stored_dim) != dim:
            self.meta.close()
            raise IndexMismatchError(f"index {self.directory} was built with {stored_model} ({stored_dim}-d); "
                                     f"it cannot be queried or extended with {model} ({dim}-d). Rebuild it with that model or use --model {stored_model}.")
        self.model, self.dim = model, dim
        self.generation = int(self.meta.get_state("generation"))
        path = self._vectors_path(self.generation)
        self.index = faiss.read_index(str(path)) if path.is_file() else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        for stale in self.directory.glob("vectors-*.faiss*"):
            if stale != path:
                stale.unlink()

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

    def _commit_vectors(self) -> None:
        """Write the next generation's vector file; the caller's transaction then makes it current."""
        path = self._vectors_path(self.generation + 1)
        tmp = path.with_name(path.name + ".tmp")
        self._faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self.meta.set_state("generation", str(self.generation + 1))

    def _finish_commit(self) -> None:
        old = self._vectors_path(self.generation)
        self.generation += 1
        old.unlink(missing_ok=True)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping] | None = None, state: Mapping[str, str] | None = None) -> None:
        """Add products, or replace the vector and metadata of ids already present; atomic.

        `state` entries (e.g. a build's resume position) are committed in the same transaction.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one upsert")
        metadata = metadata or [{} for _ in ids]
        rows = [(item_id, meta.get("title"), {k: v for k, v in meta.items() if k not in ("id", "title")}) for item_id, meta in zip(ids, metadata)]
        snapshot = self._faiss.clone_index(self.index)
        try:
            with self.meta.transaction():
                keys = np.asarray(self.meta.upsert(rows), dtype=np.int64)
                self.index.remove_ids(self._faiss.IDSelectorBatch(keys))
                self.index.add_with_ids(vectors, keys)
                for name, value in (state or {}).items():
                    self.meta.set_state(name, value)
                self._commit_vectors()
        except BaseException:
            self.index = snapshot  # keep memory equal to what is on disk
            raise
        self._finish_commit()

    def delete(self, ids: Sequence[str]) -> int:
        """Remove products by id; returns how many existed. Atomic."""
        snapshot = self._faiss.clone_index(self.index)
        try:
            with self.meta.transaction():
                keys = np.asarray(self.meta.delete(list(ids)), dtype=np.int64)
                if len(keys):
                    self.index.remove_ids(self._faiss.IDSelectorBatch(keys))
                self._commit_vectors()
        except BaseException:
            self.index = snapshot
            raise
        self._finish_commit()
        return len(keys)

    def search(self, queries: np.ndarray, k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None) -> list[list[SearchHit]]:
        """Top-k products per query (rows of `queries`), restricted to those matching every filter."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries must be {self.dim}-d, got {queries.shape[1]}")
        if k < 1:
            raise ValueError("k must be >= 1")
        params = None
        if filters:
            allowed = np.asarray(self.meta.matching_keys(filters), dtype=np.int64)
            if not len(allowed):
                return [[] for _ in queries]
            # Exact search over the allowed ids: correct however few products the filter keeps.
            params = self._faiss.SearchParameters(sel=self._faiss.IDSelectorBatch(allowed))
        k = min(k, self.index.ntotal) if self.index.ntotal else 0
        if not k:
            return [[] for _ in queries]
        scores, keys = self.index.search(queries, k, params=params)
        products = self.meta.products(sorted({int(key) for key in keys.ravel() if key >= 0}))
        return [[SearchHit(products[int(key)]["id"], float(score), products[int(key)]) for score, key in zip(row_s, row_k) if key >= 0]
                for row_s, row_k in zip(scores, keys)]

    def stats(self) -> dict:
        return {"model": self.model, "dim": self.dim, "vectors": int(self.index.ntotal), "products": self.meta.count(),
                "generation": self.generation, "index_type": type(self.index.index).__name__ if hasattr(self.index, "index") else type(self.index).__name__}

    def close(self) -> None:
        self.meta.close()
