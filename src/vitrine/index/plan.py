"""Which FAISS index a catalog gets: exact while small, HNSW when it is large, IVF-PQ when memory is tight."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from vitrine.config_file import ConfigFile, loads_object
from vitrine.errors import ConfigError

KINDS = ("flat", "hnsw", "ivfpq")
_IDMAP_BYTES = 48  # int64 label plus IndexIDMap2's reverse hash-map entry, per vector


@dataclass(frozen=True)
class IndexOptions(ConfigFile):
    """How a store picks and tunes its index; saved with the index (read back like every config: an unknown key or a
    wrong type is refused)."""

    config_name = "index options"

    exact_max: int = 100_000  # up to this many vectors, search is exact (flat)
    memory_budget: int | None = None  # bytes for the vector index; None: half of this machine's RAM
    approximate: str = "auto"  # auto | hnsw | ivfpq: the kind used above exact_max
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int | None = None  # None: grows with the catalog, see `ef_search`
    ivf_nprobe: int = 64
    pq_bytes: int | None = None  # bytes per vector for IVF-PQ; None: dim // 2 (8x smaller than float32)
    exact_subset_max: int = 20_000  # a filter keeping at most this many products is searched exactly
    compact_dead_fraction: float = 0.25  # rebuild HNSW when this share of its vectors is deleted
    # Writes (faiss_store, delta.py): a commit appends to the delta log until the delta would hold more than
    # delta_max_fraction of the base's vectors or delta_max_vectors rows (vectors and tombstones); that commit
    # merges (rewrites the base). The delta is searched by brute force: 20,000 rows of 384-d cost about what an
    # HNSW query over 1M does. Bases of at most delta_min_base vectors (~30 MB at 384-d) are rewritten by every
    # commit; delta_max_vectors=0 rewrites on every commit (the path before the delta).
    delta_max_fraction: float = 0.1
    delta_max_vectors: int = 20_000
    delta_min_base: int = 20_000

    def __post_init__(self):
        if self.approximate not in ("auto", "hnsw", "ivfpq"):
            raise ConfigError(f"approximate must be auto, hnsw or ivfpq, got {self.approximate!r}")
        if self.exact_max < 0 or self.exact_subset_max < 0:
            raise ConfigError("exact_max and exact_subset_max must be >= 0")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ConfigError("memory_budget must be positive")
        if min(self.hnsw_m, self.hnsw_ef_construction, self.hnsw_ef_search or 1, self.ivf_nprobe) < 1:
            raise ConfigError("HNSW and IVF parameters must be >= 1")
        if not 0 < self.compact_dead_fraction <= 1:
            raise ConfigError("compact_dead_fraction must be in (0, 1]")
        if self.delta_max_fraction < 0 or self.delta_max_vectors < 0 or self.delta_min_base < 0:
            raise ConfigError("delta_max_fraction, delta_max_vectors and delta_min_base must be >= 0")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IndexOptions":
        return cls.from_dict(loads_object(text, "index options", ConfigError))

    def budget(self) -> int:
        return self.memory_budget if self.memory_budget is not None else system_memory() // 2


@dataclass(frozen=True)
class IndexPlan:
    kind: str
    estimated_bytes: int
    reason: str


def system_memory() -> int:
    """Physical RAM in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def ef_search(n: int, options: IndexOptions) -> int:
    """HNSW search breadth: as configured, or 128 at 100k vectors growing as n^0.6 (64..1024).

    Fitted to benchmarks/search_latency.py: on vectors with the real embeddings' covariance, M=32 needs
    ef 128 for recall@10 ~0.95 at 100k and ef ~450 at 1M.
    """
    if options.hnsw_ef_search is not None:
        return options.hnsw_ef_search
    return int(min(1024, max(64, 128 * (max(n, 1) / 100_000) ** 0.6)))


def pq_bytes(dim: int, options: IndexOptions) -> int:
    """Bytes per vector for IVF-PQ: the largest divisor of `dim` not above the requested size."""
    wanted = options.pq_bytes or max(1, dim // 2)
    return max(m for m in range(1, min(wanted, dim) + 1) if dim % m == 0)


def bytes_per_vector(kind: str, dim: int, options: IndexOptions) -> float:
    """Resident bytes one vector costs in an index of this kind (FAISS's own layouts)."""
    if kind == "flat":
        return 4 * dim + _IDMAP_BYTES
    if kind == "hnsw":
        # level 0 keeps 2*M neighbours, upper levels add ~1/(M-1) of that again; plus levels and offsets
        return 4 * dim + _IDMAP_BYTES + 2 * options.hnsw_m * 4 * (1 + 1 / max(1, options.hnsw_m - 1)) + 12
    if kind == "ivfpq":
        return pq_bytes(dim, options) + 8 + _IDMAP_BYTES  # code, id in its list, direct-map entry
    raise ConfigError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")


def plan_index(n: int, dim: int, options: IndexOptions) -> IndexPlan:
    """Exact up to `exact_max` vectors; then HNSW if it fits the memory budget, else IVF-PQ."""
    budget = options.budget()

    def cost(kind: str) -> int:
        return int(bytes_per_vector(kind, dim, options) * n)

    if n <= options.exact_max and cost("flat") <= budget:
        return IndexPlan("flat", cost("flat"), f"{n} vectors <= exact_max {options.exact_max}: exact search")
    if options.approximate in ("auto", "hnsw") and cost("hnsw") <= budget:
        return IndexPlan(
            "hnsw",
            cost("hnsw"),
            f"{n} vectors above exact_max; HNSW needs {cost('hnsw') / 2**20:.0f} MiB of a {budget / 2**20:.0f} MiB "
            "budget",
        )
    if cost("ivfpq") <= budget:
        return IndexPlan(
            "ivfpq",
            cost("ivfpq"),
            f"{n} vectors; HNSW would need {cost('hnsw') / 2**20:.0f} MiB, over the "
            f"{budget / 2**20:.0f} MiB budget (or IVF-PQ was asked for): IVF-PQ",
        )
    raise MemoryError(
        f"{n} vectors of {dim}-d need {cost('ivfpq') / 2**20:.0f} MiB even as IVF-PQ, over the "
        f"{budget / 2**20:.0f} MiB budget: raise the budget or move to a distributed engine (docs/scaling.md)"
    )
