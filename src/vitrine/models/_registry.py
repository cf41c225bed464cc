"""Model names -> encoders. `vitrine:<name>` models register by name; `hf:`, `openclip:` and `onnx:` are backends;
runtimes other than torch (`onnx`, `onnx-int8`) register a wrapper that turns a model name into their encoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vitrine.models.base import Encoder


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    factory: Callable[[], Encoder]
    fingerprint: Callable[[], str | None] | None = (
        None  # a digest of what the weights are made of, without building them
    )


@dataclass(frozen=True)
class BackendEntry:
    prefix: str
    pattern: str
    description: str
    factory: Callable[[str], Encoder]
    fingerprint: Callable[[str], str | None] | None = None


@dataclass(frozen=True)
class RuntimeEntry:
    name: str
    description: str
    factory: Callable[
        [str, str, Callable[[], Encoder], bool], Encoder
    ]  # (model name, runtime, load it on torch, fallback)


_MODELS: dict[str, ModelEntry] = {}
_BACKENDS: dict[str, BackendEntry] = {}
_RUNTIMES: dict[str, RuntimeEntry] = {}


def register_model(name: str, description: str, fingerprint: Callable[[], str | None] | None = None):
    """Decorator: register a zero-argument factory under `vitrine:<name>` (and, optionally, how to fingerprint its
    weights from their files)."""

    def wrap(factory: Callable[[], Encoder]):
        if name in _MODELS:
            raise ValueError(f"model vitrine:{name} is registered twice")
        _MODELS[name] = ModelEntry(name, description, factory, fingerprint)
        return factory

    return wrap


def register_backend(
    prefix: str, pattern: str, description: str, fingerprint: Callable[[str], str | None] | None = None
):
    """Decorator: register a factory taking the text after `<prefix>:`."""

    def wrap(factory: Callable[[str], Encoder]):
        _BACKENDS[prefix] = BackendEntry(prefix, pattern, description, factory, fingerprint)
        return factory

    return wrap


def model_fingerprint(name: str) -> str | None:
    """A digest of the files model `name` is built from, read without building it; None where its registration
    cannot say (a seeded random init, a hub id) or its files are missing."""
    prefix, sep, rest = name.partition(":")
    if not sep:
        return None
    try:
        if prefix == "vitrine" and rest in _MODELS:
            entry = _MODELS[rest].fingerprint
            return entry() if entry else None
        backend = _BACKENDS.get(prefix)
        return backend.fingerprint(rest) if backend and backend.fingerprint else None
    except (OSError, ImportError, ValueError, KeyError):  # missing files etc.: building the model says what is wrong
        return None


def list_models() -> list[str]:
    """Every named model, as `vitrine:<name>`, sorted."""
    return [f"vitrine:{name}" for name in sorted(_MODELS)]


def model_entries() -> list[ModelEntry]:
    return [_MODELS[name] for name in sorted(_MODELS)]


def backend_entries() -> list[BackendEntry]:
    return [_BACKENDS[prefix] for prefix in sorted(_BACKENDS)]


def register_runtime(name: str, description: str):
    """Decorator: register how runtime `name` builds an encoder from a model name (see RuntimeEntry)."""

    def wrap(factory):
        if name in _RUNTIMES or name == "torch":
            raise ValueError(f"runtime {name} is registered twice")
        _RUNTIMES[name] = RuntimeEntry(name, description, factory)
        return factory

    return wrap


def runtime_names() -> list[str]:
    return ["torch", *sorted(_RUNTIMES)]


def create_model(name: str, runtime: str = "torch", fallback: bool = False) -> Encoder:
    """Resolve a model name (`vitrine:small`, `vitrine:/path/to/dir`, `hf:/path`, `openclip:ViT-B-32@ckpt.pt`, `onnx:DIR`).

    `runtime` "onnx" or "onnx-int8" gives the ONNX Runtime encoder of that model (exported into the cache once);
    with `fallback`, a model that cannot be exported (an external checkpoint) runs on torch instead, with a warning.
    """
    if runtime != "torch":
        if runtime not in _RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(runtime_names())}; got {runtime!r}")
        return _RUNTIMES[runtime].factory(name, runtime, lambda: create_model(name), fallback)
    prefix, sep, rest = name.partition(":")
    if not sep:
        raise ValueError(
            f"model names look like <backend>:<model>, e.g. vitrine:small; got {name!r}. Known: {', '.join(list_models())}"
        )
    if prefix == "vitrine" and rest in _MODELS:
        model = _MODELS[rest].factory()
    elif prefix in _BACKENDS:
        model = _BACKENDS[prefix].factory(rest)
    else:
        known = list_models() + [entry.pattern for entry in backend_entries()]
        raise KeyError(f"unknown model {name!r}; known: {', '.join(known)}")
    return model.eval()
