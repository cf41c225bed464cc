"""Encoders behind one interface, resolved by name through a registry."""

from vitrine.models import _builtin, onnx_cache  # noqa: F401  (register the models, backends and runtimes)
from vitrine.models._registry import (
    backend_entries,
    create_model,
    list_models,
    model_entries,
    register_model,
    runtime_names,
)
from vitrine.models.base import Encoder, Features

DEFAULT_MODEL = (
    "vitrine:kagl-base"  # the trained model shipped in vitrine/models/weights/kagl-base (kagl-small: the light option)
)
DEFAULT_TAG_MODEL = "vitrine:kagl-base-regions"  # kagl-base after `vitrine train regions`: the default for tagging

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TAG_MODEL",
    "Encoder",
    "Features",
    "backend_entries",
    "create_model",
    "list_models",
    "model_entries",
    "register_model",
    "runtime_names",
]
