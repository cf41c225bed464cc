"""A flat, frozen config dataclass as data: read from JSON (unknown keys refused), written back, copied with changes."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path


class ConfigFile:
    """Mixin for a frozen dataclass whose fields are plain values; top-level lists are read as tuples."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @classmethod
    def from_file(cls, path: str | os.PathLike):
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})
