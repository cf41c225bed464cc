"""Configs as data: frozen dataclasses read from JSON (unknown keys refused, nested configs and tuples rebuilt from
their type hints), written back, copied with changes; and the checks every JSON object a user writes goes through."""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path


class ConfigFile:
    """Mixin for a frozen dataclass config: `to_dict`/`from_dict`, `from_file`/`save`, `replace`."""

    def to_dict(self) -> dict:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict):
        return build(cls, data)

    @classmethod
    def from_file(cls, path: str | os.PathLike):
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})


def jsonable(value):
    """Tuples as lists, recursively: what the value reads back as from JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def loads_object(text: str | bytes, what: str, error: type[Exception] = ValueError) -> dict:
    """JSON text that must hold an object; bad JSON (numbers too long, nesting too deep included) or another type is
    `error` naming `what`."""
    try:
        data = json.loads(text)
    except ValueError as exc:  # also bytes that are not UTF-8, and numbers over 4,300 digits
        raise error(f"{what}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    except RecursionError:
        raise error(f"{what}: not valid JSON (nested too deeply)") from None
    return require_object(data, what, error)


def require_object(data, what: str, error: type[Exception] = ValueError) -> dict:
    if not isinstance(data, dict):
        raise error(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def refuse_unknown(data: dict, cls, what: str, error: type[Exception] = ValueError) -> None:
    """Refuse keys of `data` that are not fields of the dataclass `cls`, naming the known ones."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise error(f"{what}: unknown keys {sorted(unknown, key=str)}; expected some of {sorted(known)}")


def build(cls, data: dict):
    """`cls(**data)` with unknown keys refused and each value read as its field's type hint says."""
    refuse_unknown(require_object(data, cls.__name__), cls, cls.__name__)
    hints = typing.get_type_hints(cls)
    return cls(**{key: _read(hints[key], value) for key, value in data.items()})


def _read(hint, value):
    if isinstance(hint, type) and is_dataclass(hint):
        return (
            value
            if isinstance(value, hint)
            else (hint.from_dict(value) if hasattr(hint, "from_dict") else build(hint, value))
        )
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and value is not None:
        return _read(next(a for a in args if a is not type(None)), value)
    if isinstance(value, list):
        return tuple(_read(args[0], v) for v in value) if origin is tuple and args else tuple(value)
    return value
