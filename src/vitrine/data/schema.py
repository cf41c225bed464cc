"""Catalog schemas as data: which columns hold the id, title, image and attributes."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class CatalogSchema:
    """Column names of a catalog. Load other schemas from JSON with `CatalogSchema.from_file`."""

    name: str = "kagl"
    id_field: str = "id"
    title_field: str = "title"
    image_field: str | None = None  # a column holding the image's relative path; None means "<id>.<ext>"
    attributes: tuple[str, ...] = ()
    missing_values: tuple[str, ...] = ("", "NA", "N/A", "nan", "None")
    require_title: bool = True

    def clean(self, value: object) -> str | None:
        """Return the value as stripped text, or None when it counts as missing."""
        if value is None:
            return None
        text = str(value).strip()
        return None if text in self.missing_values else text

    @classmethod
    def from_dict(cls, data: dict) -> "CatalogSchema":
        known = {"name", "id_field", "title_field", "image_field", "attributes", "missing_values", "require_title"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown schema keys {sorted(unknown)}; expected some of {sorted(known)}")
        values = dict(data)
        for key in ("attributes", "missing_values"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "CatalogSchema":
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "id_field": self.id_field,
            "title_field": self.title_field,
            "image_field": self.image_field,
            "attributes": list(self.attributes),
            "missing_values": list(self.missing_values),
            "require_title": self.require_title,
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
