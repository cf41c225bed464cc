"""A folder of images plus a `catalog.csv` or `catalog.jsonl` metadata file."""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from vitrine.data.errors import DataError, RowFormatError, UnsafePathError
from vitrine.data.images import DEFAULT_MAX_PIXELS
from vitrine.data.records import CatalogReader, Record
from vitrine.data.schema import CatalogSchema
from vitrine.errors import InvalidInput, MissingFile

METADATA_NAMES = ("catalog.csv", "catalog.jsonl")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def find_metadata(path: str | os.PathLike) -> Path:
    """The metadata file of a folder catalog, or the file itself when `path` is one."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".jsonl"):
            raise InvalidInput(f"catalog metadata must be .csv or .jsonl, got {path}")
        return path
    for name in METADATA_NAMES:
        if (path / name).is_file():
            return path / name
    raise MissingFile(f"no {' or '.join(METADATA_NAMES)} in {path}")


class FolderCatalog(CatalogReader):
    """Rows from CSV/JSONL; images from `image_field` or `<images dir>/<id>.<ext>`.

    With `schema.confine_images` (the default) a row whose image path resolves outside the catalog folder (or an
    `images_dir` given here) is a bad row (`UnsafePathError`): an untrusted catalog cannot make vitrine read, embed
    and serve other files of the machine through '..', absolute paths or symlinks.
    """

    def __init__(
        self, path: str | os.PathLike, schema: CatalogSchema, on_error="fail", max_pixels: int = DEFAULT_MAX_PIXELS,
        images_dir: str | os.PathLike | None = None,
    ):
        super().__init__(schema, on_error, max_pixels)
        self.metadata_path = find_metadata(path)
        root = self.metadata_path.parent
        self._roots = {os.path.realpath(root)} | ({os.path.realpath(images_dir)} if images_dir is not None else set())
        if images_dir is None:
            images_dir = root / "images" if (root / "images").is_dir() else root
        self.root = root
        self.images_dir = Path(images_dir)
        self._listing: dict[str, str] | None = None

    def describe(self) -> str:
        return f"folder catalog {self.metadata_path} (images in {self.images_dir})"

    def count(self) -> int:
        return sum(1 for _ in self._rows())

    def _scan(self) -> Iterator[Record | DataError]:
        source = self.metadata_path.name
        for row, raw in self._rows():
            if isinstance(raw, DataError):
                yield raw
                continue
            record = self.make_record(raw, source=source, row=row)
            if isinstance(record, DataError):
                yield record
                continue
            image_path = self._image_path(record.id, raw)
            if self.schema.confine_images and not self._confined(image_path):
                field = self.schema.image_field
                given = (
                    str(raw[field]).strip()
                    if field and self.schema.clean(raw.get(field))
                    else os.path.relpath(image_path, self.root)
                )
                yield UnsafePathError(
                    f"image path {given!r} resolves outside the catalog folder {self.root} ('..', an absolute path "
                    f"or a symlink pointing out); image paths are confined to the catalog folder "
                    f"(--no-confine-images reads them for a trusted catalog)",
                    source=source,
                    row=row,
                    item_id=record.id,
                )
                continue
            yield replace(record, image_path=image_path)

    def _rows(self) -> Iterator[tuple[int, dict | DataError]]:
        source = self.metadata_path.name
        try:
            if self.metadata_path.suffix.lower() == ".csv":
                yield from self._csv_rows(source)
            else:
                yield from self._jsonl_rows(source)
        except UnicodeDecodeError as exc:
            raise RowFormatError(f"file is not UTF-8 text ({exc})", source=str(self.metadata_path)) from None

    def _csv_rows(self, source: str) -> Iterator[tuple[int, dict | DataError]]:
        with open(self.metadata_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            try:
                header = reader.fieldnames
            except csv.Error as exc:
                raise RowFormatError(f"malformed CSV header ({exc})", source=str(self.metadata_path)) from None
            if not header or self.schema.id_field not in header:
                raise RowFormatError(
                    f"CSV header {header} has no id column '{self.schema.id_field}' (schema {self.schema.name}); drop "
                    "--schema "
                    f"to read the catalog's own columns, or see `vitrine schema infer {self.root}`",
                    source=str(self.metadata_path),
                )
            width = len(header)
            for row in itertools.count(1):
                try:
                    raw = next(reader)
                except StopIteration:
                    return
                except (
                    csv.Error
                ) as exc:  # e.g. a field over csv.field_size_limit(); the reader resumes on the next line
                    yield row, RowFormatError(f"malformed CSV ({exc})", source=source, row=row)
                    continue
                if None in raw:
                    yield (
                        row,
                        RowFormatError(
                            f"row has {width + len(raw[None])} fields, header has {width}", source=source, row=row
                        ),
                    )
                elif any(value is None for value in raw.values()):
                    present = sum(value is not None for value in raw.values())
                    yield row, RowFormatError(f"row has {present} fields, header has {width}", source=source, row=row)
                else:
                    yield row, raw

    def _jsonl_rows(self, source: str) -> Iterator[tuple[int, dict | DataError]]:
        with open(self.metadata_path, encoding="utf-8-sig") as handle:
            row = 0
            for line in handle:
                if not line.strip():
                    continue
                row += 1
                try:
                    raw = json.loads(line)
                except (ValueError, RecursionError) as exc:  # also: numbers over 4300 digits, nesting too deep
                    yield row, RowFormatError(f"malformed JSON ({exc})", source=source, row=row)
                    continue
                if not isinstance(raw, dict):
                    yield row, RowFormatError("JSON line is not an object", source=source, row=row)
                    continue
                yield row, raw

    def _confined(self, path: str) -> bool:
        try:
            real = os.path.realpath(path)
        except ValueError:  # a NUL byte or a lone surrogate: no file has that name (reading it says so)
            return True
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self._roots)

    def _image_path(self, item_id: str, raw: dict) -> str:
        field = self.schema.image_field
        if field and self.schema.clean(raw.get(field)):
            return str(self.root / str(raw[field]).strip())
        if self._listing is None:
            # One directory listing instead of a stat per extension per row.
            self._listing = {}
            for name in sorted(os.listdir(self.images_dir)):
                stem, ext = os.path.splitext(name)
                if ext.lower() in IMAGE_EXTENSIONS:
                    self._listing.setdefault(stem, name)
        name = self._listing.get(item_id)
        return str(self.images_dir / (name if name else f"{item_id}.jpg"))
