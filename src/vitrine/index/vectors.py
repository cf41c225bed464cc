"""One FAISS index over product keys, of kind flat (exact), HNSW or IVF-PQ, with the same add/remove/search."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from vitrine.errors import InvalidInput, UnknownName
from vitrine.index.plan import IndexOptions, ef_search, pq_bytes

IVFPQ_MIN_VECTORS = 256 * 39  # FAISS wants ~39 training points per centroid, and PQ has 256 per sub-quantizer


class VectorIndex:
    """Inner-product search over L2-normalised vectors labelled by int64 keys.

    HNSW graphs cannot drop vectors, so removed HNSW keys become `dead` (excluded from every search)
    until the graph is rebuilt; flat and IVF-PQ remove for real. `hide` makes keys dead in any kind (a base index
    under a delta's tombstones, see `delta.py`) and `purge` then removes them for real where the kind can.
    """

    def __init__(self, index: faiss.Index, kind: str, dim: int, options: IndexOptions, dead: set[int] | None = None):
        self.index, self.kind, self.dim, self.options = index, kind, dim, options
        self.dead: set[int] = set(dead or ())
        self._rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # cache for `_stored_vectors`
        self._dead_sel = None  # cache for `_dead_selector`
        self._sorted: np.ndarray | None = None  # cache for `_sorted_keys`: every stored key, sorted
        self._dead_array: np.ndarray | None = None  # cache for `_dead_keys`: the dead keys, sorted

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
            raise InvalidInput(f"unknown index kind {kind!r}")
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
        keys = np.asarray(keys, dtype=np.int64)
        if not len(keys):
            return
        self._rows = None
        if self._sorted is not None and (not len(self._sorted) or keys.min() > self._sorted[-1]):
            self._sorted = np.concatenate([self._sorted, np.sort(keys)])  # keys only grow: no sort of the whole index
        else:
            self._sorted = None
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), keys)

    def remove(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        if self.kind == "hnsw":
            self.hide(keys)
        else:  # IVF's hash-table direct map only removes through an IDSelectorArray
            self._rows, self._sorted, self._dead_sel, self._dead_array = None, None, None, None
            self.index.remove_ids(faiss.IDSelectorArray(np.asarray(keys, dtype=np.int64)))
            self.dead.difference_update(int(k) for k in keys)

    def hide(self, keys: np.ndarray) -> None:
        """Make the stored, live `keys` dead (excluded from every search) without touching the index: any kind.

        Costs O(len(keys) log n), nothing in proportion to the index: a delta's tombstones over a large base."""
        keys = self.live_subset(np.unique(np.asarray(keys, dtype=np.int64)))
        if len(keys):
            self._dead_sel, self._dead_array = None, None
            self.dead.update(keys.tolist())

    def purge(self) -> None:
        """Remove the dead vectors for real where the kind can (flat, IVF-PQ); HNSW keeps them dead until rebuilt."""
        if self.dead and self.kind != "hnsw":
            self.remove(self._dead_keys())

    def live_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of every live vector; exact for flat and HNSW, PQ-decoded for IVF-PQ."""
        keys = self._stored_keys()
        if self.dead:
            keys = keys[~np.isin(keys, self._dead_keys())]
        return keys, self.reconstruct(keys)

    def reconstruct(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        if not len(keys):
            return np.zeros((0, self.dim), np.float32)
        if self.kind == "ivfpq":
            return self.index.reconstruct_batch(keys)
        return self._stored_vectors()[2][self._positions(keys)]

    def live_subset(self, keys: np.ndarray) -> np.ndarray:
        """The `keys` this index holds alive, in their order (keys a newer commit added, or that are dead here,
        dropped)."""
        keys = np.asarray(keys, dtype=np.int64)
        return keys[self.holds(keys)]

    def holds(self, keys: np.ndarray) -> np.ndarray:
        """Which of `keys` this index holds alive, as a mask: a binary search each, no pass over the index."""
        keys = np.asarray(keys, dtype=np.int64)
        held = _members(keys, self._sorted_keys())
        if self.dead and held.any():
            if self._dead_array is None and 8 * len(keys) < len(self.dead):  # a few keys: no sorted copy of the dead
                held &= np.fromiter((key not in self.dead for key in keys.tolist()), bool, len(keys))
            else:
                held &= ~_members(keys, self._dead_keys())
        return held

    def _sorted_keys(self) -> np.ndarray:
        if self._sorted is None:
            self._sorted = np.sort(self._stored_keys())
        return self._sorted

    def _dead_keys(self) -> np.ndarray:
        if self._dead_array is None:
            self._dead_array = np.sort(np.fromiter(self.dead, np.int64, len(self.dead)))
        return self._dead_array

    def _stored_keys(self) -> np.ndarray:
        """Every stored key (the dead included), in storage order."""
        if self.kind == "ivfpq":
            invlists = self.index.invlists
            return np.concatenate(
                [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy() for i in range(self.index.nlist)]
                or [np.zeros(0, np.int64)]
            )
        return faiss.vector_to_array(self.index.id_map)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        """Storage rows of `keys` (flat and HNSW); KeyError if any is not stored."""
        sorted_keys, rows, _ = self._stored_vectors()
        where = np.searchsorted(sorted_keys, keys)
        if (where >= len(sorted_keys)).any() or (sorted_keys[np.minimum(where, len(sorted_keys) - 1)] != keys).any():
            raise UnknownName("some keys are not in the index")
        return np.ascontiguousarray(rows[where], dtype=np.int64)

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
        """Top-k (scores, keys) per query among live vectors, or among `allowed` keys (sorted); -1 pads missing results.

        Filters: flat indexes, and filters keeping at most `exact_subset_max` products, are searched by brute
        force over exactly the allowed vectors (exact, and cheaper than a FAISS ID selector, which costs a
        hash-set build per query). Wider filters search the approximate index for enough extra candidates
        to expect k survivors and keep the allowed ones; a query left with fewer than k falls back to brute force.
        """
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            if self.kind == "flat" or len(allowed) <= self.options.exact_subset_max:
                return self._exact_subset(queries, k, allowed)
            return self._post_filtered(queries, k, allowed)
        return self._approximate(queries, k, breadth=k)

    def _approximate(self, queries: np.ndarray, k: int, breadth: int) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered search for `k` results among live vectors, exploring at least `breadth` candidates."""
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(breadth, ef_search(self.stored, self.options)))
        elif self.kind == "ivfpq":
            params = faiss.SearchParametersIVF(nprobe=min(self.index.nlist, self.options.ivf_nprobe))
        else:
            params = faiss.SearchParameters()
        if self.dead:
            params.sel = self._dead_selector()
        return self.index.search(queries, k, params=params)

    def _post_filtered(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        share = len(allowed) / max(1, self.live)
        wanted = min(self.live, math.ceil(2 * k / share))
        scores, keys = self._approximate(queries, wanted, breadth=wanted + ef_search(self.stored, self.options))
        where = np.minimum(np.searchsorted(allowed, keys), len(allowed) - 1)
        keep = (keys >= 0) & (allowed[where] == keys)
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_keys = np.full((len(queries), k), -1, np.int64)
        for i in range(len(queries)):
            found = np.flatnonzero(keep[i])[:k]
            if len(found) < min(k, len(allowed)):
                out_scores[i], out_keys[i] = (a[0] for a in self._exact_subset(queries[i : i + 1], k, allowed))
            else:
                out_scores[i, : len(found)], out_keys[i, : len(found)] = scores[i, found], keys[i, found]
        return out_scores, out_keys

    def _dead_selector(self) -> faiss.IDSelector:
        """Excludes dead keys: a bitmap over the key range, built once per change."""
        if self._dead_sel is None:
            dead = self._dead_keys()
            bits = np.zeros(int(dead.max()) + 1, dtype=bool)
            bits[dead] = True
            packed = np.packbits(bits, bitorder="little")
            self._dead_sel = (faiss.IDSelectorNot(faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))), packed)
        return self._dead_sel[0]

    def _exact_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the allowed keys only: correct however selective the filter."""
        top = min(k, len(allowed))
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_keys = np.full((len(queries), k), -1, np.int64)
        if self.kind == "ivfpq":
            all_scores = queries @ self.reconstruct(allowed).T
        else:  # read the allowed rows in place: no copy of the vectors
            matrix, positions = self._stored_vectors()[2], self._positions(allowed)
            all_scores = np.empty((len(queries), len(allowed)), np.float32)
            for i, query in enumerate(np.ascontiguousarray(queries, dtype=np.float32)):
                faiss.fvec_inner_products_by_idx(
                    faiss.swig_ptr(all_scores[i]), faiss.swig_ptr(query), faiss.swig_ptr(matrix),
                    faiss.swig_ptr(positions), self.dim, 1, len(positions),
                )
        for i, scores in enumerate(all_scores):
            best = np.argpartition(-scores, top - 1)[:top] if top < len(scores) else np.arange(len(scores))
            best = best[np.lexsort((allowed[best], -scores[best]))]  # by score, then key: stable under ties
            out_scores[i, :top], out_keys[i, :top] = scores[best], allowed[best]
        return out_scores, out_keys


def _members(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which of `keys` are in `sorted_set` (sorted, unique): a binary search each, no pass over the set."""
    if not len(sorted_set):
        return np.zeros(len(keys), bool)
    where = np.minimum(np.searchsorted(sorted_set, keys), len(sorted_set) - 1)
    return sorted_set[where] == keys


def _trained_ivfpq(vectors: np.ndarray, options: IndexOptions) -> faiss.Index:
    n, dim = vectors.shape
    nlist = int(min(max(16, 4 * math.sqrt(n)), max(1, n // 39), 65536))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_bytes(dim, options), 8, faiss.METRIC_INNER_PRODUCT)
    if n < IVFPQ_MIN_VECTORS:
        raise InvalidInput(f"IVF-PQ needs at least {IVFPQ_MIN_VECTORS} vectors to train, got {n}")
    sample = (
        vectors if n <= 64 * nlist else vectors[np.random.default_rng(0).choice(n, 64 * nlist, replace=False)]
    )  # k-means needs ~39/centroid
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index
