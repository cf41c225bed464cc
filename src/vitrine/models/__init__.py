"""Encoders behind one interface, resolved by name through a registry.

The extension points (docs/extending.md): `register_model`, `register_backend`, `register_runtime` and
`register_head` add a name, and refuse one already taken; `list_models(pattern)` lists the named models.
"""

from vitrine.constants import DEFAULT_MODEL, DEFAULT_TAG_MODEL
from vitrine.models import _builtin, composed, onnx_cache  # noqa: F401  (register the models, backends, runtimes, heads)
from vitrine.models._registry import (
    BackendEntry,
    ModelEntry,
    RuntimeEntry,
    backend_entries,
    create_model,
    list_models,
    model_entries,
    model_files_fingerprint,
    register_backend,
    register_model,
    register_runtime,
    runtime_names,
)
from vitrine.models.base import Encoder, Features
from vitrine.models.heads import SavedHead, head_class, head_kinds, register_head

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_TAG_MODEL", "BackendEntry", "Encoder", "Features", "ModelEntry", "RuntimeEntry",
    "SavedHead", "backend_entries", "create_model", "head_class", "head_kinds", "list_models", "model_entries",
    "model_files_fingerprint", "register_backend", "register_head", "register_model", "register_runtime",
    "runtime_names",
]
