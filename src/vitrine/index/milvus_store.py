"""The Milvus vector store: the same interface as FaissStore, over Milvus Lite (a local file) or a Milvus server.

One collection holds the products: `id` (primary key), `vector`, `title`, one indexed VARCHAR field per declared
catalog attribute, and every other attribute (predicted tags, later columns) in Milvus's dynamic field. The model,
dimension, index options, build positions and the names of the dynamic attributes are collection properties.

Writes are upserts by id, followed by an explicit flush; every read uses Strong consistency, so a write that
returned is visible to the next search from any client. Milvus has no multi-statement transactions, so
`upsert(..., state=...)` writes the rows first and the state after them: a crash in between leaves rows that a
resumed build upserts again (same ids, so the same result), never a state that points past missing rows.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from vitrine.failpoints import failpoint
from vitrine.index.milvus_filters import filter_expression
from vitrine.index.plan import IndexOptions, ef_search, plan_index, pq_bytes
from vitrine.index.store import IndexMismatchError, LexicalUnsupported, MilvusTarget, SearchHit, checked_queries, checked_rows

ID_MAX_BYTES = 512
TITLE_MAX_BYTES = 8192
ATTRIBUTE_MAX_BYTES = 2048
RESERVED = ("id", "vector", "title")
WRITE_CHUNK = 2000  # rows per upsert request (well under gRPC's message limit at 1,024-d)
FIELD_SCAN_MAX = 200_000  # field_values() counts over at most this many products
_UPGRADE = {"flat": 0, "hnsw": 1, "ivfpq": 2}
_IVF_MIN_VECTORS = 256 * 39

_lite_users: Counter = Counter()  # Milvus Lite file -> open stores in this process (the server stops with the last)
_lite_lock = threading.Lock()
log = logging.getLogger(__name__)


def milvus_index(kind: str, n: int, dim: int, options: IndexOptions, lite: bool) -> tuple[str, dict]:
    """The Milvus index type and build parameters for the planner's `kind` (IVF-PQ is IVF_SQ8 on Milvus Lite)."""
    if kind == "flat":
        return "FLAT", {}
    if kind == "hnsw":
        return "HNSW", {"M": options.hnsw_m, "efConstruction": options.hnsw_ef_construction}
    nlist = int(min(max(16, 4 * math.sqrt(max(n, 1))), 65536))
    if lite:  # Milvus Lite 3 has no IVF_PQ yet; SQ8 is its compressed IVF (4x smaller than float32)
        return "IVF_SQ8", {"nlist": nlist}
    return "IVF_PQ", {"nlist": nlist, "m": pq_bytes(dim, options), "nbits": 8}


def _search_params(kind: str, n: int, k: int, options: IndexOptions, build: dict) -> dict:
    if kind == "hnsw":
        return {"ef": max(k, ef_search(n, options))}
    if kind == "ivfpq":
        return {"nprobe": min(build.get("nlist", options.ivf_nprobe), options.ivf_nprobe)}
    return {}


def _connect(target: MilvusTarget):
    from pymilvus import MilvusClient

    if not target.is_lite:
        return MilvusClient(uri=target.uri, token=target.token or "")
    try:
        client = MilvusClient(uri=target.uri)
    except Exception as error:
        raise RuntimeError(f"cannot open Milvus Lite file {target.uri}: Milvus Lite allows one process per file, and another "
                           f"process (a running `vitrine serve`?) probably holds it. Stop that process, or use a Milvus server "
                           f"(milvus:http://host:19530) for several processes. ({error})") from error
    with _lite_lock:
        _lite_users[target.uri] += 1
    return client


def _disconnect(target: MilvusTarget, client) -> None:
    client.close()
    if not target.is_lite:
        return
    with _lite_lock:
        _lite_users[target.uri] -= 1
        last = _lite_users[target.uri] <= 0
        if last:
            del _lite_users[target.uri]
    if last:  # release the file lock now, not at exit, so another process can open the file
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(target.uri)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


