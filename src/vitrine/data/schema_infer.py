"""A schema read from the catalog itself: which columns hold the id, the title and the image, and which of the others
are categories (facets and tags) rather than numbers or free text.

A catalog whose columns are KAGL's gets the shipped `kagl` schema unchanged. Any other catalog gets its columns
classified from their names and a sample of their values. A catalog that could be read two ways is an
`AmbiguousSchemaError`, which writes a draft schema file for the user to correct and names it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vitrine.data.folder import find_metadata
from vitrine.data.schema import CatalogSchema, SchemaError, builtin_schema
from vitrine.data.shards import resolve_shards

SAMPLE_ROWS = 2000  # rows read to classify the columns; inference never reads a whole large catalog

# Column names, compared after lower-casing and dropping everything but letters and digits, best first.
ID_NAMES = (
    "id", "sku", "productid", "itemid", "articleid", "articleno", "productcode", "itemcode", "code", "uid", "asin",
    "key", "ref", "reference", "styleid", "pid",
)
TITLE_NAMES = (
    "title", "name", "productname", "productdisplayname", "displayname", "producttitle", "itemname", "caption",
    "description", "productdescription", "label",
)
IMAGE_NAMES = (
    "image", "imagepath", "imagefile", "imagename", "img", "photo", "picture", "pic", "file", "filename", "path",
    "imageurl", "thumbnail", "thumb",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
NUMBER_WORDS = ("price", "cost", "year", "qty", "quantity", "stock", "rating", "weight", "size_cm", "count", "amount")

MAX_FACET_VALUES = 256  # a categorical column has at most this many distinct values in the sample ...
MAX_FACET_SHARE = 0.5  # ... and at most this share of its filled cells distinct (unless the catalog is tiny)
MAX_FACET_WORDS = 4.0  # ... and short values: longer ones are free text


class AmbiguousSchemaError(SchemaError):
    """The catalog's columns can be read more than one way; `draft` is the schema file written for the user to fix."""

    code = "ambiguous_schema"

    def __init__(self, message: str, draft: Path | None):
        super().__init__(message)
        self.draft = draft


@dataclass(frozen=True)
class ColumnProfile:
    """What a sample says about one column."""

    name: str
    filled: int
    distinct: int
    numeric_share: float
    mean_words: float
    image_share: float
    unique: bool

    @property
    def kind(self) -> str:
        """'number', 'category' or 'text' (an attribute column's role)."""
        if self.filled and (
            self.numeric_share >= 0.9
            or any(word in _norm(self.name) for word in NUMBER_WORDS)
            and self.numeric_share >= 0.5
        ):
            return "number"
        if not self.filled:
            return "text"
        small = self.filled < 40  # a tiny catalog: every value may be rare
        if (
            self.distinct <= MAX_FACET_VALUES
            and self.mean_words <= MAX_FACET_WORDS
            and (small or self.distinct <= MAX_FACET_SHARE * self.filled)
        ):
            return "category"
        return "text"

    @classmethod
    def from_counts(cls, name: str, counts: Sequence[tuple[str, int]]) -> "ColumnProfile":
        """The profile of a column known by its values' counts (an index's stored values), with no missing cells."""
        filled = sum(n for _, n in counts)

        def share(weight) -> float:
            return sum(weight(v) * n for v, n in counts) / filled if filled else 0.0

        return cls(
            name=name,
            filled=filled,
            distinct=len(counts),
            numeric_share=share(_is_number),
            mean_words=share(lambda v: len(v.split())),
            image_share=share(lambda v: v.lower().endswith(IMAGE_SUFFIXES)),
            unique=filled > 0 and filled == len(counts),
        )


def _limits(base: CatalogSchema | None) -> dict:
    base = base or CatalogSchema()
    return {"confine_images": base.confine_images, "max_member_bytes": base.max_member_bytes}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _profile(name: str, values: Sequence[str | None]) -> ColumnProfile:
    filled = [v for v in values if v is not None]
    numeric = sum(_is_number(v) for v in filled)
    words = sum(len(v.split()) for v in filled)
    images = sum(v.lower().endswith(IMAGE_SUFFIXES) for v in filled)
    n = len(filled)
    return ColumnProfile(
        name=name, filled=n, distinct=len(set(filled)), numeric_share=numeric / n if n else 0.0,
        mean_words=words / n if n else 0.0, image_share=images / n if n else 0.0,
        unique=n == len(values) and len(set(filled)) == n and n > 0,
    )


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").lstrip("$€£"))
    except ValueError:
        return False
    return True


