"""WebDataset tar shards: each sample is `<key>.jpg` (or png/webp) plus `<key>.json` metadata."""
from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from vitrine.data.errors import DataError, MissingFileError, RowFormatError
from vitrine.data.images import DEFAULT_MAX_PIXELS
from vitrine.data.records import CatalogReader, Record
from vitrine.data.schema import CatalogSchema

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICE = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """Expand `{000000..000008}` ranges (zero-padded like the lower bound) and `{a,b}` choices, left to right."""
    matches = [m for m in (_RANGE.search(pattern), _CHOICE.search(pattern)) if m]
    if not matches:
        return [pattern]
    match = min(matches, key=lambda m: m.start())
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if match.re is _RANGE:
        low, high = match.group(1), match.group(2)
        step = 1 if int(high) >= int(low) else -1
        choices = [f"{n:0{len(low)}d}" for n in range(int(low), int(high) + step, step)]
    else:
        choices = match.group(1).split(",")
    return [out for choice in choices for out in expand_braces(f"{head}{choice}{tail}")]


def resolve_shards(spec: str | os.PathLike) -> list[str]:
    """Turn a directory, a glob, a brace pattern or a single tar into a sorted list of shard paths."""
    spec = str(spec)
    if os.path.isdir(spec):
        inner = os.path.join(spec, "shards")
        folder = inner if not glob.glob(os.path.join(spec, "*.tar")) and os.path.isdir(inner) else spec
        paths = sorted(glob.glob(os.path.join(folder, "*.tar")))
        if not paths:
            raise FileNotFoundError(f"no .tar shards in directory {spec}")
        return paths
    paths: list[str] = []
    missing: list[str] = []
    for pattern in expand_braces(spec):
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            paths.extend(matches) if matches else missing.append(pattern)
        elif os.path.isfile(pattern):
            paths.append(pattern)
        else:
            missing.append(pattern)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise FileNotFoundError(f"{len(missing)} of {len(missing) + len(paths)} shards not found: {shown}")
    return paths


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the basename."""
    directory, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (os.path.join(directory, stem) if directory else stem), ext.lower()


class ShardCatalog(CatalogReader):
    """Streams samples from WebDataset shards, one shard open at a time."""

    def __init__(self, spec: str | os.PathLike, schema: CatalogSchema, on_error="fail", max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(schema, on_error, max_pixels)
        self.spec = str(spec)
        self.paths = resolve_shards(spec)

    def describe(self) -> str:
        return f"{len(self.paths)} WebDataset shards from {self.spec}"

    def count(self) -> int:
        total = 0
        for path in self.paths:
            keys = set()
            try:
                with tarfile.open(path, "r") as tar:
                    for member in tar:
                        if member.isfile():
                            keys.add(_split_key(member.name)[0])
            except (tarfile.TarError, OSError):
                continue
            total += len(keys)
        return total

    def _scan(self) -> Iterator[Record | DataError]:
        for path in self.paths:
            yield from self._scan_shard(path)

    def _scan_shard(self, path: str) -> Iterator[Record | DataError]:
        source = Path(path).name
        row = 0
        current_key: str | None = None
        members: dict[str, bytes] = {}
        try:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    tar.members = []  # stream mode keeps every header otherwise; memory must not grow
                    if not member.isfile():
                        continue
                    key, ext = _split_key(member.name)
                    if key != current_key and current_key is not None:
                        row += 1
                        yield self._sample(current_key, members, source, row)
                        members = {}
                    current_key = key
                    handle = tar.extractfile(member)
                    members[ext] = handle.read() if handle is not None else b""
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield RowFormatError(f"shard is truncated or not a tar file ({exc}); rest of shard skipped", source=source, row=row + 1)
            return
        if current_key is not None:
            row += 1
            yield self._sample(current_key, members, source, row)

    def _sample(self, key: str, members: dict[str, bytes], source: str, row: int) -> Record | DataError:
        image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
        if "json" in members:
            try:
                meta = json.loads(members["json"].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return RowFormatError(f"sample {key}: malformed JSON metadata ({exc})", source=source, row=row, item_id=key)
            if not isinstance(meta, dict):
                return RowFormatError(f"sample {key}: JSON metadata is not an object", source=source, row=row, item_id=key)
        else:
            meta = {}
        meta.setdefault(self.schema.id_field, os.path.basename(key))
        if "txt" in members and self.schema.title_field not in meta:
            meta[self.schema.title_field] = members["txt"].decode("utf-8", errors="replace")
        if image_ext is None:
            return MissingFileError(f"sample {key} has no image member ({', '.join(IMAGE_EXTENSIONS)})", source=source, row=row, item_id=str(meta.get(self.schema.id_field)))
        return self.make_record(meta, source=source, row=row, image_bytes=members[image_ext])
