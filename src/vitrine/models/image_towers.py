"""Image towers as data: a JSON architecture file per tower in `tower_configs/`, built by type through a registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources

import torch
from torch import nn

from vitrine.errors import ConfigError
from vitrine.models.efficientnet import EfficientNetLite, EfficientNetLiteConfig
from vitrine.models.pretrained import load_state_dict
from vitrine.models.towers import CNNConfig, CNNTower

_BUILDERS: dict[str, Callable[[dict], nn.Module]] = {}
# Keys of a tower spec that describe it rather than shape it.
_DESCRIPTIVE = (
    "type", "tower", "description", "pretrained", "native_resolution", "input_mean", "input_std", "stages_columns",
    "pool_blocks",
)


def architecture(spec: dict) -> dict:
    """A tower spec's keys that shape the network (its config class refuses any other)."""
    return {key: value for key, value in spec.items() if key not in _DESCRIPTIVE}


def register_tower(kind: str):
    """Decorator: build towers whose spec has `"type": kind`."""

    def wrap(builder: Callable[[dict], nn.Module]):
        _BUILDERS[kind] = builder
        return builder

    return wrap


def tower_names() -> list[str]:
    """The tower JSON files shipped in `vitrine/models/tower_configs/`."""
    folder = resources.files("vitrine.models").joinpath("tower_configs")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def resolve_tower_spec(spec: dict) -> dict:
    """A model config's `image` entry with its named tower file filled in (`{"tower": "efficientnet-lite0", ...}`)."""
    spec = dict(spec)
    name = spec.get("tower")
    if name is None:
        return {"type": "cnn", **spec}
    path = resources.files("vitrine.models").joinpath("tower_configs", f"{name}.json")
    if not path.is_file():
        raise ConfigError(f"unknown image tower {name!r}; vitrine has {', '.join(tower_names())}")
    return {**json.loads(path.read_text(encoding="utf-8")), **spec}


class FeatureMapTower(nn.Module):
    """Adapts a backbone returning a feature map (B, C, H, W) to (tokens (B, HW, C), pooled (B, C))."""

    def __init__(self, net: nn.Module, width: int):
        super().__init__()
        self.net = net
        self.width = width

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # channels-last: the depthwise convolutions run markedly faster so on CPU
        return self.pool(self.net(pixels.contiguous(memory_format=torch.channels_last)))

    @staticmethod
    def pool(fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = fmap.flatten(2).transpose(1, 2)
        return tokens, tokens.mean(dim=1)


class EfficientNetTower(FeatureMapTower):
    """EfficientNet-Lite as a tower; `pool_blocks` adds the mean of earlier blocks' outputs to the pooled vector
    (early layers keep colour and texture that the ImageNet head has pooled away)."""

    def __init__(self, net: EfficientNetLite, pool_blocks: tuple[int, ...] = ()):
        widths = net.block_widths()
        if any(not 0 <= b < len(widths) for b in pool_blocks):
            raise ConfigError(f"pool_blocks {list(pool_blocks)} must be block indices in [0, {len(widths) - 1}]")
        super().__init__(net, net.width + sum(widths[b] for b in pool_blocks))
        self.pool_blocks = tuple(sorted(pool_blocks))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, taps = self.net.stem(pixels.contiguous(memory_format=torch.channels_last)), []
        for index, block in enumerate(self.net._blocks):
            x = block(x)
            if index in self.pool_blocks:
                taps.append(x.mean(dim=(2, 3)))
        tokens, pooled = self.pool(self.net.head(x))
        return tokens, torch.cat([*taps, pooled], dim=1) if taps else pooled


@register_tower("cnn")
def _cnn(spec: dict) -> nn.Module:
    return CNNTower(CNNConfig.from_dict(architecture(spec)))


@register_tower("efficientnet-lite")
def _efficientnet(spec: dict) -> nn.Module:
    config = EfficientNetLiteConfig.from_dict(architecture(spec))
    return EfficientNetTower(EfficientNetLite(config), tuple(spec.get("pool_blocks", ()))).to(
        memory_format=torch.channels_last
    )


def build_image_tower(spec: dict, pretrained: bool = True) -> nn.Module:
    """Build the tower a spec describes; with `pretrained`, load the weights its `pretrained` source names."""
    spec = resolve_tower_spec(spec)
    kind = spec.get("type", "cnn")
    if kind not in _BUILDERS:
        raise ConfigError(f"unknown image tower type {kind!r}; vitrine has {', '.join(sorted(_BUILDERS))}")
    tower = _BUILDERS[kind](spec)
    if pretrained and spec.get("pretrained"):
        load_pretrained(tower, spec["pretrained"])
    return tower


def pretrained_state(spec: dict) -> dict[str, torch.Tensor]:
    """The tower's pretrained weights under the tower's own parameter names (empty when it has none)."""
    spec = resolve_tower_spec(spec)
    if not spec.get("pretrained"):
        return {}
    prefix = "net." if spec.get("type") == "efficientnet-lite" else ""
    return {prefix + k: v for k, v in load_state_dict(spec["pretrained"]).items()}


def load_pretrained(tower: nn.Module, source: str) -> None:
    """Load a pretrained state dict, requiring every key to be consumed and every shape to match."""
    prefix = "net." if isinstance(tower, FeatureMapTower) else ""
    state = {prefix + k: v for k, v in load_state_dict(source).items()}
    own = tower.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    mismatched = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if unexpected or missing or mismatched:
        raise ConfigError(
            f"pretrained weights {source} do not fit the tower: missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in mismatched[:4]]}"
        )
    tower.load_state_dict(state)


def input_normalization(spec: dict) -> dict:
    """The mean/std a pretrained tower expects, for the model's transform (empty for from-scratch towers)."""
    spec = resolve_tower_spec(spec)
    return {k: spec[f"input_{k}"] for k in ("mean", "std") if f"input_{k}" in spec}
