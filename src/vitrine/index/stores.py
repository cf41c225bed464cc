"""Open a vector store from its index spec: the factory above the backends (`faiss_store`, `milvus_store`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from vitrine.disk import locked
from vitrine.errors import InvalidInput
from vitrine.index.plan import IndexOptions
from vitrine.index.store import MilvusTarget, VectorStore, is_milvus


def open_store(
    spec: str | os.PathLike, model: str | None = None, dim: int | None = None,
    options: IndexOptions | Mapping[str, object] | None = None, create: bool = False, attributes: Sequence[str] = (),
) -> VectorStore:
    """Open the store `spec` names; with `create` (and `model`, `dim`) make it if missing.

    `model` given for an existing store must be the one that built it (IndexMismatchError otherwise).
    `attributes` become typed, indexed scalar fields where the backend has them (Milvus); others are stored too.
    """
    if create and (model is None or dim is None):
        raise InvalidInput("creating a store needs the model name and its dimension")
    if is_milvus(spec):
        from vitrine.index.milvus_store import MilvusStore

        target = MilvusTarget.parse(str(spec))
        if create:
            return MilvusStore(target, model=model, dim=dim, options=options, attributes=attributes)
        return MilvusStore.open(target, model=model)
    from vitrine.index.faiss_store import FaissStore

    if create:
        return FaissStore(spec, model=model, dim=dim, options=options)
    return FaissStore.open(spec, model=model)


def store_exists(spec: str | os.PathLike) -> bool:
    """Whether `spec` already holds a vitrine index (without opening a server connection for FAISS)."""
    if is_milvus(spec):
        from vitrine.index.milvus_store import MilvusStore

        target = MilvusTarget.parse(str(spec))
        if target.is_lite and not Path(target.uri).exists():  # opening would create the file
            return False
        return MilvusStore.exists(target)
    from vitrine.index.faiss_store import DB_NAME

    return (Path(spec) / DB_NAME).is_file()


def writers_lock(spec: str | os.PathLike) -> AbstractContextManager:
    """The lock every writer of an embedded index holds to open it and for each commit (`write.lock` in its directory:
    the service, `index build|add|delete`, a snapshot), so that a commit never interleaves with another or with a copy.
    Milvus orders writes itself: nothing to hold."""
    return nullcontext() if is_milvus(spec) else locked(spec)
