"""Catalog schemas as data: which columns hold the id, title, image and attributes, and how far a reader trusts the files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vitrine.config_file import loads_object, refuse_unknown, require_object

MAX_MEMBER_BYTES = 64 * 2**20  # far above any product photo or metadata file; a larger shard member is refused unread


class SchemaError(ValueError):
    """A catalog schema file that cannot be used; the message names the file and the field."""


def _text(value: object) -> str | None:
    return None if isinstance(value, str) else "a string"


def _text_list(value: object) -> str | None:
    return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else "a list of strings"


_FIELD_CHECKS = {
    "name": _text,
    "id_field": _text,
    "title_field": _text,
    "image_field": lambda value: None if value is None or isinstance(value, str) else "a string or null",
    "attributes": _text_list,
    "facets": lambda value: None if value is None or _text_list(value) is None else "a list of strings or null",
    "missing_values": _text_list,
    "require_title": lambda value: None if isinstance(value, bool) else "true or false",
    "confine_images": lambda value: None if isinstance(value, bool) else "true or false",
    "max_member_bytes": lambda value: (
        None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else "a whole number of bytes >= 1"
    ),
}


@dataclass(frozen=True)
class CatalogSchema:
    """Column names of a catalog. Load other schemas from JSON with `CatalogSchema.from_file`."""

    name: str = "kagl"
    id_field: str = "id"
    title_field: str = "title"
    image_field: str | None = None  # a column holding the image's relative path; None means "<id>.<ext>"
    attributes: tuple[str, ...] = ()
    # The categorical attributes: filter chips, facet counts and tag vocabularies. None: every attribute. Numbers
    # (price, year) and free text stay attributes (stored, shown) but are not facets.
    facets: tuple[str, ...] | None = None
    missing_values: tuple[str, ...] = ("", "NA", "N/A", "nan", "None")
    require_title: bool = True
    # An untrusted catalog must not make vitrine read files outside it: an image path that resolves outside the catalog
    # folder ('..', an absolute path, a symlink pointing out) is a bad row. False for a trusted catalog that points elsewhere.
    confine_images: bool = True
    max_member_bytes: int = MAX_MEMBER_BYTES  # WebDataset shards: the largest tar member read (a larger one: a bad row)

    @property
    def facet_fields(self) -> tuple[str, ...]:
        """The categorical attributes, in column order."""
        return self.attributes if self.facets is None else tuple(a for a in self.attributes if a in self.facets)

    def clean(self, value: object) -> str | None:
        """Return the value as stripped text, or None when it counts as missing."""
        if value is None:
            return None
        text = str(value).strip()
        return None if text in self.missing_values else text

    @classmethod
    def from_dict(cls, data: dict, origin: str = "schema") -> "CatalogSchema":
        """A schema from its JSON form; a wrong key or type is a `SchemaError` naming `origin` and the field."""
        refuse_unknown(require_object(data, origin, SchemaError), cls, origin, SchemaError)
        values = dict(data)
        for key, value in values.items():
            check = _FIELD_CHECKS.get(key)
            problem = check(value) if check else None
            if problem:
                raise SchemaError(f"{origin}: field '{key}' must be {problem}, got {value!r}")
        for key in ("attributes", "missing_values", "facets"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        unknown = sorted(set(values.get("facets") or ()) - set(values.get("attributes", ())))
        if unknown:
            raise SchemaError(f"{origin}: facets {unknown} are not in attributes {list(values.get('attributes', ()))}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "CatalogSchema":
        """Read a schema JSON file (UTF-8, a BOM allowed); every problem is a `SchemaError` naming the file."""
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SchemaError(f"{path}: not UTF-8 text ({exc})") from None
        return cls.from_dict(loads_object(text, str(path), SchemaError), origin=str(path))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "id_field": self.id_field,
            "title_field": self.title_field,
            "image_field": self.image_field,
            "attributes": list(self.attributes),
            "facets": None if self.facets is None else list(self.facets),
            "missing_values": list(self.missing_values),
            "require_title": self.require_title,
            "confine_images": self.confine_images,
            "max_member_bytes": self.max_member_bytes,
        }


def builtin_schema(name: str) -> CatalogSchema:
    """A schema shipped with vitrine, e.g. `kagl`."""
    text = resources.files("vitrine.data").joinpath("schemas", f"{name}.json").read_text(encoding="utf-8")
    return CatalogSchema.from_dict(json.loads(text))


def resolve_schema(spec: str | Path | CatalogSchema | None) -> CatalogSchema:
    """Accept a schema object, a builtin name, a JSON path, or None (the KAGL default)."""
    if isinstance(spec, CatalogSchema):
        return spec
    if spec is None:
        return builtin_schema("kagl")
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        return CatalogSchema.from_file(path)
    return builtin_schema(str(spec))
