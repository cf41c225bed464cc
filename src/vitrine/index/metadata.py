"""Product metadata in SQLite beside the vectors: one row per product, attributes indexed for filters."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from vitrine.data.tagged import PREDICTED_PREFIX
from vitrine.errors import InvalidInput

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    key INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, title TEXT, attributes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attributes (key INTEGER NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS attributes_by_value ON attributes (field, value, key);
CREATE INDEX IF NOT EXISTS attributes_by_key ON attributes (key);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead (key INTEGER PRIMARY KEY);
"""
# Full-text (BM25) over each product's title and attribute values, keyed by the product's key. Porter stems both sides.
_TEXT_SCHEMA = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS products_text "
    "USING fts5(title, attributes, tokenize='porter unicode61 remove_diacritics 2')"
)
TITLE_WEIGHT, ATTRIBUTES_WEIGHT = 1.0, 1.0
# Parsed rows kept by key: a key is never reused (an upsert gives a product a new one), so a row read once never
# changes; a search reads its hits' rows from here instead of SQLite and JSON. Cleared when it outgrows this.
ROW_CACHE_MAX = 200_000


class MetadataStore:
    """Maps product ids to integer keys (the vector ids) and answers attribute filters with the keys that match."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Explicit transactions via `transaction()`; callers that share one store across threads serialise access.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._index_text()
        self._rows: dict[int, dict] = {}

    def _index_text(self) -> None:
        """Create the full-text table and fill in what it lacks (stores written before it existed)."""
        self.db.execute(_TEXT_SCHEMA)
        missing = "SELECT key FROM products WHERE key NOT IN (SELECT rowid FROM products_text)"
        if self.db.execute(missing + " LIMIT 1").fetchone() is None:
            return
        with self.transaction():
            rows = self.db.execute(f"SELECT key, title, attributes FROM products WHERE key IN ({missing})").fetchall()
            self.db.executemany(
                "INSERT INTO products_text (rowid, title, attributes) VALUES (?, ?, ?)",
                [(key, title or "", _attribute_text(json.loads(attributes))) for key, title, attributes in rows],
            )

    def transaction(self):
        """`with store.transaction():` commits everything inside at once, or nothing."""
        return _Transaction(self.db)

    def snapshot(self):
        """`with store.snapshot():` every read inside sees one committed state (a WAL read transaction)."""
        return _Transaction(self.db, "BEGIN DEFERRED")

    def get_state(self, name: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def get_states(self, names: Sequence[str]) -> dict[str, str]:
        """Several state entries in one statement (so from one committed state, with no explicit transaction)."""
        marks = ",".join("?" * len(names))
        return dict(self.db.execute(f"SELECT name, value FROM state WHERE name IN ({marks})", list(names)).fetchall())

    def set_state(self, name: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def keys_for(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            out.update(self.db.execute(f"SELECT id, key FROM products WHERE id IN ({marks})", chunk).fetchall())
        return out

    def upsert(self, rows: Iterable[tuple[str, str | None, Mapping[str, str | None]]]) -> tuple[list[int], list[int]]:
        """Insert or replace products; returns (their new keys, the keys they replaced).

        A replaced product gets a fresh key (keys are never reused), so an index that cannot drop a
        vector in place can mark the old key dead instead.
        """
        rows = list(rows)
        replaced = self.keys_for([item_id for item_id, _, _ in rows])
        self._remove_keys(list(replaced.values()))
        keys = []
        for item_id, title, attributes in rows:
            clean = {k: v for k, v in attributes.items() if v is not None}
            cursor = self.db.execute(
                "INSERT INTO products (id, title, attributes) VALUES (?, ?, ?)",
                (item_id, title, json.dumps(clean, sort_keys=True)),
            )
            keys.append(cursor.lastrowid)
            self.db.execute(
                "INSERT INTO products_text (rowid, title, attributes) VALUES (?, ?, ?)",
                (cursor.lastrowid, title or "", _attribute_text(clean)),
            )
            self.db.executemany(
                "INSERT INTO attributes (key, field, value) VALUES (?, ?, ?)",
                [(cursor.lastrowid, f, v) for f, v in clean.items()],
            )
        return keys, sorted(replaced.values())

    def _remove_keys(self, keys: Sequence[int]) -> None:
        for start in range(0, len(keys), 500):
            chunk = [int(k) for k in keys[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            self.db.execute(f"DELETE FROM attributes WHERE key IN ({marks})", chunk)
            self.db.execute(f"DELETE FROM products WHERE key IN ({marks})", chunk)
            self.db.execute(f"DELETE FROM products_text WHERE rowid IN ({marks})", chunk)

    def delete(self, ids: Sequence[str]) -> list[int]:
        """Remove products; returns the keys that existed."""
        keys = sorted(self.keys_for(ids).values())
        self._remove_keys(keys)
        return keys

    def dead_keys(self) -> set[int]:
        return {row[0] for row in self.db.execute("SELECT key FROM dead")}

    def set_dead_keys(self, keys: Iterable[int]) -> None:
        """Replace the set of keys whose vectors are still in an index that cannot drop them."""
        self.db.execute("DELETE FROM dead")
        self.db.executemany("INSERT INTO dead (key) VALUES (?)", [(int(k),) for k in keys])

    def matching_keys(self, filters: Mapping[str, str | Sequence[str]]) -> list[int]:
        """Keys of products whose every filtered field equals (one of) the given value(s)."""
        if not filters:
            raise InvalidInput("matching_keys needs at least one filter")
        sql, params = _filter_sql(filters)
        return [row[0] for row in self.db.execute(sql + " ORDER BY key", params)]

    def lexical(
        self, words: Sequence[str], limit: int, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> list[tuple[int, float]]:
        """(key, BM25 score) of the products whose title or attribute values hold any of `words`, best first."""
        words = [w for w in words if w.strip()]
        if not words or limit < 1:
            return []
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)  # quoted: no FTS5 query syntax from users
        rank = f"bm25(products_text, {TITLE_WEIGHT}, {ATTRIBUTES_WEIGHT})"
        sql, params = f"SELECT rowid, -{rank} FROM products_text WHERE products_text MATCH ?", [match]
        if filters:
            keys_sql, keys_params = _filter_sql(filters)
            sql, params = sql + f" AND rowid IN ({keys_sql})", params + keys_params
        return [
            (int(key), float(score))
            for key, score in self.db.execute(sql + f" ORDER BY {rank} LIMIT ?", [*params, int(limit)])
        ]

    def sample(self, n: int) -> list[dict]:
        """Up to `n` products spread evenly over the keys (the same ones for the same store)."""
        total = self.count()
        step = max(1, total // max(n, 1))
        rows = self.db.execute("SELECT key FROM products ORDER BY key").fetchall()[::step][:n]
        return list(self.products([row[0] for row in rows]).values())

    def page(
        self, offset: int, limit: int, filters: Mapping[str, str | Sequence[str]] | None = None
    ) -> tuple[int, list[dict]]:
        """(how many products match `filters`, the `limit` of them after `offset` in id order), read from one
        snapshot."""
        where, params = "", []
        if filters:
            keys_sql, params = _filter_sql(filters)
            where = f" WHERE key IN ({keys_sql})"
        with self.snapshot():
            total = self.db.execute(f"SELECT COUNT(*) FROM products{where}", params).fetchone()[0]
            rows = self.db.execute(
                f"SELECT id, title, attributes FROM products{where} ORDER BY id LIMIT ? OFFSET ?",
                [*params, int(limit), int(offset)],
            ).fetchall()
        return total, [{"id": item_id, "title": title, **json.loads(attributes)} for item_id, title, attributes in rows]

    def products(self, keys: Sequence[int], live: bool = False) -> dict[int, dict]:
        """key -> row for the `keys` that exist. `live`: the caller knows every key exists now (read from the committed
        vectors or from this snapshot), so rows read before are served from memory. Callers must not change the rows."""
        out, missing = {}, []
        for key in keys:
            row = self._rows.get(int(key)) if live else None
            if row is None:
                missing.append(int(key))
            else:
                out[int(key)] = row
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, item_id, title, attributes in self.db.execute(
                f"SELECT key, id, title, attributes FROM products WHERE key IN ({marks})", chunk
            ):
                out[key] = {"id": item_id, "title": title, **json.loads(attributes)}
        if missing:
            if len(self._rows) + len(missing) > ROW_CACHE_MAX:
                self._rows.clear()
            self._rows.update((key, out[key]) for key in missing if key in out)
        return out

    def product(self, product_id: str) -> dict | None:
        row = self.db.execute("SELECT id, title, attributes FROM products WHERE id = ?", (product_id,)).fetchone()
        return None if row is None else {"id": row[0], "title": row[1], **json.loads(row[2])}

    def fields(self) -> set[str]:
        """Every attribute name some product has."""
        return {row[0] for row in self.db.execute("SELECT DISTINCT field FROM attributes")}

    def field_values(self, per_field: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Each attribute field's most common values with their product counts (for filter chips)."""
        out: dict[str, list[tuple[str, int]]] = {}
        rows = self.db.execute(
            "SELECT field, value, COUNT(*) AS n FROM attributes GROUP BY field, value ORDER BY field, n DESC, value"
        )
        for field, value, n in rows:
            values = out.setdefault(field, [])
            if len(values) < per_field:
                values.append((value, n))
        return out

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM products").fetchone()[0]

    def all_keys(self) -> list[int]:
        return [row[0] for row in self.db.execute("SELECT key FROM products ORDER BY key")]

    def close(self) -> None:
        self.db.close()


def _filter_sql(filters: Mapping[str, str | Sequence[str]]) -> tuple[str, list]:
    """SQL selecting the keys whose every filtered field equals (one of) the given value(s), with its parameters."""
    clauses, params = [], []
    for field, values in sorted(filters.items()):
        values = [values] if isinstance(values, str) else list(values)
        clauses.append(f"SELECT key FROM attributes WHERE field = ? AND value IN ({','.join('?' * len(values))})")
        params += [field, *values]
    return " INTERSECT ".join(clauses), params


def _attribute_text(attributes: Mapping[str, object]) -> str:
    """The attribute values a lexical search reads: the catalog's (and those the tagger filled in), not every guess."""
    return " ".join(
        str(v) for k, v in sorted(attributes.items()) if v is not None and not k.startswith(PREDICTED_PREFIX)
    )


class _Transaction:
    def __init__(self, db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE"):
        self.db, self.begin = db, begin

    def __enter__(self):
        self.db.execute(self.begin)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
