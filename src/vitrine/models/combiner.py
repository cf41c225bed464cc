"""Combining functions for composed retrieval: (reference image features, modification text features) -> query.

`sum` is CLIP4Cir's stage-1 combination; `Combiner` is its stage-2 network (Baldrati et al., CVPRW 2022).
Both take and return unit-norm (B, D) features. Trained combiners are directories with `combiner.json`
and `combiner.safetensors`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_FILE = "combiner.json"
WEIGHTS_FILE = "combiner.safetensors"
TEXT_PROJECTION_FILE = "text_projection.safetensors"  # stage 1's fine-tuned text projection, when there is one
LOGIT_SCALE = 100.0  # CLIP4Cir's fixed scale for combiner logits
SHIPPED_DIR = Path(__file__).parent / "weights"


class SumCombiner(nn.Module):
    """normalize(image + text): no parameters."""

    kind = "sum"

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps({"kind": self.kind, **(extra or {})}, indent=2) + "\n")
        return out

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(image + text, dim=-1)


@dataclass(frozen=True)
class CombinerConfig:
    """Widths default to CLIP4Cir's: projections 4x and the hidden layer 8x the embedding size."""

    embed_dim: int
    projection_dim: int | None = None
    hidden_dim: int | None = None
    dropout: float = 0.5
    encoder: str | None = None  # the registry name of the encoder whose features it was trained on

    @property
    def projection(self) -> int:
        return self.projection_dim or 4 * self.embed_dim

    @property
    def hidden(self) -> int:
        return self.hidden_dim or 8 * self.embed_dim


class Combiner(nn.Module):
    """Two projections, concatenated; a fusion branch plus a learned mix lambda of text and image; residual; L2 norm."""

    kind = "combiner"

    def __init__(self, config: CombinerConfig):
        super().__init__()
        self.config = config
        d, p, h = config.embed_dim, config.projection, config.hidden
        self.text_projection = nn.Sequential(nn.Linear(d, p), nn.ReLU(), nn.Dropout(config.dropout))
        self.image_projection = nn.Sequential(nn.Linear(d, p), nn.ReLU(), nn.Dropout(config.dropout))
        self.fusion = nn.Sequential(nn.Linear(2 * p, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, d))
        self.mix = nn.Sequential(nn.Linear(2 * p, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, 1), nn.Sigmoid())

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([self.text_projection(text), self.image_projection(image)], dim=-1)
        lam = self.mix(joint)
        return F.normalize(self.fusion(joint) + lam * text + (1 - lam) * image, dim=-1)

    def mix_weight(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The lambda given to the text features, (B, 1)."""
        return self.mix(torch.cat([self.text_projection(text), self.image_projection(image)], dim=-1))

    def logits(self, image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, T) similarities x 100 between combined queries and L2-normalised target features."""
        return LOGIT_SCALE * self(image, text) @ F.normalize(targets, dim=-1).T

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps({"kind": self.kind, **asdict(self.config), **(extra or {})}, indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_FILE))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Combiner":
        from safetensors.torch import load_file

        path = Path(directory)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"no combiner in {directory} (missing {CONFIG_FILE})")
        data = json.loads((path / CONFIG_FILE).read_text())
        known = CombinerConfig.__dataclass_fields__
        model = cls(CombinerConfig(**{k: v for k, v in data.items() if k in known}))
        model.load_state_dict({k: v.float() for k, v in load_file(str(path / WEIGHTS_FILE)).items()})
        return model.eval()


SHIPPED_HEADS = ("combiner", "agcn")  # registered names: `<encoder name>-<head>` under vitrine/models/weights/


def shipped_head_dir(head: str, encoder: str | None) -> Path:
    """The shipped composed-query head of kind `head` trained for `encoder` (e.g. kagl-base-combiner)."""
    from vitrine.models import DEFAULT_MODEL

    short = (encoder or DEFAULT_MODEL).removeprefix("vitrine:")
    path = SHIPPED_DIR / f"{short}-{head}"
    if not (path / CONFIG_FILE).is_file():
        shipped = sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CONFIG_FILE).is_file())
        raise FileNotFoundError(f"no shipped {head} for {encoder or DEFAULT_MODEL}; shipped heads: {', '.join(shipped)}. "
                                f"Train one with `vitrine train cir` and pass its directory")
    return path


def load_combiner(spec: str, embed_dim: int | None = None, encoder: str | None = None) -> nn.Module:
    """`sum`, `combiner` / `agcn` (the ones shipped for `encoder`) or a directory saved by `Combiner.save`."""
    if spec == "sum":
        return SumCombiner()
    if spec in SHIPPED_HEADS:
        spec = str(shipped_head_dir(spec, encoder))
    path = Path(spec)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"no combiner in {spec} (missing {CONFIG_FILE}); use sum, combiner or a trained combiner directory")
    data = json.loads((path / CONFIG_FILE).read_text())
    if data.get("kind") == "sum":
        if encoder is not None and data.get("encoder") not in (None, encoder):
            raise ValueError(f"{spec} was trained on {data['encoder']} features, not {encoder}")
        return SumCombiner()
    if data.get("kind") == "agcn":
        from vitrine.models.agcn import AGCN

        model = AGCN.load(spec)
    else:
        model = Combiner.load(spec)
    if encoder is not None and model.config.encoder not in (None, encoder):
        raise ValueError(f"combiner {spec} was trained on {model.config.encoder} features, not {encoder}; "
                         f"pass --model {model.config.encoder} or train a combiner for {encoder}")
    if embed_dim is not None and model.config.embed_dim != embed_dim:
        raise ValueError(f"combiner {spec} expects {model.config.embed_dim}-d features, the model gives {embed_dim}-d")
    return model


def save_text_projection(directory: str | os.PathLike, weight: torch.Tensor) -> None:
    from safetensors.torch import save_file

    save_file({"weight": weight.detach().contiguous().cpu()}, str(Path(directory) / TEXT_PROJECTION_FILE))


def load_text_projection(spec: str, encoder: str | None = None) -> torch.Tensor | None:
    """The stage-1 text projection saved with a combiner directory, if any."""
    if spec == "sum":
        return None
    if spec in SHIPPED_HEADS:
        spec = str(shipped_head_dir(spec, encoder))
    path = Path(spec) / TEXT_PROJECTION_FILE if spec else None
    if path is None or not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))["weight"].float()
