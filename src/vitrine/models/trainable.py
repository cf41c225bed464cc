"""What `vitrine train clip --model NAME` starts from: a name `vitrine models` lists, turned into something
trainable."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from vitrine.errors import InvalidInput
from vitrine.models.dual import WEIGHTS_NAME, builtin_config_names

EXTERNAL_PREFIXES = ("hf:", "openclip:")  # checkpoints `vitrine train clip` fine-tunes in their own format


def shipped_weights_dir(name: str) -> Path | None:
    """The folder of a model shipped with vitrine (`vitrine:kagl-base` -> .../models/weights/kagl-base), or None."""
    bare = name.removeprefix("vitrine:")
    if not bare or "/" in bare or os.sep in bare:
        return None
    folder = resources.files("vitrine.models").joinpath("weights", bare)
    return Path(str(folder)) if folder.joinpath(WEIGHTS_NAME).is_file() else None


def training_start(name: str) -> str:
    """A model name as the trainer takes it: a trained model's directory (shipped or saved: warm start), an architecture
    config name or JSON file (fresh), or an external checkpoint (`hf:DIR`, `openclip:ARCH@FILE`). Anything else is a
    `ValueError` that says why it cannot be trained."""
    if name.startswith(EXTERNAL_PREFIXES) or name.endswith(".json"):
        return name
    shipped = shipped_weights_dir(name)
    if shipped is not None:
        return str(shipped)
    bare = name.removeprefix("vitrine:")
    if os.path.isdir(bare):
        if not (Path(bare) / WEIGHTS_NAME).is_file():
            raise InvalidInput(
                f"{name}: the directory has no {WEIGHTS_NAME}; a trainable vitrine model directory holds config.json + "
                f"{WEIGHTS_NAME}"
            )
        return bare
    if bare in builtin_config_names():
        return bare
    if name.startswith("onnx:") or name.endswith(".onnx"):
        raise InvalidInput(
            f"{name} is an ONNX export for inference and cannot be trained; train the model it was exported from"
        )
    known = ", ".join(f"vitrine:{n}" for n in builtin_config_names())
    raise InvalidInput(
        f"cannot train {name!r}: it is not a shipped vitrine model (vitrine:kagl-base, ...), a model directory, an "
        f"architecture config ({known}, or a .json file), hf:DIR or openclip:ARCH@FILE"
    )
