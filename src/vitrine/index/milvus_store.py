"""The Milvus vector store: the same interface as FaissStore, over Milvus Lite (a local file) or a Milvus server.

One collection holds the products: `id` (primary key), `vector`, `title`, one indexed VARCHAR field per declared
catalog attribute, and every other attribute (predicted tags, later columns) in Milvus's dynamic field. The model,
dimension, index options, build positions and the names of the dynamic attributes are collection properties.

Writes are upserts by id, followed by an explicit flush; every read uses Strong consistency, so a write that
returned is visible to the next search from any client. Milvus has no multi-statement transactions, so
`upsert(..., state=...)` writes the rows first and the state after them: a crash in between leaves rows that a
resumed build upserts again (same ids, so the same result), never a state that points past missing rows.

Servers older than Milvus 2.5 (the server version is read once, at open): their VARCHAR fields cannot be null, so a
collection created there stores "" for a missing title or declared attribute ("" reads back as missing, matches no
filter and is not counted as a value; a collection's own schema says which encoding it uses), and before 2.4 its
declared attributes get Trie indexes instead of INVERTED ones. Milvus Lite and 2.5+ store nulls.

Lexical (BM25) search: on Milvus 2.5+ and Milvus Lite, a new collection also gets `_text`, a BM25 function from it to
`_text_bm25` (sparse, SPARSE_INVERTED_INDEX) and the collection property `vitrine.text`, which says it has them. `_text`
holds the words FaissStore's FTS5 table reads (the title and the catalog's attribute values, not predicted tags) as
that table's tokenizer cuts and stems them, and queries are cut the same way: Milvus Lite 3.2 ignores analyzer filters
(no stemmer), so Milvus's own analyzer only splits on spaces here, and both backends match the same words. Their
scores differ: Milvus's IDF is Lucene's, log(1 + (N - n + 0.5) / (n + 0.5)), where FTS5 drops a word most products
hold, and Milvus Lite 3.2 takes each segment's own statistics. A collection without `vitrine.text` (a server
before 2.5, or made before this) raises `LexicalUnsupported`, and the ranker's hybrid mode runs as vector there.

On a server, a call that finds it unreachable (down, restarting) reconnects and is tried once more; if it fails again,
or the server is still loading the collection after a restart, it raises `StoreUnavailable` (the service's 503).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import sqlite3
import threading
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from vitrine.errors import Conflict, InvalidInput, MissingFile
from vitrine.failpoints import failpoint
from vitrine.index.metadata import _attribute_text
from vitrine.index.milvus_filters import filter_expression
from vitrine.index.plan import IndexOptions, ef_search, plan_index, pq_bytes
from vitrine.index.store import (
    IndexMismatchError,
    LexicalUnsupported,
    MilvusTarget,
    SearchHit,
    StoreUnavailable,
    checked_queries,
    checked_rows,
)

ID_MAX_BYTES = 512
TITLE_MAX_BYTES = 8192
ATTRIBUTE_MAX_BYTES = 2048
TEXT_FIELD, SPARSE_FIELD = "_text", "_text_bm25"  # not catalog names: declared attributes never start with "_"
TEXT_MAX_BYTES = 65535  # Milvus's longest VARCHAR
RESERVED = ("id", "vector", "title", TEXT_FIELD, SPARSE_FIELD)
WRITE_CHUNK = 2000  # rows per upsert request (well under gRPC's message limit at 1,024-d)
FIELD_SCAN_MAX = 200_000  # field_values() counts over at most this many products
QUERY_MAX = 16384  # rows one query returns at most (offset + limit)
_UPGRADE = {"flat": 0, "hnsw": 1, "ivfpq": 2}
_IVF_MIN_VECTORS = 256 * 39
NULLABLE_SINCE = (2, 5)  # nullable scalar fields
INVERTED_SINCE = (2, 4)  # INVERTED indexes on VARCHAR fields (2.3 takes Trie)
FULL_TEXT_SINCE = (2, 5)  # BM25 functions over analyzed VARCHAR fields
FTS5_TOKENIZER = (
    "porter unicode61 remove_diacritics 2"  # the embedded store's (vitrine.index.metadata); _text holds its tokens
)
ANALYZER = {"tokenizer": "standard", "filter": ["lowercase"]}  # splits _text's tokens apart, leaving each as it is
BM25_PARAMS = {"bm25_k1": 1.2, "bm25_b": 0.75}  # FTS5's constants (Milvus Lite's default k1 is 1.5)
CALL_TIMEOUT_S = 30.0  # per server call: without one, pymilvus retries an unanswered call for minutes
FLUSH_TIMEOUT_S = 120.0

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
        try:
            return MilvusClient(uri=target.uri, token=target.token or "")
        except Exception as error:
            if (unavailable := _unreachable(target, error)) is None:
                raise
            raise unavailable from error
    try:
        client = MilvusClient(uri=target.uri)
    except Exception as error:
        raise Conflict(
            f"cannot open Milvus Lite file {target.uri}: Milvus Lite allows one process per file, and another "
            f"process (a running `vitrine serve`?) probably holds it. Stop that process, or use a Milvus server "
            f"(milvus:http://host:19530) for several processes. ({error})",
            code="index_locked",
        ) from error
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


def _search_text(meta: Mapping) -> str:
    """The text BM25 reads for a product: its title and attribute values, as FaissStore's FTS5 table holds them."""
    attributes = {key: value for key, value in meta.items() if key not in ("id", "title")}
    return " ".join(part for part in (str(meta.get("title") or ""), _attribute_text(attributes)) if part)


