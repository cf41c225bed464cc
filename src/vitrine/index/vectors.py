"""One FAISS index over product keys, of kind flat (exact), HNSW or IVF-PQ, with the same add/remove/search."""
from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from vitrine.index.plan import IndexOptions, ef_search, pq_bytes

IVFPQ_MIN_VECTORS = 256 * 39  # FAISS wants ~39 training points per centroid, and PQ has 256 per sub-quantizer


class VectorIndex:
    """Inner-product search over L2-normalised vectors labelled by int64 keys.

    HNSW graphs cannot drop vectors, so removed HNSW keys become `dead` (excluded from every search)
    until the graph is rebuilt; flat and IVF-PQ remove for real.
    """

    def __init__(self, index: faiss.Index, kind: str, dim: int, options: IndexOptions, dead: set[int] | None = None):
        self.index, self.kind, self.dim, self.options = index, kind, dim, options
        self.dead: set[int] = set(dead or ())
        self._rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # cache for `_stored_vectors`

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, dim: int, options: IndexOptions) -> "VectorIndex":
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), "flat", dim, options)

    @classmethod
    def build(cls, kind: str, keys: np.ndarray, vectors: np.ndarray, options: IndexOptions) -> "VectorIndex":
        """A new index of `kind` holding exactly these vectors (IVF-PQ is trained on them)."""
        dim = vectors.shape[1]
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "hnsw":
            graph = faiss.IndexHNSWFlat(dim, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = options.hnsw_ef_construction
            index = faiss.IndexIDMap2(graph)
        elif kind == "ivfpq":
            index = _trained_ivfpq(vectors, options)
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        built = cls(index, kind, dim, options)
        built.add(keys, vectors)
        return built

    @classmethod
    def read(cls, path: Path, kind: str, dim: int, options: IndexOptions, dead: set[int]) -> "VectorIndex":
        index = faiss.read_index(str(path))
        if kind == "ivfpq":
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return cls(index, kind, dim, options, dead)

    def write(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    # --- contents -----------------------------------------------------------------------------
    @property
    def stored(self) -> int:
        """Vectors held, the dead included."""
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        return self.stored - len(self.dead)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self._rows = None
        if len(keys):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(keys, dtype=np.int64))

    def remove(self, keys: np.ndarray) -> None:
        self._rows = None
        if not len(keys):
            return
        if self.kind == "hnsw":
            self.dead.update(int(k) for k in keys)
        else:  # IVF's hash-table direct map only removes through an IDSelectorArray
            self.index.remove_ids(faiss.IDSelectorArray(np.asarray(keys, dtype=np.int64)))

    def live_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of every live vector; exact for flat and HNSW, PQ-decoded for IVF-PQ."""
        if self.kind == "ivfpq":
            invlists = self.index.invlists
            keys = np.concatenate([faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                                   for i in range(self.index.nlist)] or [np.zeros(0, np.int64)])
        else:
            keys = faiss.vector_to_array(self.index.id_map)
        if self.dead:
            keys = keys[~np.isin(keys, np.fromiter(self.dead, np.int64))]
        return keys, self.reconstruct(keys)

    def reconstruct(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        if not len(keys):
            return np.zeros((0, self.dim), np.float32)
        if self.kind == "ivfpq":
            return self.index.reconstruct_batch(keys)
        sorted_keys, rows, matrix = self._stored_vectors()
        where = np.searchsorted(sorted_keys, keys)
        if (where >= len(sorted_keys)).any() or (sorted_keys[np.minimum(where, len(sorted_keys) - 1)] != keys).any():
            raise KeyError("some keys are not in the index")
        return matrix[rows[where]]

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sorted keys, their rows, all stored vectors) as zero-copy numpy views of flat/HNSW storage."""
        if self._rows is None:
            inner = faiss.downcast_index(self.index.index)
            storage = faiss.downcast_index(inner.storage) if self.kind == "hnsw" else inner
            matrix = faiss.rev_swig_ptr(storage.get_xb(), self.stored * self.dim).reshape(self.stored, self.dim)
            keys = faiss.vector_to_array(self.index.id_map)
            order = np.argsort(keys, kind="stable")
            self._rows = (keys[order], order, matrix)
        return self._rows

    # --- search -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, keys) per query among live vectors, or among `allowed` keys; -1 pads missing results."""
        pool = self.live if allowed is None else len(allowed)
        if self.kind != "flat" and allowed is not None and len(allowed) <= self.options.exact_subset_max:
            return self._exact_subset(queries, k, allowed)
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        elif self.dead:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self.dead, np.int64)))
        else:
            selector = None
        # A filter leaves fewer candidates per visited node/list: widen the search in proportion, up to 8x.
        widen = 1 if allowed is None else min(8, math.ceil(self.stored / max(1, pool)))
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(k, ef_search(self.stored, self.options) * widen))
        elif self.kind == "ivfpq":
            params = faiss.SearchParametersIVF(nprobe=min(self.index.nlist, self.options.ivf_nprobe * widen))
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return self.index.search(queries, k, params=params)

    def _exact_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the allowed keys only: correct however selective the filter."""
        allowed = np.asarray(allowed, dtype=np.int64)
        scores = queries @ self.reconstruct(allowed).T
        top = min(k, len(allowed))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_keys = np.full((len(queries), k), -1, np.int64)
        out_scores[:, :top] = np.take_along_axis(scores, order, axis=1)
        out_keys[:, :top] = allowed[order]
        return out_scores, out_keys


def _trained_ivfpq(vectors: np.ndarray, options: IndexOptions) -> faiss.Index:
    n, dim = vectors.shape
    nlist = int(min(max(16, 4 * math.sqrt(n)), max(1, n // 39), 65536))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_bytes(dim, options), 8, faiss.METRIC_INNER_PRODUCT)
    if n < IVFPQ_MIN_VECTORS:
        raise ValueError(f"IVF-PQ needs at least {IVFPQ_MIN_VECTORS} vectors to train, got {n}")
    sample = vectors if n <= 64 * nlist else vectors[np.random.default_rng(0).choice(n, 64 * nlist, replace=False)]  # k-means needs ~39/centroid
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index
