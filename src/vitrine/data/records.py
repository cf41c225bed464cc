"""Catalog items and the base class every catalog reader shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from PIL import Image

from vitrine.data.errors import DataError, ErrorReport, ImageDecodeError, MissingFileError, OnError, RowFormatError
from vitrine.data.images import DEFAULT_MAX_PIXELS, decode_image
from vitrine.data.schema import CatalogSchema
from vitrine.data.text import is_unicode


@dataclass(frozen=True)
class Record:
    """One catalog row before its image is decoded."""

    id: str
    title: str | None
    attributes: Mapping[str, str | None]
    source: str
    row: int
    image_bytes: bytes | None = None
    image_path: str | None = None

    def read_image_bytes(self) -> bytes:
        if self.image_bytes is not None:
            return self.image_bytes
        if self.image_path is None:
            raise MissingFileError("row has no image", source=self.source, row=self.row, item_id=self.id)
        try:
            with open(self.image_path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise MissingFileError(
                f"image file not found: {self.image_path}", source=self.source, row=self.row, item_id=self.id
            ) from None
        except OSError as exc:
            raise MissingFileError(
                f"cannot read image file {self.image_path}: {exc}", source=self.source, row=self.row, item_id=self.id
            ) from None
        except ValueError as exc:  # a NUL byte or a lone surrogate cannot be in a file name
            raise MissingFileError(
                f"image path {self.image_path!r} is not a valid file name ({exc})",
                source=self.source,
                row=self.row,
                item_id=self.id,
            ) from None


@dataclass(frozen=True)
class Item:
    """A catalog product: id, decoded RGB image, title and attributes."""

    id: str
    image: Image.Image
    title: str | None
    attributes: Mapping[str, str | None] = field(default_factory=dict)
    source: str = ""
    row: int = 0

    def metadata(self) -> dict[str, str | None]:
        return {"id": self.id, "title": self.title, **self.attributes}


class CatalogReader(ABC):
    """Streams a catalog's records and items; bad rows follow the `on_error` policy."""

    def __init__(
        self, schema: CatalogSchema, on_error: OnError | str = OnError.FAIL, max_pixels: int = DEFAULT_MAX_PIXELS
    ):
        self.schema = schema
        self.report = ErrorReport(on_error=OnError(on_error))
        self.max_pixels = max_pixels
        self.position = 0  # scan entries (good rows and bad) consumed so far; a resume point

    @abstractmethod
    def _scan(self) -> Iterator[Record | DataError]:
        """Yield records in a stable order; row-level problems are yielded as errors, not raised."""

    @abstractmethod
    def count(self) -> int:
        """Number of rows, bad ones included (cheap: no image is decoded)."""

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable description of where the catalog lives."""

    def records(self, start: int = 0) -> Iterator[Record]:
        """Every good row's record from scan position `start`; a bad row raises or is skipped and counted."""
        seen: set[str] = set()
        self.position = 0
        for entry in self._scan():
            self.position += 1
            if self.position <= start:
                # Already handled by an earlier run: only remember ids for the duplicate check.
                if isinstance(entry, Record):
                    seen.add(entry.id)
                continue
            if isinstance(entry, DataError):
                self.report.handle(entry)
                continue
            if entry.id in seen:
                self.report.handle(RowFormatError("duplicate id", source=entry.source, row=entry.row, item_id=entry.id))
                continue
            seen.add(entry.id)
            yield entry

    def decode(self, record: Record) -> Item:
        """Decode a record's image, naming the row in any error."""
        data = record.read_image_bytes()
        try:
            image = decode_image(data, max_pixels=self.max_pixels)
        except ImageDecodeError as exc:
            raise ImageDecodeError(exc.detail, source=record.source, row=record.row, item_id=record.id) from None
        return Item(
            id=record.id, image=image, title=record.title, attributes=record.attributes, source=record.source,
            row=record.row,
        )

    def decode_or_skip(self, record: Record) -> Item | None:
        """`decode`, or None when the image is bad and the `on_error` policy skips it (it is counted)."""
        try:
            return self.decode(record)
        except DataError as exc:
            self.report.handle(exc)
            return None

    def __iter__(self) -> Iterator[Item]:
        for record in self.records():
            item = self.decode_or_skip(record)
            if item is not None:
                yield item

    def make_record(self, raw: Mapping[str, object], *, source: str, row: int, **image) -> Record | DataError:
        """Build a record from a metadata mapping, checking the id and the title."""
        schema = self.schema
        item_id = schema.clean(raw.get(schema.id_field))
        if item_id is None:
            return RowFormatError(f"missing value for id column '{schema.id_field}'", source=source, row=row)
        title = schema.clean(raw.get(schema.title_field))
        if title is None and schema.require_title:
            return RowFormatError("empty title", source=source, row=row, item_id=item_id)
        attributes = {name: schema.clean(raw.get(name)) for name in schema.attributes}
        for name, value in ((schema.id_field, item_id), (schema.title_field, title), *attributes.items()):
            if value is not None and not is_unicode(value):
                # Text with lone surrogates (from "\\ud800" escapes or non-UTF-8 names) cannot be stored or served as
                # UTF-8.
                shown_id = item_id if is_unicode(item_id) else None  # the message itself must print as UTF-8
                return RowFormatError(
                    f"column '{name}' holds a lone surrogate ({value!r}), not Unicode text",
                    source=source,
                    row=row,
                    item_id=shown_id,
                )
        return Record(id=item_id, title=title, attributes=attributes, source=source, row=row, **image)
