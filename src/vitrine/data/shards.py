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
from vitrine.data.schema import MAX_MEMBER_BYTES, CatalogSchema
from vitrine.errors import MissingFile

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
__all__ = ["MAX_MEMBER_BYTES", "ShardCatalog", "expand_braces", "resolve_shards"]
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
            raise MissingFile(f"no .tar shards in directory {spec}")
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
        raise MissingFile(f"{len(missing)} of {len(missing) + len(paths)} shards not found: {shown}")
    return paths


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the basename."""
    directory, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (os.path.join(directory, stem) if directory else stem), ext.lower()


def _drain(handle, chunk: int = 2**20) -> None:
    """Read past a refused member in bounded chunks, never holding it in memory.

    Left to tarfile, a stream skips a member's declared size in fixed blocks even past the end of the data:
    a header declaring a terabyte would cost 10^8 empty reads. Reading hits the end of the data at once.
    """
    if handle is not None:
        while handle.read(chunk):
            pass


class ShardCatalog(CatalogReader):
    """Streams samples from WebDataset shards, one shard open at a time."""

    def __init__(
        self, spec: str | os.PathLike, schema: CatalogSchema, on_error="fail", max_pixels: int = DEFAULT_MAX_PIXELS,
        max_member_bytes: int | None = None,
    ):
        super().__init__(schema, on_error, max_pixels)
        self.max_member_bytes = schema.max_member_bytes if max_member_bytes is None else max_member_bytes
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
                        if not member.isdir():  # refused members count too: each makes a bad row
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
        problem: DataError | None = None  # the first refused member of the current sample
        finished: set[str] = set()  # keys of samples already read: a sample's members must be adjacent
        try:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    tar.members = []  # stream mode keeps every header otherwise; memory must not grow
                    if member.isdir():
                        continue
                    key, ext = _split_key(member.name)
                    if key != current_key and current_key is not None:
                        row += 1
                        yield problem or self._sample(current_key, members, source, row)
                        finished.add(current_key)
                        members, problem = {}, None
                    current_key = key
                    refusal = self._refusal(member, key, ext, members, finished)
                    if refusal is not None:
                        problem = problem or RowFormatError(
                            f"member {member.name!r}: {refusal}", source=source, row=row + 1,
                            item_id=os.path.basename(key),
                        )
                        if member.isfile() and member.size > self.max_member_bytes:
                            _drain(tar.extractfile(member))
                        continue
                    handle = tar.extractfile(member)
                    members[ext] = handle.read() if handle is not None else b""
        except (tarfile.TarError, OSError, EOFError) as exc:
            if problem is not None:
                row += 1
                yield problem
            yield RowFormatError(
                f"shard is truncated or not a tar file ({exc}); rest of shard skipped", source=source, row=row + 1
            )
            return
        if current_key is not None:
            row += 1
            yield problem or self._sample(current_key, members, source, row)

    def _refusal(
        self, member: tarfile.TarInfo, key: str, ext: str, members: dict[str, bytes], finished: set[str]
    ) -> str | None:
        """Why a member cannot be read (unsafe name, link, oversized, repeated), or None."""
        if not member.isfile():
            kind = "symlink" if member.issym() else "hardlink" if member.islnk() else "special file"
            return f"is a {kind}; shards hold regular files only"
        if member.name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", member.name):
            return "name is absolute or climbs out of the shard with '..'"
        if member.size > self.max_member_bytes:
            limit = self.max_member_bytes
            return f"declares {member.size} bytes, over the limit of {limit} bytes per member (--max-member-bytes)"
        if ext in members:
            return f"repeats key {key!r} with extension {ext!r} in the same sample"
        if key in finished:
            return f"key {key!r} already appeared earlier in the shard; a sample's members must be adjacent"
        return None

    def _sample(self, key: str, members: dict[str, bytes], source: str, row: int) -> Record | DataError:
        image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
        if "json" in members:
            try:
                meta = json.loads(members["json"].decode("utf-8-sig"))
            except (ValueError, RecursionError) as exc:  # also: not UTF-8, numbers over 4300 digits, nesting too deep
                return RowFormatError(
                    f"sample {key}: malformed JSON metadata ({exc})", source=source, row=row, item_id=key
                )
            if not isinstance(meta, dict):
                return RowFormatError(
                    f"sample {key}: JSON metadata is not an object", source=source, row=row, item_id=key
                )
        else:
            meta = {}
        meta.setdefault(self.schema.id_field, os.path.basename(key))
        if "txt" in members and self.schema.title_field not in meta:
            meta[self.schema.title_field] = members["txt"].decode("utf-8", errors="replace")
        if image_ext is None:
            return MissingFileError(
                f"sample {key} has no image member ({', '.join(IMAGE_EXTENSIONS)})",
                source=source,
                row=row,
                item_id=str(meta.get(self.schema.id_field)),
            )
        return self.make_record(meta, source=source, row=row, image_bytes=members[image_ext])