def _fts5_tokens(texts: Sequence[str]) -> list[str]:
    """Each text as FTS5's porter tokenizer reads it: its stemmed, lower-cased words, space-separated."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{FTS5_TOKENIZER}')")
        db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")
        db.executemany("INSERT INTO t (rowid, x) VALUES (?, ?)", enumerate(texts, start=1))
        tokens: list[list[str]] = [[] for _ in texts]
        for doc, term in db.execute('SELECT doc, term FROM v ORDER BY doc, "offset"'):
            tokens[doc - 1].append(term)
    finally:
        db.close()
    return [" ".join(words).encode("utf-8")[:TEXT_MAX_BYTES].decode("utf-8", "ignore") for words in tokens]


def server_version(text: str) -> tuple[int, ...]:
    """`v2.3.5-lite` -> (2, 3, 5); () when the server names no version this can read (taken as a current one)."""
    parts = []
    for part in text.strip().lstrip("vV").split("-")[0].split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


_UNREACHABLE_WORDS = (
    "fail connecting",
    "server unavailable",
    "service unavailable",
    "not ready",
    "not healthy",
    "retry timeout",
    "retry run out",
    "connection refused",
    "deadline exceeded",
    "socket closed",
    "should create connection first",
)  # a closed client: a new one mends it


def unavailable_kind(error: BaseException) -> str | None:
    """ "unreachable" (down, restarting, not answering in time), "loading" (up, the collection not loaded yet), or None
    (any other error: a bad request, a missing collection)."""
    import grpc
    from pymilvus.exceptions import MilvusException

    unreachable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
    if isinstance(error, grpc.FutureTimeoutError):
        return "unreachable"
    if isinstance(error, grpc.RpcError):
        return "unreachable" if callable(getattr(error, "code", None)) and error.code() in unreachable else None
    if not isinstance(error, MilvusException):
        return None
    code, message = error.code, str(error.message).lower()
    if code == 101 or "not loaded" in message:  # 2.3 reloads a collection by itself after a restart, in ~30 s
        return "loading"
    # pymilvus's CONNECT_FAILED and the server's ServiceUnavailable are both 2; its ServiceNotReady is 1, as is any
    # error pymilvus makes itself, hence the words
    if code in unreachable or code == 2 or any(word in message for word in _UNREACHABLE_WORDS):
        return "unreachable"
    return None


def _quiet_old_server_iterators() -> None:
    """Drop pymilvus's warning that a pre-2.4 server sets no iterator timestamp (it falls back to its own, which is as
    strong): every field_values() and stats() would log it."""
    iterator_log = logging.getLogger("pymilvus.client.iterator.query_iterator")
    if not any(isinstance(f, _NoMvccWarning) for f in iterator_log.filters):
        iterator_log.addFilter(_NoMvccWarning())


class _NoMvccWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


def _address(uri: str) -> str:
    """A server URI without the user:password it may hold (the message may reach an HTTP client)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")).geturl()


