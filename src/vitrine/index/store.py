"""What every vector store offers: the store protocol and the types its backends share (no backend is imported here).

`vitrine.index.stores.open_store` picks the backend from the index spec. An index spec is either a directory (the
embedded FAISS + SQLite store) or `milvus:<target>`:
`milvus:./catalog.db` is Milvus Lite (one local file, no server), `milvus:http://host:19530` a Milvus
server or cluster. The same commands work on both (`vitrine index`, `search`, `serve`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vitrine.errors import InvalidInput, Unavailable

MILVUS_PREFIX = "milvus:"


@dataclass(slots=True)  # not frozen: a search makes hundreds, and a frozen dataclass costs 3x to construct
class SearchHit:
    id: str
    # what the hits are ranked by: the cosine for a vector search, BM25 for a lexical one, the fused score after ranking
    score: float
    metadata: dict
    similarity: float | None = None  # the cosine to the query vector, where it is known


class IndexMismatchError(InvalidInput):
    """The index was built with another model (or dimension) than the one querying it."""

    code = "index_mismatch"


class LexicalUnsupported(InvalidInput):
    """This backend cannot rank by words (BM25)."""

    code = "lexical_unsupported"


class StoreUnavailable(Unavailable):
    """The store's server cannot answer now (down, restarting, still loading); the same call may succeed later.

    The message says which server and why, for the user (the service answers it as a 503)."""


class VectorStore(Protocol):
    """Products (id, vector, title, attributes) searchable by inner product with attribute filters."""

    model: str
    dim: int
    generation: int

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping] | None = None,
        state: Mapping[str, str] | None = None,
    ) -> None: ...
    def delete(self, ids: Sequence[str]) -> int: ...
    def search(
        self, queries: np.ndarray, k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> list[list[SearchHit]]: ...
    def lexical(
        self, words: Sequence[str], k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None,
        vector: np.ndarray | None = None,
    ) -> list[SearchHit]: ...
    def sample(self, n: int) -> list[dict]: ...
    def vectors_of(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]: ...
    def product(self, product_id: str) -> dict | None: ...
    def page(
        self, offset: int, limit: int, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> tuple[int, list[dict]]: ...
    def fields(self) -> set[str]: ...
    def field_values(self, per_field: int = 50) -> dict[str, list[tuple[str, int]]]: ...
    def get_state(self, name: str, default: str | None = None) -> str | None: ...
    def min_commit(self, requested: int) -> int: ...
    def refresh(self) -> bool: ...
    def stats(self) -> dict: ...
    def close(self) -> None: ...


def checked_rows(
    ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping] | None, dim: int
) -> tuple[np.ndarray, Sequence[Mapping]]:
    """An upsert's vectors as contiguous float32 and its metadata rows, after the checks every backend makes."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape != (len(ids), dim):
        raise InvalidInput(f"expected vectors of shape ({len(ids)}, {dim}), got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise InvalidInput("vectors contain NaN or infinity")
    if len(set(ids)) != len(ids):
        raise InvalidInput("duplicate ids in one upsert")
    if any(not isinstance(i, str) or not i for i in ids):
        raise InvalidInput("ids must be non-empty strings")
    metadata = metadata or [{} for _ in ids]
    if len(metadata) != len(ids):
        raise InvalidInput(f"{len(ids)} ids but {len(metadata)} metadata rows")
    return vectors, metadata


def checked_queries(queries: np.ndarray, k: int, dim: int) -> np.ndarray:
    """Search queries as a contiguous float32 (Q, dim) array, after the checks every backend makes."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise InvalidInput(f"queries must be {dim}-d, got shape {queries.shape}")
    if k < 1:
        raise InvalidInput("k must be >= 1")
    return queries


def is_milvus(spec: str | os.PathLike) -> bool:
    return str(spec).startswith(MILVUS_PREFIX)


def images_dir(spec: str | os.PathLike) -> Path:
    """Where the service keeps product images for this index, unless told otherwise."""
    if not is_milvus(spec):
        return Path(spec) / "images"
    target = MilvusTarget.parse(str(spec))
    if target.is_lite:
        return Path(target.uri.removesuffix(".db") + "-images")
    return Path("runs") / "serve" / "milvus-images" / target.collection


@dataclass(frozen=True)
class MilvusTarget:
    """`milvus:<path.db | http(s)://host:port>[#collection]`; token and replicas from $VITRINE_MILVUS_TOKEN /
    _REPLICAS."""

    uri: str
    collection: str = "vitrine_products"
    token: str | None = None
    replicas: int | None = (
        None  # in-memory replicas on a cluster ($VITRINE_MILVUS_REPLICAS); None: the server's default
    )

    @property
    def is_lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @classmethod
    def parse(cls, spec: str, environ: Mapping[str, str] | None = None) -> "MilvusTarget":
        environ = os.environ if environ is None else environ
        if not spec.startswith(MILVUS_PREFIX):
            raise InvalidInput(f"a Milvus index spec starts with {MILVUS_PREFIX!r}, got {spec!r}")
        body = spec[len(MILVUS_PREFIX) :]
        uri, _, collection = body.partition("#")
        collection = collection or cls.collection
        if not uri:
            raise InvalidInput(
                f"{spec!r}: give a Milvus Lite file (milvus:./catalog.db) or a server URI (milvus:http://host:19530)"
            )
        if not collection.replace("_", "a").isalnum() or collection[0].isdigit():
            raise InvalidInput(
                f"Milvus collection name {collection!r} must be letters, digits and _ (not starting with a digit)"
            )
        replicas = environ.get("VITRINE_MILVUS_REPLICAS")
        if replicas is not None and (not replicas.isdigit() or int(replicas) < 1):
            raise InvalidInput(f"VITRINE_MILVUS_REPLICAS must be a whole number >= 1, got {replicas!r}")
        target = cls(uri, collection, environ.get("VITRINE_MILVUS_TOKEN") or None, int(replicas) if replicas else None)
        if target.is_lite:
            if not uri.endswith(".db"):
                raise InvalidInput(f"a Milvus Lite file name ends in .db (milvus:./catalog.db), got {uri!r}")
            target = cls(os.path.abspath(uri), collection)
        return target

    def __str__(self) -> str:
        suffix = "" if self.collection == MilvusTarget.collection else f"#{self.collection}"
        return f"{MILVUS_PREFIX}{self.uri}{suffix}"
