"""Candidates' field values as integer codes, kept per catalog generation: a ranked page's soft-filter shares and
facet counts become numpy operations over a few hundred rows instead of Python loops over their metadata."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from vitrine.index.store import SearchHit

MAX_ROWS = 500_000  # products coded before the table starts afresh (memory stays bounded on a huge catalog)


class FieldCodes:
    """One row per product seen in a ranking, one column per counted field; a cell is the code of the product's
    value there (-1: none). Valid for one generation of the store: a write may change a product's values."""

    def __init__(self, generation: int, fields: Collection[str]):
        self.generation = generation
        self.fields = sorted(fields)
        self._column = {name: i for i, name in enumerate(self.fields)}
        self._codes: dict[tuple[str, str], int] = {}
        self._values: list[tuple[str, str]] = []  # code -> (field, value)
        self._rows: dict[str, int] = {}  # product id -> row
        self._matrix = np.full((256, max(1, len(self.fields))), -1, np.int32)

    def rows(self, hits: Iterable[SearchHit]) -> np.ndarray:
        """The row of each hit's product, coding the products not seen before."""
        if len(self._rows) > MAX_ROWS:  # between calls, so that no row of this call is reused
            self._rows.clear()
        rows, known = [], self._rows
        for hit in hits:
            row = known.get(hit.id)
            if row is None:
                row = self._add(hit.id, hit.metadata)
            rows.append(row)
        return np.asarray(rows, dtype=np.int64)

    def _add(self, product_id: str, metadata: Mapping) -> int:
        row = len(self._rows)
        if row >= len(self._matrix):
            grown = np.full((2 * len(self._matrix), self._matrix.shape[1]), -1, np.int32)
            grown[: len(self._matrix)] = self._matrix
            self._matrix = grown
        cells = self._matrix[row]
        cells[:] = -1
        for name, value in metadata.items():
            column = self._column.get(name)
            if column is not None and value is not None:
                cells[column] = self._code(name, str(value))
        self._rows[product_id] = row
        return row

    def _code(self, name: str, value: str) -> int:
        code = self._codes.get((name, value))
        if code is None:
            code = self._codes[(name, value)] = len(self._values)
            self._values.append((name, value))
        return code

    def share(self, rows: np.ndarray, named: Mapping[str, Sequence[str]]) -> np.ndarray:
        """Per row, the share of the `named` fields whose value is one of the named ones (0 to 1)."""
        if not named:
            return np.zeros(len(rows))
        hits = np.zeros(len(rows))
        for name, values in named.items():
            column = self._column.get(name)
            codes = [self._codes[(name, v)] + 1 for v in values if (name, v) in self._codes]
            if column is not None and codes:
                wanted = np.zeros(len(self._values) + 1, bool)  # by code + 1: cell -1 (no value) reads wanted[0], False
                wanted[codes] = True
                hits += wanted[self._matrix[rows, column] + 1]
        return hits / len(named)

    def counts(self, rows: np.ndarray) -> dict[str, list[tuple[str, int]]]:
        """Each field's value counts over `rows`, commonest first (then by value); fields in name order."""
        cells = self._matrix[rows].ravel()
        tally = np.bincount(cells[cells >= 0], minlength=len(self._values))
        by_field: dict[str, list[tuple[str, int]]] = {}
        for code in np.flatnonzero(tally).tolist():
            name, value = self._values[code]
            by_field.setdefault(name, []).append((value, int(tally[code])))
        return {name: sorted(values, key=lambda kv: (-kv[1], kv[0])) for name, values in sorted(by_field.items())}