@contextlib.contextmanager
def _connected(target: MilvusTarget):
    """A client of `target` for a few calls, let go after them; a server that does not answer is StoreUnavailable."""
    client = _connect(target)
    try:
        yield client
    except FileNotFoundError:  # MissingFile: vitrine's own answer, not the server's
        raise
    except Exception as error:
        if (unavailable := _unreachable(target, error)) is None:
            raise
        raise unavailable from error
    finally:
        _disconnect(target, client)


def _unreachable(target: MilvusTarget, error: Exception) -> StoreUnavailable | None:
    """What to raise when `error` says the server cannot answer now (None: it says something else)."""
    if target.is_lite or unavailable_kind(error) != "unreachable":
        return None
    return StoreUnavailable(
        f"the Milvus server at {_address(target.uri)} is not reachable ({_short(error)}); retry shortly"
    )


def _short(error: BaseException) -> str:
    """The gist of a connection error, for a user's message (pymilvus's and gRPC's are long)."""
    text = (
        getattr(error, "message", None)
        or (error.details() if callable(getattr(error, "details", None)) else None)
        or str(error)
    )
    text = " ".join(str(text).split())
    return text if len(text) <= 160 else text[:157] + "..."


class MilvusStore:
    """Inner-product search over L2-normalised vectors in one Milvus collection, with attribute filters."""

    backend = "milvus"

    def __init__(
        self, target: MilvusTarget, model: str, dim: int, options: IndexOptions | Mapping[str, object] | None = None,
        attributes: Sequence[str] = (),
    ):
        """Create the collection if missing, else open it (refusing another model or dimension)."""
        self.target, self.collection = target, target.collection
        self.client = _connect(target)
        self._closed = False
        try:
            # Milvus Lite has every feature used here; a server is asked once (Trie before INVERTED, "" before nulls)
            self.version = (
                ()
                if target.is_lite
                else server_version(self._call(lambda: self.client.get_server_version(timeout=CALL_TIMEOUT_S)))
            )
            if not self._has(INVERTED_SINCE):
                _quiet_old_server_iterators()
            if not self._call(lambda: self.client.has_collection(self.collection, timeout=CALL_TIMEOUT_S)):
                self._create(model, dim, attributes)
            self._read_properties()
            if self.model is None:
                raise InvalidInput(
                    f"Milvus collection {self.collection!r} at {target.uri} was not made by vitrine (no vitrine.model "
                    "property)"
                )
            if self.model != model or self.dim != dim:
                raise IndexMismatchError(
                    f"index {target} was built with {self.model} ({self.dim}-d); it cannot be queried or "
                    f"extended with {model} ({dim}-d). Rebuild it with that model or use --model {self.model}."
                )
            if options:
                merged = options if isinstance(options, IndexOptions) else self.options.replace(**options)
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
        with _connected(target) as client:
            return bool(client.has_collection(target.collection, timeout=CALL_TIMEOUT_S))

    @classmethod
    def open(cls, target: MilvusTarget, model: str | None = None) -> "MilvusStore":
        """Open an existing collection; with `model`, refuse a mismatch."""
        if target.is_lite and not os.path.exists(target.uri):  # opening would create an empty file
            raise MissingFile(f"no vitrine index in {target} (no such Milvus Lite file)")
        with _connected(target) as client:
            if not client.has_collection(target.collection):
                raise MissingFile(f"no vitrine index in {target} (no collection {target.collection!r})")
            properties = client.describe_collection(target.collection).get("properties", {})
        if "vitrine.model" not in properties:
            raise InvalidInput(f"Milvus collection {target.collection!r} at {target.uri} was not made by vitrine")
        return cls(target, model or properties["vitrine.model"], int(properties["vitrine.dim"]))

    # ---- collection layout -----------------------------------------------------------------------
    def _create(self, model: str, dim: int, attributes: Sequence[str]) -> None:
        from pymilvus import DataType, Function, FunctionType

        declared = [
            a for a in dict.fromkeys(attributes) if a not in RESERVED and a.isidentifier() and not a.startswith("_")
        ]
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        nullable = {"nullable": True} if self._has(NULLABLE_SINCE) else {}  # else "" stands for a missing value (_row)
        schema.add_field("title", DataType.VARCHAR, max_length=TITLE_MAX_BYTES, **nullable)
        for name in declared:
            schema.add_field(name, DataType.VARCHAR, max_length=ATTRIBUTE_MAX_BYTES, **nullable)
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name="vector", index_name="vector", index_type="FLAT", metric_type="IP")
        scalar_index = "INVERTED" if self._has(INVERTED_SINCE) else "Trie"  # 2.3 refuses INVERTED on VARCHAR
        for name in declared:
            index_params.add_index(field_name=name, index_name=name, index_type=scalar_index)
        text = {}
        if self._has(FULL_TEXT_SINCE):
            schema.add_field(
                TEXT_FIELD, DataType.VARCHAR, max_length=TEXT_MAX_BYTES, enable_analyzer=True, analyzer_params=ANALYZER
            )
            schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name=SPARSE_FIELD, function_type=FunctionType.BM25, input_field_names=[TEXT_FIELD],
                    output_field_names=[SPARSE_FIELD],
                )
            )
            index_params.add_index(
                field_name=SPARSE_FIELD, index_name=SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25", params=BM25_PARAMS,
            )
            text = {
                "vitrine.text": json.dumps(
                    {"field": TEXT_FIELD, "tokens": f"fts5 {FTS5_TOKENIZER}", "analyzer": ANALYZER}
                )
            }
        self._call(
            lambda: self.client.create_collection(
                self.collection, schema=schema, index_params=index_params, consistency_level="Strong",
                timeout=CALL_TIMEOUT_S,
            )
        )
        self._set_properties(
            {
                "vitrine.model": model,
                "vitrine.dim": str(dim),
                "vitrine.options": IndexOptions().to_json(),
                "vitrine.kind": "flat",
                "vitrine.fields": "[]",
                "vitrine.state": "{}",
                **text,
            }
        )

    def _has(self, since: tuple[int, ...]) -> bool:
        """Whether the server has the feature that came in Milvus `since` (Milvus Lite, and an unreadable version:
        yes)."""
        return not self.version or self.version >= since

    def _read_properties(self) -> None:
        described = self._call(lambda: self.client.describe_collection(self.collection, timeout=CALL_TIMEOUT_S))
        properties = described.get("properties", {})
        self.model = properties.get("vitrine.model")
        self.dim = int(properties.get("vitrine.dim", 0))
        self.options = IndexOptions.from_json(properties.get("vitrine.options") or IndexOptions().to_json())
        self.kind = properties.get("vitrine.kind", "flat")
        self.declared = [f["name"] for f in described["fields"] if f["name"] not in RESERVED]
        # made on a server without nullable fields (< 2.5): "" is how its rows say "no title" or "no such attribute"
        self.nulls = any(f["name"] == "title" and f.get("nullable") for f in described["fields"])
        self.dynamic = json.loads(properties.get("vitrine.fields") or "[]")
        self.state = json.loads(properties.get("vitrine.state") or "{}")
        self.index_params = json.loads(properties.get("vitrine.index_params") or "{}")
        self.full_text = (
            "vitrine.text" in properties
        )  # no BM25 text field: made on a server before 2.5, or before vitrine had one

    def _set_properties(self, properties: Mapping[str, str]) -> None:
        self._call(
            lambda: self.client.alter_collection_properties(
                self.collection, properties=dict(properties), timeout=CALL_TIMEOUT_S
            )
        )

    def _call(self, operation):
        """`operation()`, a call on `self.client`. On a server that cannot be reached, reconnect and try once more; if
        it still fails, or the collection is still loading (after a server restart), raise StoreUnavailable."""
        if self.target.is_lite:  # in-process: no connection to lose
            return operation()
        for attempt in (1, 2):
            try:
                return operation()
            except StoreUnavailable:
                raise
            except Exception as error:
                kind = unavailable_kind(error)
                if kind is None:
                    raise
                if kind == "loading":
                    self._request_load()
                    raise StoreUnavailable(
                        f"the Milvus server at {_address(self.target.uri)} is loading collection {self.collection!r} "
                        f"(after a restart this takes up to a minute); retry shortly"
                    ) from error
                if attempt == 2:
                    raise StoreUnavailable(
                        f"the Milvus server at {_address(self.target.uri)} is not reachable ({_short(error)}); "
                        f"vitrine reconnects by itself: retry shortly"
                    ) from error
                log.warning("Milvus server %s unreachable (%s); reconnecting", _address(self.target.uri), _short(error))
                self._reconnect()
        raise AssertionError("unreachable")

    def _reconnect(self) -> None:
        """A new client in place of this one (the old one is kept when the server does not answer: pymilvus mends its
        channel in place once the server is back)."""
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(uri=self.target.uri, token=self.target.token or "")
        except Exception as error:
            raise StoreUnavailable(
                f"the Milvus server at {_address(self.target.uri)} is not reachable ({_short(error)}); "
                f"vitrine reconnects by itself: retry shortly"
            ) from error
        old, self.client = self.client, client
        if old is not client:
            with contextlib.suppress(Exception):
                old.close()

    def _request_load(self) -> None:
        """Ask the server to load the collection when nothing is loading it, without waiting (a restarted server reloads
        what was loaded by itself: ~30 s on 2.3, its old sessions' lease)."""
        from pymilvus.client.types import LoadState

        with contextlib.suppress(Exception):  # best effort: the 503 goes out either way
            if self.client.get_load_state(self.collection, timeout=CALL_TIMEOUT_S).get("state") == LoadState.NotLoad:
                replicas = {"replica_number": self.target.replicas} if self.target.replicas else {}
                self.client.load_collection(self.collection, timeout=CALL_TIMEOUT_S, _async=True, **replicas)

    def _ensure_index(self) -> None:
        """Make sure the vector index exists and the collection is loaded (an interrupted re-index leaves neither)."""
        if "vector" not in self._call(
            lambda: self.client.list_indexes(self.collection, field_name="vector", timeout=CALL_TIMEOUT_S)
        ):
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
            self._call(lambda: self.client.load_collection(self.collection, replica_number=self.target.replicas))
        else:
            self._call(lambda: self.client.load_collection(self.collection))

    def _drop_lite_sidecars(self) -> int:
        """Remove Milvus Lite's per-segment index files so that loading rebuilds them; returns how many were removed.

        Milvus Lite writes these sidecars in place, not atomically, so a process killed while writing one leaves a
        truncated file that fails every later load ("File is too small"). They are derived from the segments, which
        hold the rows, so dropping them loses nothing.
        """
        pattern = os.path.join(
            glob.escape(self.target.uri), "collections", glob.escape(self.collection), "partitions", "*", "indexes", "*"
        )
        sidecars = [path for path in glob.glob(pattern) if path.endswith((".idx", ".sidx"))]
        for path in sidecars:
            os.remove(path)
        if sidecars:
            log.warning(
                "Milvus Lite could not load %s; removed %d index sidecar file(s) (left truncated by an interrupted "
                "process?) and rebuilt them from the stored rows",
                self.target,
                len(sidecars),
            )
        return len(sidecars)

    def _create_vector_index(self, kind: str, n: int) -> None:
        index_type, params = milvus_index(kind, n, self.dim, self.options, self.target.is_lite)
        index_params = self.client.prepare_index_params()
        index_params.add_index(
            field_name="vector", index_name="vector", index_type=index_type, metric_type="IP", params=params
        )
        self._call(lambda: self.client.create_index(self.collection, index_params))
        self._set_properties({"vitrine.kind": kind, "vitrine.index_params": json.dumps(params)})
        self.kind, self.index_params = kind, params

    def _replan(self) -> None:
        """Move to the index kind the catalog's size now calls for (never back down), as FaissStore does."""
        n = self._size = self._count_rows()
        target = plan_index(n, self.dim, self.options).kind
        if _UPGRADE[target] <= _UPGRADE[self.kind] or (target == "ivfpq" and n < _IVF_MIN_VECTORS):
            return
        self._call(lambda: self.client.release_collection(self.collection))
        self._call(lambda: self.client.drop_index(self.collection, "vector"))
        self._create_vector_index(target, n)
        self._load()

    def _count_rows(self) -> int:
        rows = self._call(
            lambda: self.client.query(
                self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong",
                timeout=CALL_TIMEOUT_S,
            )
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def _count_products(self) -> int:
        """The number of products, exactly. Before Milvus 2.5, count(*) counts an upserted product twice for a while (it
        does not
        deduplicate primary keys across segments; queries do: milvus-io/milvus#27515, #28434, seen here on 2.3.5), so
        there
        a catalog of up to QUERY_MAX products is counted by its ids (one query: stats() answers /healthz)."""
        n = self._count_rows()
        if self._has(NULLABLE_SINCE) or n > QUERY_MAX:
            return n
        rows = self._call(
            lambda: self.client.query(
                self.collection, filter="id != ''", limit=QUERY_MAX, output_fields=["id"], consistency_level="Strong",
                timeout=CALL_TIMEOUT_S,
            )
        )
        return len({row["id"] for row in rows})

    # ---- writes ----------------------------------------------------------------------------------
    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping] | None = None,
        state: Mapping[str, str] | None = None,
    ) -> None:
        """Add products, or replace those whose id exists; `state` entries are saved after the rows (see module doc)."""
        vectors, metadata = checked_rows(ids, vectors, metadata, self.dim)
        rows = [self._row(item_id, vector, meta) for item_id, vector, meta in zip(ids, vectors, metadata)]
        if self.full_text:
            for row, text in zip(rows, _fts5_tokens([_search_text(meta) for meta in metadata])):
                row[TEXT_FIELD] = text
        for start in range(0, len(rows), WRITE_CHUNK):  # a retried chunk writes the same rows again: the same result
            chunk = rows[start : start + WRITE_CHUNK]
            self._call(lambda: self.client.upsert(self.collection, chunk, timeout=CALL_TIMEOUT_S))
        self._call(lambda: self.client.flush(self.collection, timeout=FLUSH_TIMEOUT_S))
        failpoint("index.vectors_written")  # rows durable and visible, state not yet saved
        new_fields = sorted(
            {key for row in rows for key in row if key not in RESERVED and key not in self.declared} - set(self.dynamic)
        )
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
            raise InvalidInput("ids must be non-empty strings")
        if _utf8_len(item_id) > ID_MAX_BYTES:
            raise InvalidInput(f"product id {item_id[:40]!r}... is over {ID_MAX_BYTES} bytes")
        title = meta.get("title")
        if title is not None and _utf8_len(str(title)) > TITLE_MAX_BYTES:
            raise InvalidInput(f"product {item_id!r}: title is over {TITLE_MAX_BYTES} bytes")
        missing = None if self.nulls else ""  # before Milvus 2.5 a field cannot be null: "" stands for "none"
        row = {"id": item_id, "vector": vector, "title": missing if title is None else str(title)}
        row.update({name: missing for name in self.declared})
        for key, value in meta.items():
            if key in ("id", "title") or value is None:
                continue
            if key in RESERVED or key.startswith("$") or not key.strip():
                raise InvalidInput(f"product {item_id!r}: attribute name {key!r} is reserved or empty")
            if key in self.declared:
                value = str(value)
                if _utf8_len(value) > ATTRIBUTE_MAX_BYTES:
                    raise InvalidInput(f"product {item_id!r}: {key} is over {ATTRIBUTE_MAX_BYTES} bytes")
            row[key] = value
        return row

    def delete(self, ids: Sequence[str]) -> int:
        """Remove products by id; returns how many existed."""
        ids = [i for i in dict.fromkeys(ids) if isinstance(i, str) and i]
        if not ids:
            return 0
        existing = [
            row["id"]
            for row in self._call(
                lambda: self.client.get(self.collection, ids=ids, output_fields=["id"], timeout=CALL_TIMEOUT_S)
            )
        ]
        if existing:
            self._call(lambda: self.client.delete(self.collection, ids=existing, timeout=CALL_TIMEOUT_S))
            self._call(lambda: self.client.flush(self.collection, timeout=FLUSH_TIMEOUT_S))
            self._size = self._count_rows()
            self._wrote()
        return len(existing)

    def _wrote(self) -> None:
        self.generation += 1
        self._values_cache = None

    # ---- reads -----------------------------------------------------------------------------------
    def _output_fields(self) -> list[str]:
        return ["title", *self.declared, "$meta"]

    def _metadata(self, item_id: str, entity: Mapping) -> dict:
        out = {"id": item_id, "title": entity.get("title")}
        out.update({k: v for k, v in entity.items() if k not in RESERVED and v is not None})
        if not self.nulls:  # "" in the title and declared fields is "none" (see _row)
            if out["title"] == "":
                out["title"] = None
            for name in self.declared:
                if out.get(name) == "":
                    del out[name]
        return out

    def _expression(self, filters: Mapping[str, str | Sequence[str]] | None) -> str | None:
        """The filter expression ("" for none; None: nothing can match)."""
        if not filters:
            return ""
        if not self.nulls:  # "" in a declared field is a missing value: it matches no filter
            filters = {
                name: [v for v in ([values] if isinstance(values, str) else values) if v != ""]
                if name in self.declared
                else values
                for name, values in filters.items()
            }
        return filter_expression(filters, self.declared)

    def search(
        self, queries: np.ndarray, k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> list[list[SearchHit]]:
        """Top-k products per query (rows of `queries`), restricted to those matching every filter."""
        queries = checked_queries(queries, k, self.dim)
        expression = self._expression(filters)
        if expression is None:
            return [[] for _ in queries]
        params = _search_params(self.kind, self._size, k, self.options, self.index_params)
        results = self._call(
            lambda: self.client.search(
                self.collection, data=list(queries), limit=min(k, 16384), filter=expression,
                output_fields=self._output_fields(), search_params={"metric_type": "IP", "params": params},
                consistency_level="Strong", timeout=CALL_TIMEOUT_S,
            )
        )
        return [
            [
                SearchHit(
                    hit["id"], float(hit["distance"]), self._metadata(hit["id"], hit.get("entity", {})),
                    float(hit["distance"]),
                )
                for hit in row
            ]
            for row in results
        ]

    def lexical(
        self, words: Sequence[str], k: int = 10, filters: Mapping[str, str | Sequence[str]] | None = None,
        vector: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """Products whose title or attribute values hold any of the words, by BM25 (Milvus full-text search), best
        first; with `vector`, each hit's cosine to it as well."""
        if not self.full_text:
            raise LexicalUnsupported(self._no_lexical_reason())
        query_vector = checked_queries(vector, 1, self.dim)[0] if vector is not None else None
        query = _fts5_tokens([" ".join(words)])[0]
        expression = self._expression(filters)
        if not query or expression is None or k < 1:
            return []
        fields = (
            [*self._output_fields(), "vector"] if vector is not None else self._output_fields()
        )  # the cosines in the same call
        results = self._call(
            lambda: self.client.search(
                self.collection, data=[query], anns_field=SPARSE_FIELD, limit=min(k, QUERY_MAX), filter=expression,
                output_fields=fields, search_params={"metric_type": "BM25"}, consistency_level="Strong",
                timeout=CALL_TIMEOUT_S,
            )
        )
        hits = []
        for hit in results[0]:
            entity = hit.get("entity", {})
            similarity = (
                float(np.asarray(entity.pop("vector"), dtype=np.float32) @ query_vector)
                if query_vector is not None
                else None
            )
            # a server answers the BM25 score, Milvus Lite 3.2 its negation (a distance): the order is best first either
            # way
            hits.append(
                SearchHit(hit["id"], abs(float(hit["distance"])), self._metadata(hit["id"], entity), similarity)
            )
        return hits

    def _no_lexical_reason(self) -> str:
        if not self._has(FULL_TEXT_SINCE):
            return (
                f"lexical and hybrid search need the embedded store (an index directory) or Milvus "
                f"{'.'.join(map(str, FULL_TEXT_SINCE))}+: the server at {_address(self.target.uri)} is Milvus "
                f"{'.'.join(map(str, self.version))}, which has no full-text search; use mode 'vector'"
            )
        return (
            f"Milvus collection {self.collection!r} at {_address(self.target.uri)} was created without a BM25 text "
            "field: "
            f"rebuild the collection (`vitrine index build` into a new index) to get lexical and hybrid search, or use "
            "mode 'vector'"
        )

    def sample(self, n: int) -> list[dict]:
        rows = self._call(
            lambda: self.client.query(
                self.collection, filter="", limit=max(1, n), output_fields=self._output_fields(), timeout=CALL_TIMEOUT_S
            )
        )
        return [self._metadata(row["id"], row) for row in rows]

    def vectors_of(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(the ids of `ids` this collection holds, in order, and their vectors)."""
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rows = self._call(
                lambda: self.client.get(self.collection, ids=chunk, output_fields=["vector"], timeout=CALL_TIMEOUT_S)
            )
            found.update((row["id"], np.asarray(row["vector"], dtype=np.float32)) for row in rows)
        order = [i for i in ids if i in found]
        return order, np.stack([found[i] for i in order]) if order else np.zeros((0, self.dim), np.float32)

    def page(
        self, offset: int, limit: int, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> tuple[int, list[dict]]:
        """(matching products, a page of them in Milvus's scan order, stable between calls); Milvus caps offset + limit
        at 16,384."""
        expression = self._expression(filters)
        if expression is None:
            return 0, []
        counted = self._call(
            lambda: self.client.query(
                self.collection, filter=expression, output_fields=["count(*)"], consistency_level="Strong",
                timeout=CALL_TIMEOUT_S,
            )
        )
        total = int(counted[0]["count(*)"]) if counted else 0
        if offset >= total or limit < 1:
            return total, []
        rows = self._call(
            lambda: self.client.query(
                self.collection, filter=expression or "id != ''", offset=int(offset), limit=int(limit),
                output_fields=self._output_fields(), consistency_level="Strong", timeout=CALL_TIMEOUT_S,
            )
        )
        return total, [self._metadata(row["id"], row) for row in rows]

    def product(self, product_id: str) -> dict | None:
        rows = self._call(
            lambda: self.client.get(
                self.collection, ids=[product_id], output_fields=self._output_fields(), timeout=CALL_TIMEOUT_S
            )
        )
        return self._metadata(product_id, rows[0]) if rows else None

    def fields(self) -> set[str]:
        """Every attribute name a product may have: the declared fields and the dynamic ones written so far."""
        return set(self.declared) | set(self.dynamic)

    def field_values(self, per_field: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Each attribute's most common values with product counts (over the first FIELD_SCAN_MAX products)."""
        if self._values_cache is None:
            counts = self._call(self._count_values)  # a scan cut short by a lost connection starts again
            self._values_cache = {
                field: sorted(c.items(), key=lambda kv: (-kv[1], kv[0])) for field, c in sorted(counts.items())
            }
        return {field: rows[:per_field] for field, rows in self._values_cache.items()}

    def _count_values(self) -> dict[str, Counter]:
        counts: dict[str, Counter] = {}
        # "" in a declared field of a collection without nulls is a missing value, not one to count (see _row)
        missing = (None,) if self.nulls else (None, "")
        iterator = self.client.query_iterator(
            self.collection, batch_size=4096, limit=FIELD_SCAN_MAX, filter="", output_fields=[*self.declared, "$meta"]
        )
        try:
            while batch := iterator.next():
                for row in batch:
                    for key, value in row.items():
                        if key not in RESERVED and value not in (missing if key in self.declared else (None,)):
                            counts.setdefault(key, Counter())[str(value)] += 1
        finally:
            iterator.close()
        return counts

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
        n = self._count_products()
        return {
            "model": self.model,
            "dim": self.dim,
            "vectors": n,
            "products": n,
            "generation": self.generation,
            "index_kind": self.kind,
            "dead_vectors": 0,
            "backend": "milvus-lite" if self.target.is_lite else "milvus",
            "index": str(self.target),
        }

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _disconnect(self.target, self.client)
