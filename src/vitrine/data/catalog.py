"""`open_catalog`: one entry point that recognises every catalog format vitrine reads."""

from __future__ import annotations

import glob
import os
from dataclasses import replace
from pathlib import Path

from vitrine.data.folder import METADATA_NAMES, FolderCatalog
from vitrine.data.images import DEFAULT_MAX_PIXELS
from vitrine.data.records import CatalogReader
from vitrine.data.schema import CatalogSchema, resolve_schema
from vitrine.data.schema_infer import describe_schema, infer_schema
from vitrine.data.shards import ShardCatalog
from vitrine.errors import MissingFile


def detect_format(path: str | os.PathLike) -> str:
    """Return 'shards' or 'folder' for a catalog path, or raise with what was expected."""
    text = str(path)
    if any(ch in text for ch in "{*?[") or text.endswith(".tar"):
        return "shards"
    p = Path(text)
    if p.is_file() and p.suffix.lower() in (".csv", ".jsonl"):
        return "folder"
    if p.is_dir():
        has_metadata = any((p / name).is_file() for name in METADATA_NAMES)
        if has_metadata and (p / "images").is_dir():
            return "folder"
        if glob.glob(str(p / "*.tar")) or glob.glob(str(p / "shards" / "*.tar")):
            return "shards"
        if has_metadata:
            return "folder"
        raise MissingFile(f"{p} holds neither WebDataset shards (*.tar) nor a {' or '.join(METADATA_NAMES)}")
    raise MissingFile(f"catalog not found: {text}")


def schema_for(
    path: str | os.PathLike, schema: str | os.PathLike | CatalogSchema | None = None
) -> tuple[CatalogSchema, str]:
    """The schema to read `path` with and one line saying so: the one given, or the one its columns say (None,
    'auto')."""
    if schema is not None and schema != "auto":
        resolved = resolve_schema(schema)
        return resolved, f"schema: {resolved.name} (given); facets={','.join(resolved.facet_fields) or '-'}"
    inferred, about = infer_schema(path, detect_format(path))
    return inferred, describe_schema(inferred, about)


def open_catalog(
    path: str | os.PathLike, schema: str | os.PathLike | CatalogSchema | None = None, on_error: str = "fail",
    max_pixels: int = DEFAULT_MAX_PIXELS, require_title: bool | None = None, max_member_bytes: int | None = None,
) -> CatalogReader:
    """Open WebDataset shards (dir, glob, braces) or a folder + CSV/JSONL, streaming items.

    `schema` None (or 'auto') reads the catalog's own columns (`vitrine.data.schema_infer`): KAGL's columns give the
    `kagl` schema, any others an inferred one.

    `require_title` overrides the schema: a job that never reads titles should not reject rows without one.
    `max_member_bytes` caps one tar member of a shard (default: the schema's); a larger one is refused unread.
    """
    resolved = schema_for(path, schema)[0]
    if require_title is not None and require_title != resolved.require_title:
        resolved = replace(resolved, require_title=require_title)
    if detect_format(path) == "shards":
        return ShardCatalog(path, resolved, on_error=on_error, max_pixels=max_pixels, max_member_bytes=max_member_bytes)
    return FolderCatalog(path, resolved, on_error=on_error, max_pixels=max_pixels)