class MilvusStore:
    """Inner-product search over L2-normalised vectors in one Milvus collection, with attribute filters."""

    backend = "milvus"

    def __init__(self, target: MilvusTarget, model: str, dim: int, options: IndexOptions | Mapping[str, object] | None = None,
                 attributes: Sequence[str] = ()):
        """Create the collection if missing, else open it (refusing another model or dimension)."""
        self.target, self.collection = target, target.collection
        self.client = _connect(target)
        self._closed = False
        try:
            if not self.client.has_collection(self.collection):
                self._create(model, dim, attributes)
            self._read_properties()
            if self.model is None:
                raise ValueError(f"Milvus collection {self.collection!r} at {target.uri} was not made by vitrine (no vitrine.model property)")
            if self.model != model or self.dim != dim:
                raise IndexMismatchError(f"index {target} was built with {self.model} ({self.dim}-d); it cannot be queried or "
                                         f"extended with {model} ({dim}-d). Rebuild it with that model or use --model {self.model}.")
            if options:
                merged = options if isinstance(options, IndexOptions) else replace(self.options, **options)
                if merged != self.options:
                    self._set_properties({"vitrine.options": merged.to_json()})
                    self.options = merged
            self._ensure_index()
        except BaseException:
            _disconnect(target, self.client)
            raise
        self.generation = 0
        self._values_cache: dict | None = None

    @classmethod
    def exists(cls, target: MilvusTarget) -> bool:
        client = _connect(target)
        try:
            return bool(client.has_collection(target.collection))
        finally:
            _disconnect(target, client)

    @classmethod
    def open(cls, target: MilvusTarget, model: str | None = None) -> "MilvusStore":
        """Open an existing collection; with `model`, refuse a mismatch."""
        if target.is_lite and not os.path.exists(target.uri):  # opening would create an empty file
            raise FileNotFoundError(f"no vitrine index in {target} (no such Milvus Lite file)")
        client = _connect(target)
        try:
            if not client.has_collection(target.collection):
                raise FileNotFoundError(f"no vitrine index in {target} (no collection {target.collection!r})")
            properties = client.describe_collection(target.collection).get("properties", {})
        finally:
            _disconnect(target, client)
        if "vitrine.model" not in properties:
            raise ValueError(f"Milvus collection {target.collection!r} at {target.uri} was not made by vitrine")
        return cls(target, model or properties["vitrine.model"], int(properties["vitrine.dim"]))

    # ---- collection layout -----------------------------------------------------------------------
    def _create(self, model: str, dim: int, attributes: Sequence[str]) -> None:
        from pymilvus import DataType

        declared = [a for a in dict.fromkeys(attributes) if a not in RESERVED and a.isidentifier() and not a.startswith("_")]
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("title", DataType.VARCHAR, max_length=TITLE_MAX_BYTES, nullable=True)
        for name in declared:
            schema.add_field(name, DataType.VARCHAR, max_length=ATTRIBUTE_MAX_BYTES, nullable=True)
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name="vector", index_name="vector", index_type="FLAT", metric_type="IP")
        for name in declared:
            index_params.add_index(field_name=name, index_name=name, index_type="INVERTED")
        self.client.create_collection(self.collection, schema=schema, index_params=index_params, consistency_level="Strong")
        self.client.alter_collection_properties(self.collection, properties={
            "vitrine.model": model, "vitrine.dim": str(dim), "vitrine.options": IndexOptions().to_json(), "vitrine.kind": "flat",
            "vitrine.fields": "[]", "vitrine.state": "{}"})

    def _read_properties(self) -> None:
        described = self.client.describe_collection(self.collection)
        properties = described.get("properties", {})
        self.model = properties.get("vitrine.model")
        self.dim = int(properties.get("vitrine.dim", 0))
        self.options = IndexOptions.from_json(properties.get("vitrine.options") or IndexOptions().to_json())
        self.kind = properties.get("vitrine.kind", "flat")
        self.declared = [f["name"] for f in described["fields"] if f["name"] not in RESERVED]
        self.dynamic = json.loads(properties.get("vitrine.fields") or "[]")
        self.state = json.loads(properties.get("vitrine.state") or "{}")
        self.index_params = json.loads(properties.get("vitrine.index_params") or "{}")

    def _set_properties(self, properties: Mapping[str, str]) -> None:
        self.client.alter_collection_properties(self.collection, properties=dict(properties))

    def _ensure_index(self) -> None:
        """Make sure the vector index exists and the collection is loaded (an interrupted re-index leaves neither)."""
        if "vector" not in self.client.list_indexes(self.collection, field_name="vector"):
            self._create_vector_index(self.kind, self._count_rows())
        self._load()
        self._size = self._count_rows()  # sizes the HNSW search breadth; updated on every write

    def _load(self) -> None:
        try:
            self._load_once()
        except Exception:
            if not self.target.is_lite or not self._drop_lite_sidecars():
                raise
            self._load_once()  # Milvus Lite rebuilds the dropped sidecars from the segments

    def _load_once(self) -> None:
        if self.target.replicas:
            self.client.load_collection(self.collection, replica_number=self.target.replicas)
        else:
            self.client.load_collection(self.collection)

    def _drop_lite_sidecars(self) -> int:
        """Remove Milvus Lite's per-segment index files so that loading rebuilds them; returns how many were removed.

        Milvus Lite writes these sidecars in place, not atomically, so a process killed while writing one leaves a
        truncated file that fails every later load ("File is too small"). They are derived from the segments, which
        hold the rows, so dropping them loses nothing.
        """
        pattern = os.path.join(glob.escape(self.target.uri), "collections", glob.escape(self.collection), "partitions", "*",
                               "indexes", "*")
        sidecars = [path for path in glob.glob(pattern) if path.endswith((".idx", ".sidx"))]
        for path in sidecars:
            os.remove(path)
        if sidecars:
            log.warning("Milvus Lite could not load %s; removed %d index sidecar file(s) (left truncated by an interrupted "
                        "process?) and rebuilt them from the stored rows", self.target, len(sidecars))
        return len(sidecars)

    def _create_vector_index(self, kind: str, n: int) -> None:
        index_type, params = milvus_index(kind, n, self.dim, self.options, self.target.is_lite)
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name="vector", index_name="vector", index_type=index_type, metric_type="IP", params=params)
        self.client.create_index(self.collection, index_params)
        self._set_properties({"vitrine.kind": kind, "vitrine.index_params": json.dumps(params)})
        self.kind, self.index_params = kind, params

    def _replan(self) -> None:
        """Move to the index kind the catalog's size now calls for (never back down), as FaissStore does."""
        n = self._size = self._count_rows()
        target = plan_index(n, self.dim, self.options).kind
        if _UPGRADE[target] <= _UPGRADE[self.kind] or (target == "ivfpq" and n < _IVF_MIN_VECTORS):
            return
        self.client.release_collection(self.collection)
        self.client.drop_index(self.collection, "vector")
        self._create_vector_index(target, n)
        self._load()

    def _count_rows(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"]) if rows else 0

    # ---- writes ----------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping] | None = None,
               state: Mapping[str, str] | None = None) -> None:
        """Add products, or replace those whose id exists; `state` entries are saved after the rows (see module doc)."""
        vectors, metadata = checked_rows(ids, vectors, metadata, self.dim)
        rows = [self._row(item_id, vector, meta) for item_id, vector, meta in zip(ids, vectors, metadata)]
        for start in range(0, len(rows), WRITE_CHUNK):
            self.client.upsert(self.collection, rows[start : start + WRITE_CHUNK])
        self.client.flush(self.collection)
        failpoint("index.vectors_written")  # rows durable and visible, state not yet saved
        new_fields = sorted({key for row in rows for key in row if key not in RESERVED and key not in self.declared} - set(self.dynamic))
        properties = {}
        if new_fields:
            self.dynamic = sorted(set(self.dynamic) | set(new_fields))
            properties["vitrine.fields"] = json.dumps(self.dynamic)
        if state:
            self.state = {**self.state, **state}
            properties["vitrine.state"] = json.dumps(self.state, sort_keys=True)
        if properties:
            self._set_properties(properties)
        failpoint("index.committed")
        self._replan()
        self._wrote()

    def _row(self, item_id: str, vector: np.ndarray, meta: Mapping) -> dict:
        if not isinstance(item_id, str) or not item_id:
            raise ValueError("ids must be non-empty strings")
        if _utf8_len(item_id) > ID_MAX_BYTES:
            raise ValueError(f"product id {item_id[:40]!r}... is over {ID_MAX_BYTES} bytes")
        title = meta.get("title")
        if title is not None and _utf8_len(str(title)) > TITLE_MAX_BYTES:
            raise ValueError(f"product {item_id!r}: title is over {TITLE_MAX_BYTES} bytes")
        row = {"id": item_id, "vector": vector, "title": None if title is None else str(title)}
        row.update({name: None for name in self.declared})
        for key, value in meta.items():
            if key in ("id", "title") or value is None:
                continue
            if key == "vector" or key.startswith("$") or not key.strip():
                raise ValueError(f"product {item_id!r}: attribute name {key!r} is reserved or empty")
            if key in self.declared:
                value = str(value)
                if _utf8_len(value) > ATTRIBUTE_MAX_BYTES:
                    raise ValueError(f"product {item_id!r}: {key} is over {ATTRIBUTE_MAX_BYTES} bytes")
            row[key] = value
        return row

    def delete(self, ids: Sequence[str]) -> int:
        """Remove products by id; returns how many existed."""
        ids = [i for i in dict.fromkeys(ids) if isinstance(i, str) and i]
        if not ids:
            return 0
        existing = [row["id"] for row in self.client.get(self.collection, ids=ids, output_fields=["id"])]
        if existing:
            self.client.delete(self.collection, ids=existing)
            self.client.flush(self.collection)
            self._size = self._count_rows()
            self._wrote()
        return len(existing)

    def _wrote(self) -> None:
        self.generation += 1
        self._values_cache = None

    # ---- reads -----------------------------------------------------------------------------------
    def _output_fields(self) -> list[str]:
        return ["title", *self.declared, "$meta"]

    @staticmethod
    def _metadata(item_id: str, entity: Mapping) -> dict:
        out = {"id": item_id, "title": entity.get("title")}
        out.update({k: v for k, v in entity.items() if k not in RESERVED and v is not None})
        return out

    def search(self, queries: np.ndarray, k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None) -> list[list[SearchHit]]:
        """Top-k products per query (rows of `queries`), restricted to those matching every filter."""
        queries = checked_queries(queries, k, self.dim)
        expression = filter_expression(filters, self.declared) if filters else ""
        if expression is None:
            return [[] for _ in queries]
        params = _search_params(self.kind, self._size, k, self.options, self.index_params)
        results = self.client.search(self.collection, data=list(queries), limit=min(k, 16384), filter=expression,
                                     output_fields=self._output_fields(), search_params={"metric_type": "IP", "params": params},
                                     consistency_level="Strong")
        return [[SearchHit(hit["id"], float(hit["distance"]), self._metadata(hit["id"], hit.get("entity", {})), float(hit["distance"])) for hit in row]
                for row in results]

    def lexical(self, words: Sequence[str], k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None,
                vector: np.ndarray | None = None) -> list[SearchHit]:
        # Milvus 2.5+ ranks by BM25 only on a VARCHAR field with an analyzer and a BM25 function, set when the
        # collection is created; vitrine's collections do not declare one yet.
        raise LexicalUnsupported("lexical and hybrid search need the embedded store (an index directory): this Milvus "
                                 "collection has no BM25 full-text field; use mode 'vector'")

    def sample(self, n: int) -> list[dict]:
        rows = self.client.query(self.collection, filter="", limit=max(1, n), output_fields=self._output_fields())
        return [self._metadata(row["id"], row) for row in rows]

    def page(self, offset: int, limit: int, filters: Mapping[str, str | Sequence[str]] | None = None) -> tuple[int, list[dict]]:
        """(matching products, a page of them in Milvus's scan order, stable between calls); Milvus caps offset + limit at 16,384."""
        expression = filter_expression(filters, self.declared) if filters else ""
        if expression is None:
            return 0, []
        counted = self.client.query(self.collection, filter=expression, output_fields=["count(*)"], consistency_level="Strong")
        total = int(counted[0]["count(*)"]) if counted else 0
        if offset >= total or limit < 1:
            return total, []
        rows = self.client.query(self.collection, filter=expression or "id != ''", offset=int(offset), limit=int(limit),
                                 output_fields=self._output_fields(), consistency_level="Strong")
        return total, [self._metadata(row["id"], row) for row in rows]

    def product(self, product_id: str) -> dict | None:
        rows = self.client.get(self.collection, ids=[product_id], output_fields=self._output_fields())
        return self._metadata(product_id, rows[0]) if rows else None

    def fields(self) -> set[str]:
        """Every attribute name a product may have: the declared fields and the dynamic ones written so far."""
        return set(self.declared) | set(self.dynamic)

    def field_values(self, per_field: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Each attribute's most common values with product counts (over the first FIELD_SCAN_MAX products)."""
        if self._values_cache is None:
            counts: dict[str, Counter] = {}
            iterator = self.client.query_iterator(self.collection, batch_size=4096, limit=FIELD_SCAN_MAX, filter="",
                                                  output_fields=[*self.declared, "$meta"])
            try:
                while batch := iterator.next():
                    for row in batch:
                        for key, value in row.items():
                            if key not in RESERVED and value is not None:
                                counts.setdefault(key, Counter())[str(value)] += 1
            finally:
                iterator.close()
            self._values_cache = {field: sorted(c.items(), key=lambda kv: (-kv[1], kv[0])) for field, c in sorted(counts.items())}
        return {field: rows[:per_field] for field, rows in self._values_cache.items()}

    def get_state(self, name: str, default: str | None = None) -> str | None:
        return self.state.get(name, default)

    def min_commit(self, requested: int) -> int:
        """Writes cost what they add (no file rewrite): commit as often as asked."""
        return requested

    def refresh(self) -> bool:
        """Reread the collection's properties (other clients may have written); caches keyed on `generation` expire."""
        self._read_properties()
        self.generation += 1
        self._values_cache = None
        return True

    def stats(self) -> dict:
        n = self._count_rows()
        return {"model": self.model, "dim": self.dim, "vectors": n, "products": n, "generation": self.generation,
                "index_kind": self.kind, "dead_vectors": 0, "backend": "milvus-lite" if self.target.is_lite else "milvus",
                "index": str(self.target)}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _disconnect(self.target, self.client)
