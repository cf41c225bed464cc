"""Model names -> encoders. `vitrine:<name>` models register by name; `hf:`, `openclip:` and `onnx:` are backends;
runtimes other than torch (`onnx`, `onnx-int8`) register a wrapper that turns a model name into their encoder.
The public face of this module is `vitrine.models` (register_model, register_backend, register_runtime, list_models)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from vitrine.errors import Conflict, InvalidInput, NotFound
from vitrine.models.base import Encoder

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `known`, or '' when none is close."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """Names -> entries of one kind (model, backend, runtime, head); a name registered twice is refused."""

    def __init__(self, kind: str, unknown_code: str, shown: Callable[[str], str] = str):
        self.kind = kind
        self.unknown_code = unknown_code  # the error code of a name not registered (README, Errors)
        self._shown = shown  # how a name reads in messages (models: `vitrine:<name>`)
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise Conflict(f"{self.kind} {self._shown(name)} is registered twice", code="duplicate_name")
        self._entries[name] = entry

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = [self._shown(n) for n in self.names()]
            shown = self._shown(name)
            raise NotFound(
                f"unknown {self.kind} {shown!r}{did_you_mean(shown, known)}; known: {', '.join(known)}",
                code=self.unknown_code,
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[T]:
        return [self._entries[name] for name in self.names()]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    factory: Callable[[], Encoder]
    files_fingerprint: Callable[[], str | None] | None = None  # a digest of its weights' files, without building it


@dataclass(frozen=True)
class BackendEntry:
    prefix: str
    pattern: str
    description: str
    factory: Callable[[str], Encoder]
    files_fingerprint: Callable[[str], str | None] | None = None


@dataclass(frozen=True)
class RuntimeEntry:
    name: str
    description: str
    # (model name, runtime, build it on torch, fall back to torch when the runtime cannot run it) -> encoder
    factory: Callable[[str, str, Callable[[], Encoder], bool], Encoder]


_MODELS: Registry[ModelEntry] = Registry("model", "unknown_model", shown=lambda name: f"vitrine:{name}")
_BACKENDS: Registry[BackendEntry] = Registry("backend", "unknown_backend", shown=lambda prefix: f"{prefix}:")
_RUNTIMES: Registry[RuntimeEntry] = Registry("runtime", "unknown_runtime")
_RUNTIMES.add(
    "torch", RuntimeEntry("torch", "PyTorch, the model as built", lambda _name, _runtime, build, _fallback: build())
)


def register_model(name: str, description: str = "", files_fingerprint: Callable[[], str | None] | None = None):
    """Decorator: register a zero-argument factory as model `vitrine:<name>` (Conflict if the name is taken).

    `files_fingerprint`, optional, digests the files the weights are read from without building the model: the ONNX
    export cache is then found without building it."""

    def wrap(factory: Callable[[], Encoder]):
        _MODELS.add(name, ModelEntry(name, description or (factory.__doc__ or "").strip(), factory, files_fingerprint))
        return factory

    return wrap


def register_backend(
    prefix: str, pattern: str, description: str, files_fingerprint: Callable[[str], str | None] | None = None
):
    """Decorator: register a factory for the names `<prefix>:<rest>`, taking `rest` (Conflict if the prefix is
    taken). `pattern` shows what `rest` is, e.g. `hf:<directory>`."""

    def wrap(factory: Callable[[str], Encoder]):
        _BACKENDS.add(prefix, BackendEntry(prefix, pattern, description, factory, files_fingerprint))
        return factory

    return wrap


def register_runtime(name: str, description: str):
    """Decorator: register how runtime `name` builds an encoder from a model name (see RuntimeEntry; Conflict if the
    name is taken, `torch` included)."""

    def wrap(factory: Callable[[str, str, Callable[[], Encoder], bool], Encoder]):
        _RUNTIMES.add(name, RuntimeEntry(name, description, factory))
        return factory

    return wrap


def model_files_fingerprint(name: str) -> str | None:
    """A digest of the files model `name` is built from, read without building it; None where its registration
    cannot say (a hub id) or its files are missing."""
    prefix, sep, rest = name.partition(":")
    if not sep:
        return None
    try:
        if prefix == "vitrine" and rest in _MODELS:
            digest = _MODELS.get(rest).files_fingerprint
            return digest() if digest else None
        backend = _BACKENDS.get(prefix) if prefix in _BACKENDS else None
        return backend.files_fingerprint(rest) if backend and backend.files_fingerprint else None
    except (OSError, ImportError, ValueError, LookupError):  # missing files etc.: building the model says what is wrong
        return None


def list_models(pattern: str | None = None) -> list[str]:
    """Every named model, as `vitrine:<name>`, sorted; with `pattern` (fnmatch wildcards, e.g. `*kagl-base*`), only
    those whose full name, or name after `vitrine:`, it matches."""
    names = _MODELS.names()
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(f"vitrine:{n}", pattern) or fnmatch.fnmatchcase(n, pattern)]
    return [f"vitrine:{name}" for name in names]


def model_entries(pattern: str | None = None) -> list[ModelEntry]:
    """The registrations of `list_models(pattern)`."""
    return [_MODELS.get(name.removeprefix("vitrine:")) for name in list_models(pattern)]


def backend_entries() -> list[BackendEntry]:
    return _BACKENDS.entries()


def runtime_names() -> list[str]:
    """`torch` first, then the registered runtimes, sorted."""
    return ["torch", *(name for name in _RUNTIMES.names() if name != "torch")]


def create_model(name: str, runtime: str = "torch", fallback: bool = False) -> Encoder:
    """Resolve a model name (`vitrine:small`, `vitrine:/path/to/dir`, `hf:/path`, `openclip:ViT-B-32@ckpt.pt`,
    `onnx:DIR`) into an encoder in eval mode.

    `runtime` "onnx" or "onnx-int8" gives the ONNX Runtime encoder of that model (exported into the cache once);
    with `fallback`, a model that cannot be exported (an external checkpoint) runs on torch instead, with a warning.
    """
    if runtime != "torch":
        if runtime not in _RUNTIMES:
            raise NotFound(
                f"runtime must be one of {', '.join(runtime_names())}; got {runtime!r}"
                f"{did_you_mean(runtime, runtime_names())}",
                code="unknown_runtime",
            )
        return _RUNTIMES.get(runtime).factory(name, runtime, lambda: create_model(name), fallback)
    prefix, sep, rest = name.partition(":")
    if not sep:
        raise InvalidInput(
            f"model names look like <backend>:<model>, e.g. vitrine:small; got {name!r}"
            f"{did_you_mean(f'vitrine:{name}', list_models())}. Known: {', '.join(list_models())}",
            code="invalid_model_name",
        )
    if prefix == "vitrine" and rest in _MODELS:
        model = _MODELS.get(rest).factory()
    elif prefix in _BACKENDS:
        model = _BACKENDS.get(prefix).factory(rest)
    else:
        known = list_models() + [entry.pattern for entry in backend_entries()]
        raise NotFound(
            f"unknown model {name!r}{did_you_mean(name, list_models())}; known: {', '.join(known)}",
            code="unknown_model",
        )
    return model.eval()