def _by_name(columns: Iterable[str], names: Sequence[str]) -> list[str]:
    """Columns whose normalised name is one of `names`, best first."""
    rank = {name: i for i, name in enumerate(names)}
    return sorted((c for c in columns if _norm(c) in rank), key=lambda c: rank[_norm(c)])


def _pick(role: str, named: list[str], by_content: list[str], problems: list[str]) -> str | None:
    if named:
        return named[0]
    if len(by_content) == 1:
        return by_content[0]
    if len(by_content) > 1:
        problems.append(
            f"no column is named like a{'n' if role[0] in 'aeiou' else ''} {role}, and "
            f"{', '.join(repr(c) for c in by_content)} "
            f"could each be it"
        )
    return None


def infer_from_rows(
    header: Sequence[str], rows: Sequence[Mapping[str, object]], name: str = "inferred",
    base: CatalogSchema | None = None, needs_image_column: bool = False,
) -> tuple[CatalogSchema, dict]:
    """The schema for a catalog with this header and these sample rows, and a description of what was decided.

    Raises `SchemaError` (no draft) when no id column can be found at all, and returns `problems` in the description
    when a role is ambiguous (the caller writes the draft)."""
    base = base or CatalogSchema()
    header = [h for h in header if h]
    kagl = builtin_schema("kagl")
    if {kagl.id_field, kagl.title_field, *kagl.attributes} <= set(header):
        return replace(kagl, **_limits(base)), {"kagl": True, "problems": []}
    values = {column: [base.clean(row.get(column)) for row in rows] for column in header}
    profiles = {column: _profile(column, values[column]) for column in header}
    problems: list[str] = []
    id_named = [c for c in _by_name(header, ID_NAMES) if profiles[c].unique]
    id_field = _pick(
        "id",
        id_named,
        [
            c
            for c in header
            if profiles[c].unique
            and profiles[c].mean_words <= 1.0
            and profiles[c].image_share < 0.5
            and not _by_name([c], TITLE_NAMES)
        ],
        problems,
    )
    rest = [c for c in header if c != id_field]
    title_named = [c for c in _by_name(rest, TITLE_NAMES) if profiles[c].kind != "number"]
    texty = [
        c
        for c in rest
        if profiles[c].mean_words >= 2.5 and profiles[c].image_share < 0.5 and profiles[c].kind == "text"
    ]
    title_field = _pick("title", title_named, texty, problems)
    rest = [c for c in rest if c != title_field]
    image_named = [c for c in _by_name(rest, IMAGE_NAMES) if profiles[c].image_share >= 0.5]
    image_field = _pick("image path", image_named, [c for c in rest if profiles[c].image_share >= 0.8], problems)
    attributes = [c for c in header if c not in (id_field, title_field, image_field)]
    facets = [c for c in attributes if profiles[c].kind == "category"]
    if id_field is None and not problems:
        problems.append(f"no column holds a unique value per row (columns: {', '.join(header)})")
    if title_field is None and not problems:
        problems.append(f"no column is named like a title ({', '.join(TITLE_NAMES[:4])}, ...) or holds product names")
    schema = replace(
        base, name=name, id_field=id_field or header[0], title_field=title_field or "title", image_field=image_field,
        attributes=tuple(attributes), facets=tuple(facets),
    )
    kinds = {c: profiles[c].kind for c in attributes}
    return schema, {"kagl": False, "problems": problems, "kinds": kinds, "rows_sampled": len(rows)}


