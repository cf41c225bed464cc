"""Input errors a user can act on, and the skip/fail policy that handles them."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from vitrine.errors import InvalidInput


class OnError(str, Enum):
    """What to do with a bad row: stop with an error, or report and skip it."""

    FAIL = "fail"
    SKIP = "skip"


class DataError(InvalidInput):
    """A problem with one row of a catalog, naming the row and the file."""

    kind, code = "data error", "bad_row"

    def __init__(self, message: str, *, source: str = "", row: int | None = None, item_id: str | None = None):
        self.detail = message
        self.source = source
        self.row = row
        self.item_id = item_id
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.item_id is not None:
            where.append(f"id {self.item_id}")
        prefix = f"{', '.join(where)}: " if where else ""
        return f"{type(self).__name__}: {prefix}{self.detail}"

    def to_dict(self) -> dict:
        """The row as a manifest lists it."""
        return {"source": self.source, "row": self.row, "id": self.item_id, "kind": self.kind, "error": str(self)}


class ImageDecodeError(DataError):
    """The image bytes are not a readable image (corrupt, truncated, not an image, too large)."""

    kind, code = "bad image", "bad_image"


class MissingFileError(DataError):
    """A row points at an image that does not exist."""

    kind, code = "missing file", "missing_image"


class UnsafePathError(DataError):
    """A row's image path leads outside the catalog folder ('..', an absolute path, a symlink pointing out)."""

    kind, code = "image path outside the catalog", "unsafe_path"


class RowFormatError(DataError):
    """A metadata row is malformed: bad CSV/JSON, missing id, empty title."""

    kind, code = "malformed row", "malformed_row"


@dataclass
class ErrorReport:
    """Counts and examples of rows skipped under `OnError.SKIP`."""

    on_error: OnError = OnError.FAIL
    max_examples: int = 20
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # every skipped row (for a manifest), not only the examples

    def handle(self, error: DataError) -> None:
        """Raise under the fail policy; otherwise count the error and keep an example."""
        if self.on_error is OnError.FAIL:
            raise error
        self.counts[error.kind] += 1
        self.rows.append(error.to_dict())
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.skipped:
            return "no rows skipped"
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        return f"skipped {self.skipped} rows ({parts})"

    def first_rows(self, n: int = 3) -> str:
        """The first skipped rows, named: '(row 4, id 17: missing file; row 9: malformed row; and 3 more)'."""
        named = [
            ", ".join(
                p
                for p in (
                    f"row {r['row']}" if r["row"] is not None else "", f"id {r['id']}" if r["id"] is not None else "",
                )
                if p
            )
            + f": {r['kind']}"
            for r in self.rows[:n]
        ]
        more = f"; and {len(self.rows) - n} more" if len(self.rows) > n else ""
        return f"({'; '.join(named)}{more})" if named else ""

    def to_dict(self) -> dict:
        return {"skipped": self.skipped, "by_kind": dict(sorted(self.counts.items())), "examples": list(self.examples)}

    def print_summary(self, stream=sys.stderr) -> None:
        print(self.summary(), file=stream)
        for line in self.examples:
            print(f"  {line}", file=stream)
