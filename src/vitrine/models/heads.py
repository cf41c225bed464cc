"""Composed-query heads: the files they are saved as, their registry, and the one save/load they share.

A head maps (reference image features, modification text features[, tokens]) to a unit-norm query. Each kind
(`sum`, `combiner`, `agcn`) registers its class with `register_head`; `vitrine.models.composed.load_combiner`
resolves `--combiner NAME|DIR` through the registry. A saved head is a directory with `combiner.json` (its kind,
config and training extras) and, for heads with parameters, `combiner.safetensors`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from torch import nn

from vitrine.errors import InvalidInput, NotFound
from vitrine.models._registry import Registry

CONFIG_FILE = "combiner.json"
WEIGHTS_FILE = "combiner.safetensors"
TEXT_PROJECTION_FILE = "text_projection.safetensors"  # stage 1's fine-tuned text projection, when there is one
LOGIT_SCALE = 100.0  # CLIP4Cir's fixed scale for composed-query logits

_HEADS: Registry[type["SavedHead"]] = Registry("head", "unknown_head")


def register_head(cls: type["SavedHead"]) -> type["SavedHead"]:
    """Class decorator: register a head class under its `kind` (Conflict if the kind is taken)."""
    if not cls.kind:
        raise InvalidInput(f"{cls.__name__} needs a `kind`, the name it registers and saves under", code="invalid_head")
    _HEADS.add(cls.kind, cls)
    return cls


def head_class(kind: str) -> type["SavedHead"]:
    """The head class registered under `kind` (NotFound, with the known kinds, if none is)."""
    return _HEADS.get(kind)


def head_kinds() -> list[str]:
    return _HEADS.names()


def read_head_config(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise NotFound(f"no composed-query head in {directory} (missing {CONFIG_FILE})", code="head_not_found")
    return json.loads(path.read_text(encoding="utf-8"))


class SavedHead(nn.Module):
    """What every head shares: `kind`, a dataclass `config` (None for heads without parameters), save and load."""

    kind: str = ""
    config_class: type | None = None
    needs_tokens = False

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = asdict(self.config) if self.config_class is not None else {}
        (out / CONFIG_FILE).write_text(json.dumps({"kind": self.kind, **config, **(extra or {})}, indent=2) + "\n")
        if self.config_class is not None:
            save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_FILE))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SavedHead":
        from safetensors.torch import load_file

        data = read_head_config(directory)
        if data.get("kind", "combiner") != cls.kind:
            raise InvalidInput(
                f"{directory} holds a {data.get('kind')!r} head, not {cls.kind!r}", code="wrong_head_kind"
            )
        if cls.config_class is None:
            return cls().eval()
        fields = cls.config_class.__dataclass_fields__
        model = cls(cls.config_class(**{k: v for k, v in data.items() if k in fields}))
        model.load_state_dict({k: v.float() for k, v in load_file(str(Path(directory) / WEIGHTS_FILE)).items()})
        return model.eval()
