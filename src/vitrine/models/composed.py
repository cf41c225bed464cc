"""Resolve `--combiner NAME|DIR`: `sum`, a shipped head (`combiner`, `agcn`) or a trained head's directory.

Every head kind is looked up in the registry of `vitrine.models.heads`; this module imports the head modules so
that they register, and it is the only one that needs them all.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

import vitrine.models.agcn  # noqa: F401  (registers the AGCN head)
import vitrine.models.combiner  # noqa: F401  (registers the Combiner head)
from vitrine.constants import DEFAULT_MODEL
from vitrine.errors import InvalidInput, MissingFile
from vitrine.models.heads import CONFIG_FILE, TEXT_PROJECTION_FILE, head_class, read_head_config

SHIPPED_DIR = Path(__file__).parent / "weights"
SHIPPED_HEADS = ("combiner", "agcn")  # registered names: `<encoder name>-<head>` under vitrine/models/weights/


def shipped_head_dir(head: str, encoder: str | None) -> Path:
    """The shipped composed-query head of kind `head` trained for `encoder` (e.g. kagl-base-combiner)."""
    short = (encoder or DEFAULT_MODEL).removeprefix("vitrine:")
    path = SHIPPED_DIR / f"{short}-{head}"
    if not (path / CONFIG_FILE).is_file():
        shipped = sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CONFIG_FILE).is_file())
        raise MissingFile(
            f"no shipped {head} for {encoder or DEFAULT_MODEL}; shipped heads: {', '.join(shipped)}. "
            f"Train one with `vitrine train cir` and pass its directory"
        )
    return path


def _resolve(spec: str, encoder: str | None) -> str:
    return str(shipped_head_dir(spec, encoder)) if spec in SHIPPED_HEADS else spec


def load_combiner(spec: str, embed_dim: int | None = None, encoder: str | None = None) -> nn.Module:
    """`sum`, `combiner` / `agcn` (the ones shipped for `encoder`) or a directory saved by a head's `save`."""
    if spec == "sum":
        return head_class("sum")()
    spec = _resolve(spec, encoder)
    if not (Path(spec) / CONFIG_FILE).is_file():
        raise MissingFile(
            f"no combiner in {spec} (missing {CONFIG_FILE}); use sum, combiner or a trained combiner directory"
        )
    data = read_head_config(spec)
    model = head_class(data.get("kind", "combiner")).load(spec)
    trained_on = data.get("encoder")
    if encoder is not None and trained_on not in (None, encoder):
        raise InvalidInput(
            f"combiner {spec} was trained on {trained_on} features, not {encoder}; "
            f"pass --model {trained_on} or train a combiner for {encoder}"
        )
    config = getattr(model, "config", None)
    if embed_dim is not None and config is not None and config.embed_dim != embed_dim:
        raise InvalidInput(f"combiner {spec} expects {config.embed_dim}-d features, the model gives {embed_dim}-d")
    return model


def save_text_projection(directory: str | os.PathLike, projection: nn.Linear) -> None:
    """Stage 1's text projection beside its head: a weight, and a bias when the model's projection has one (SigLIP)."""
    from safetensors.torch import save_file

    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in projection.state_dict().items()}
    save_file(tensors, str(Path(directory) / TEXT_PROJECTION_FILE))


def load_text_projection(spec: str, encoder: str | None = None) -> nn.Linear | None:
    """The stage-1 text projection saved with a combiner directory, if any, as a frozen linear layer."""
    if spec == "sum":
        return None
    path = Path(_resolve(spec, encoder)) / TEXT_PROJECTION_FILE if spec else None
    if path is None or not path.is_file():
        return None
    from safetensors.torch import load_file

    tensors = {name: tensor.float() for name, tensor in load_file(str(path)).items()}
    out_features, in_features = tensors["weight"].shape
    # skip_init: no random initialisation, so loading draws nothing from the seeded stream a training run follows
    projection = nn.utils.skip_init(nn.Linear, in_features, out_features, bias="bias" in tensors)
    projection.load_state_dict(tensors)
    return projection.requires_grad_(False).eval()
