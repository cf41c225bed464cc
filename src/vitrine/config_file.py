"""Configs as data, read and written one way: frozen dataclasses read from JSON (retired keys dropped or refused with
their reason, unknown keys refused, each value checked against its field's type hint, nested configs and tuples
rebuilt), written back, copied with changes; a config file may `extends` another; and the checks every JSON object a
user writes goes through.

A config class is a frozen dataclass deriving from `ConfigFile`. It may set, as plain class attributes (no annotation,
so that they are not fields): `config_name` (how messages name it; default the class name), `config_error` (the
`ConfigError` subclass it raises), `retired` (dotted keys removed from it: their no-op value and why they went) and
`field_checks` (per-field checks that replace the type check: a value -> None, or what the value must be). Its own
validation stays in its `__post_init__`, raising `ConfigError`; read from a file, such an error is prefixed with it.
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields, is_dataclass
from importlib import resources
from pathlib import Path

from vitrine.errors import ConfigError, InvalidInput, MissingFile

EXTENDS = "extends"  # a config file's key naming the file it builds on (a path relative to it)


class ConfigFile:
    """Mixin for a frozen dataclass config: `to_dict`/`from_dict`, `from_file`/`save`, `replace`."""

    config_name: typing.ClassVar[str | None] = None
    config_error: typing.ClassVar[type[ConfigError]] = ConfigError
    retired: typing.ClassVar[Mapping[str, tuple[object, str]]] = {}
    field_checks: typing.ClassVar[Mapping[str, Callable[[object], str | None]]] = {}
    builtins: typing.ClassVar[tuple[str, str] | None] = None  # (package, folder) of the configs shipped by name

    @classmethod
    def builtin(cls, name: str):
        """The config shipped as `<folder>/<name>.json` in the package `builtins` names."""
        package, folder = cls.builtins
        text = resources.files(package).joinpath(folder, f"{name}.json").read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    @classmethod
    def resolve(cls, spec, default: str = "kagl"):
        """`spec` as this config: the object itself, None (the `default` builtin), a JSON file, or a builtin's name."""
        if isinstance(spec, cls):
            return spec
        if spec is None:
            return cls.builtin(default)
        path = Path(spec)
        return cls.from_file(path) if path.suffix == ".json" or path.exists() else cls.builtin(str(spec))

    def to_dict(self) -> dict:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict, origin: str | None = None):
        """The config `data` describes; `origin` (a file) names it in errors, else the class does."""
        return build(cls, data, origin)

    @classmethod
    def from_file(cls, path: str | os.PathLike):
        """The config a JSON file holds, its `extends` chain resolved; every problem names the file."""
        return cls.from_dict(read_config(path, cls.config_error), origin=str(path))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})


def config_name(cls) -> str:
    return getattr(cls, "config_name", None) or cls.__name__


def jsonable(value):
    """Tuples as lists, recursively: what the value reads back as from JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def loads_object(text: str | bytes, what: str, error: type[Exception] = InvalidInput) -> dict:
    """JSON text that must hold an object; bad JSON (numbers too long, nesting too deep included) or another type is
    `error` naming `what`."""
    try:
        data = json.loads(text)
    except ValueError as exc:  # also bytes that are not UTF-8, and numbers over 4,300 digits
        raise error(f"{what}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    except RecursionError:
        raise error(f"{what}: not valid JSON (nested too deeply)") from None
    return require_object(data, what, error)


def require_object(data, what: str, error: type[Exception] = InvalidInput) -> dict:
    if not isinstance(data, dict):
        raise error(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def read_object(path: str | os.PathLike, error: type[Exception] = ConfigError) -> dict:
    """The JSON object a UTF-8 file holds (a BOM allowed); a missing file is `MissingFile`, bad text `error`."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MissingFile(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc})") from None
    return loads_object(text, str(path), error)


def read_config(path: str | os.PathLike, error: type[Exception] = ConfigError) -> dict:
    """A config file's JSON object over the one it `extends` (a path relative to it), recursively: the child's keys
    replace its parent's whole (a nested object too). A missing parent or an `extends` cycle is `error` naming the
    files."""
    chain: list[tuple[Path, dict]] = []
    path = Path(path)
    while True:
        if path.resolve() in (p.resolve() for p, _ in chain):
            raise error(
                f"{' -> '.join(str(p) for p in [*(p for p, _ in chain), path])}: {EXTENDS} goes round in a cycle"
            )
        data = read_object(path, error)
        chain.append((path, data))
        parent = data.pop(EXTENDS, None)
        if parent is None:
            break
        if not isinstance(parent, str) or not parent:
            raise error(f"{path}: {EXTENDS} must be a file name relative to it, got {parent!r}")
        if not (path.parent / parent).is_file():
            raise error(f"{path}: {EXTENDS} {parent!r}, but there is no {path.parent / parent}")
        path = path.parent / parent
    merged: dict = {}
    for _, data in reversed(chain):  # the root first, each child over it
        merged.update(data)
    return merged


