"""Names shared across layers, in one module that imports nothing (no torch): the CLI's --help, the service's settings
and the library read the runtimes, the search modes and the default models from here."""

from __future__ import annotations

# Inference runtimes: `torch` runs the model as built; `onnx` and `onnx-int8` (the int8 text graph) run ONNX Runtime on
# an export made into the cache on first use (vitrine.models.onnx_cache registers them).
RUNTIMES = ("torch", "onnx", "onnx-int8")
DEFAULT_RUNTIME = "onnx"  # the CLI's and the service's: the fastest runtime that passes parity with torch

# How a query ranks: hybrid (vector + BM25 fused, query words as soft filters), vector or lexical.
SEARCH_MODES = ("hybrid", "vector", "lexical")
DEFAULT_SEARCH_MODE = "hybrid"

DEFAULT_MODEL = (
    "vitrine:kagl-base"  # the trained model shipped in vitrine/models/weights/kagl-base (kagl-small: lighter)
)
DEFAULT_TAG_MODEL = "vitrine:kagl-base-regions"  # kagl-base after `vitrine train regions`: the default for tagging

__all__ = ["DEFAULT_MODEL", "DEFAULT_RUNTIME", "DEFAULT_SEARCH_MODE", "DEFAULT_TAG_MODEL", "RUNTIMES", "SEARCH_MODES"]