def sample_rows(path: str | os.PathLike, fmt: str, limit: int = SAMPLE_ROWS) -> tuple[list[str], list[dict], str]:
    """(header, up to `limit` rows, the file they came from) of a folder catalog's metadata or a shard set's JSON."""
    if fmt == "folder":
        metadata = find_metadata(path)
        with open(metadata, newline="", encoding="utf-8-sig") as handle:
            if metadata.suffix.lower() == ".csv":
                reader = csv.DictReader(handle)
                rows = [dict(row) for _, row in zip(range(limit), reader)]
                return list(reader.fieldnames or []), rows, str(metadata)
            rows = []
            for line in handle:
                if len(rows) >= limit:
                    break
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append({k: v for k, v in row.items() if not isinstance(v, (dict, list))})
            return _union_header(rows), rows, str(metadata)
    rows = []
    first = resolve_shards(path)[0]
    with tarfile.open(first, "r|*") as tar:
        for member in tar:
            if len(rows) >= limit:
                break
            if member.isfile() and member.name.endswith(".json") and member.size < 2**20:
                handle = tar.extractfile(member)
                try:
                    row = json.loads(handle.read().decode("utf-8-sig")) if handle else None
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append({k: v for k, v in row.items() if not isinstance(v, (dict, list))})
    return _union_header(rows), rows, first


def _union_header(rows: Sequence[Mapping[str, object]]) -> list[str]:
    header: dict[str, None] = {}
    for row in rows:
        header.update(dict.fromkeys(row))
    return list(header)


def draft_path(catalog: str | os.PathLike) -> Path:
    """Where a draft schema goes: beside the catalog when that folder is writable, else in the working directory."""
    source = Path(catalog)
    folder = source if source.is_dir() else source.parent
    if folder.is_dir() and os.access(folder, os.W_OK) and "*" not in str(catalog) and "{" not in str(catalog):
        return folder / "schema.draft.json"
    return Path.cwd() / f"{_norm(source.name) or 'catalog'}.schema.draft.json"


_CACHE: dict[
    tuple, tuple[CatalogSchema, dict]
] = {}  # path, mtime -> inference (a registry-like memo: same files, same answer)


def infer_schema(path: str | os.PathLike, fmt: str, base: CatalogSchema | None = None) -> tuple[CatalogSchema, dict]:
    """The schema a catalog's own columns say (`fmt`: 'folder' or 'shards') and what was decided; an ambiguous
    catalog writes a draft schema file and raises an `AmbiguousSchemaError` naming it."""
    try:
        header, rows, source = sample_rows(path, fmt)
    except (csv.Error, tarfile.TarError, UnicodeDecodeError, EOFError) as exc:
        # An unreadable sample: the reader itself reports the bad file or row, naming it, under its --on-error policy.
        header, rows, source = [], [], str(path)
        reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = "no rows to sample"
    if not rows:
        return replace(builtin_schema("kagl"), **_limits(base)), {"kagl": True, "fallback": reason, "problems": []}
    try:
        stamp = os.stat(source).st_mtime_ns
    except OSError:
        stamp = 0
    key = (os.path.abspath(source), stamp, base)
    if key not in _CACHE:
        schema, about = infer_from_rows(header, rows, name=f"inferred:{Path(source).name}", base=base)
        about = {**about, "source": source}
        if about["problems"]:
            draft = draft_path(path)
            try:
                draft.write_text(json.dumps(schema.to_dict(), indent=2) + "\n", encoding="utf-8")
            except OSError:
                draft = None
            where = (
                f"a draft schema is in {draft}: fix it and pass --schema {draft}"
                if draft
                else "write a schema file and pass --schema FILE"
            )
            raise AmbiguousSchemaError(
                f"cannot infer the schema of {source}: {'; '.join(about['problems'])}; {where}", draft
            )
        _CACHE[key] = (schema, about)
    return _CACHE[key]


def describe_schema(schema: CatalogSchema, about: Mapping[str, object] | None = None) -> str:
    """One line saying how a catalog is read, e.g. `schema inferred: id=sku title=name image=photo facets=colour,sex
    other=price`."""
    if about and about.get("fallback"):
        return f"schema: kagl (the catalog's columns could not be sampled: {about['fallback']})"
    if about and about.get("kagl"):
        return f"schema: kagl (the catalog has KAGL's columns); facets={','.join(schema.facet_fields)}"
    kinds = dict(about.get("kinds", {})) if about else {}
    others = [f"{c} ({kinds.get(c, 'text')})" for c in schema.attributes if c not in schema.facet_fields]
    image = schema.image_field or "images/<id>.<ext>"
    return (
        f"schema inferred from {Path(str(about.get('source'))).name if about else 'the catalog'}: id={schema.id_field} "
        f"title={schema.title_field} image={image} facets={','.join(schema.facet_fields) or '-'}"
        + (f" not facets: {', '.join(others)}" if others else "")
    )