def refuse_unknown(data: dict, cls, what: str, error: type[Exception] = ConfigError) -> None:
    """Refuse keys of `data` that are not fields of the dataclass `cls`, naming the known ones."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise error(f"{what}: unknown keys {sorted(unknown, key=str)}; expected some of {sorted(known)}")


def drop_retired(data: dict, retired: Mapping[str, tuple[object, str]], what: str, error=ConfigError) -> dict:
    """`data` less its retired keys (dotted: `section.key`) at their no-op values; at any other value one is refused
    with the reason it went."""
    out = dict(data)
    for name, (noop, why) in retired.items():
        section, _, key = name.rpartition(".")
        holder = out.get(section) if section else out
        if not isinstance(holder, dict) or key not in holder:
            continue
        if holder[key] != noop:
            raise error(
                f"{what}: {name} was removed ({why}); drop it from the config (only its no-op value {noop!r} is "
                "still read)"
            )
        if section:
            out[section] = holder = dict(holder)
        del holder[key]
    return out


def build(cls, data: dict, origin: str | None = None):
    """`cls(**data)` read the one way: retired keys dropped, unknown keys refused, each value checked and read as its
    field's type hint says. Errors name `origin` (a file) when given, else the class."""
    return _build(cls, data, origin or config_name(cls), prefix=origin is not None)


def _build(cls, data, what: str, prefix: bool):
    error = getattr(cls, "config_error", ConfigError)
    data = drop_retired(require_object(data, what, error), getattr(cls, "retired", {}), what, error)
    refuse_unknown(data, cls, what, error)
    hints = typing.get_type_hints(cls)
    checks = getattr(cls, "field_checks", {})
    values = {}
    for key, value in data.items():
        check = checks.get(key)
        problem = check(value) if check else None
        if problem:
            raise error(f"{what}: field '{key}' must be {problem}, got {value!r}")
        try:
            values[key] = _read(hints[key], value, what if prefix else None, skip_check=check is not None)
        except _Mismatch:
            raise error(f"{what}: field '{key}' must be {describe(hints[key])}, got {value!r}") from None
    try:
        return cls(**values)
    except ConfigError as exc:  # the class's own validation: say which file, once
        if not prefix or str(exc).startswith(f"{what}:"):
            raise
        raise _prefixed(exc, what) from None


def _prefixed(exc: ConfigError, what: str) -> ConfigError:
    try:
        return type(exc)(f"{what}: {exc}", code=exc.code, status=exc.status)
    except TypeError:  # a subclass with its own constructor: keep it as it is
        return exc


class _Mismatch(Exception):
    """A value that is not of its field's type (turned into the config's error by `_build`, which names the field)."""


def _read(hint, value, origin: str | None, skip_check: bool = False):
    """`value` as `hint` says: a nested config from an object, tuples from lists; `_Mismatch` for a wrong type."""
    if hint is typing.Any or hint is object:
        return value
    if isinstance(hint, type) and is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise _Mismatch
        nested = f"{origin}: {config_name(hint)}" if origin else config_name(hint)
        if issubclass(hint, ConfigFile):
            return hint.from_dict(value, origin=nested if origin else None)
        return _build(hint, value, nested, prefix=origin is not None)
    origin_type, args = typing.get_origin(hint), typing.get_args(hint)
    if origin_type in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _read(arg, value, origin, skip_check)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin_type in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin_type is tuple and args and args[-1] is not Ellipsis:  # a fixed length: tuple[float, float]
            if len(value) != len(args):
                raise _Mismatch
            items = tuple(_read(a, v, origin, skip_check) for a, v in zip(args, value))
        else:
            items = tuple(_read(args[0], v, origin, skip_check) for v in value) if args else tuple(value)
        return list(items) if (origin_type or hint) is list else items
    if origin_type in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, dict):
            raise _Mismatch
        if len(args) == 2:
            if any(not isinstance(k, str) for k in value):
                raise _Mismatch
            return {k: _read(args[1], v, origin, skip_check) for k, v in value.items()}
        return value
    if skip_check or not isinstance(hint, type):  # a class's own check stands in for the type's
        return value
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = type(value) is int  # true and false are not whole numbers
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise _Mismatch
    return value


_NAMES = {
    bool: ("true or false", "true or false values"), int: ("a whole number", "whole numbers"),
    float: ("a number", "numbers"), str: ("a string", "strings"),
}


def describe(hint, plural: bool = False) -> str:
    """What a value of type `hint` is, in a user's words: 'a list of strings or null'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _NAMES:
        return _NAMES[hint][plural]
    if isinstance(hint, type) and is_dataclass(hint):
        return "objects" if plural else "an object"
    if origin in (typing.Union, types.UnionType):
        text = " or ".join(describe(a, plural) for a in args if a is not type(None))
        return f"{text} or null" if type(None) in args else text
    if origin in (tuple, list) or hint in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            kinds = {describe(a, True) for a in args}
            inner = f"{len(args)} {kinds.pop()}" if len(kinds) == 1 else f"{len(args)} values"
        else:
            inner = describe(args[0], True) if args else "values"
        return f"lists of {inner}" if plural else f"a list of {inner}"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        inner = f" of {describe(args[1], True)}" if len(args) == 2 else ""
        return f"objects{inner}" if plural else f"an object{inner}"
    return getattr(hint, "__name__", str(hint))
