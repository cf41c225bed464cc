"""Catalog schemas as data: which columns hold the id, title, image and attributes, and how far a reader trusts the
files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitrine.config_file import ConfigFile
from vitrine.errors import ConfigError

MAX_MEMBER_BYTES = 64 * 2**20  # far above any product photo or metadata file; a larger shard member is refused unread


class SchemaError(ConfigError):
    """A catalog schema file that cannot be used; the message names the file and the field."""

    code = "invalid_schema"


def _bytes_limit(value: object) -> str | None:
    return None if type(value) is int and value >= 1 else "a whole number of bytes >= 1"


@dataclass(frozen=True)
class CatalogSchema(ConfigFile):
    """Column names of a catalog. Load other schemas from JSON with `CatalogSchema.from_file`; a wrong key or type is
    a `SchemaError` naming the file (or `schema`) and the field."""

    config_name = "schema"
    builtins = ("vitrine.data", "schemas")
    config_error = SchemaError
    field_checks = {"max_member_bytes": _bytes_limit}

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
    # folder ('..', an absolute path, a symlink pointing out) is a bad row. False for a trusted catalog that points
    # elsewhere.
    confine_images: bool = True
    max_member_bytes: int = MAX_MEMBER_BYTES  # WebDataset shards: the largest tar member read (a larger one: a bad row)

    def __post_init__(self):
        unknown = sorted(set(self.facets or ()) - set(self.attributes))
        if unknown:
            raise SchemaError(f"facets {unknown} are not in attributes {list(self.attributes)}")

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


def builtin_schema(name: str) -> CatalogSchema:
    """A schema shipped with vitrine, e.g. `kagl`."""
    return CatalogSchema.builtin(name)


def resolve_schema(spec: str | Path | CatalogSchema | None) -> CatalogSchema:
    """Accept a schema object, a builtin name, a JSON path, or None (the KAGL default)."""
    return CatalogSchema.resolve(spec)
