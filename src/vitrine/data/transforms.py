"""Image preprocessing in PIL/numpy/torch (no torchvision): CLIP4Cir's squarepad and targetpad, resize, normalise."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from vitrine.config_file import ConfigFile
from vitrine.errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
}


def squarepad(image: Image.Image, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Pad the shorter side (centred) so the image becomes square."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def targetpad(image: Image.Image, target_ratio: float = 1.25, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """CLIP4Cir: pad only when max/min side exceeds `target_ratio`, and then just enough to reach it."""
    width, height = image.size
    if min(width, height) == 0 or max(width, height) / min(width, height) <= target_ratio:
        return image
    long_side = max(width, height)
    short_target = int(round(long_side / target_ratio))
    new_w, new_h = (short_target, height) if width < height else (width, short_target)
    canvas = Image.new("RGB", (new_w, new_h), fill)
    canvas.paste(image, ((new_w - width) // 2, (new_h - height) // 2))
    return canvas


def resize_shorter(image: Image.Image, size: int, resample: str = "bicubic") -> Image.Image:
    """Resize so the shorter side equals `size`, keeping the aspect ratio."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image if new_size == image.size else image.resize(new_size, _RESAMPLE[resample])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """HWC uint8 RGB -> normalised CHW float32."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@dataclass(frozen=True)
class ImageTransform(ConfigFile):
    """Eval-time preprocessing: pad -> resize shorter side -> centre crop -> normalise."""

    config_name = "image transform"

    size: int = 224
    pad: str = "targetpad"  # "none" | "squarepad" | "targetpad"
    target_ratio: float = 1.25
    fill: tuple[int, int, int] = (0, 0, 0)
    resample: str = "bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    stretch: bool = False  # resize straight to size x size (SigLIP) instead of shorter side + centre crop

    def __post_init__(self):
        if self.pad not in ("none", "squarepad", "targetpad"):
            raise ConfigError(f"pad must be none, squarepad or targetpad, got {self.pad!r}")
        if self.resample not in _RESAMPLE:
            raise ConfigError(f"resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}")

    def geometry(self, image: Image.Image) -> Image.Image:
        if self.pad == "squarepad":
            image = squarepad(image, self.fill)
        elif self.pad == "targetpad":
            image = targetpad(image, self.target_ratio, self.fill)
        if self.stretch:
            return image.resize((self.size, self.size), _RESAMPLE[self.resample])
        return center_crop(resize_shorter(image, self.size, self.resample), self.size)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_tensor(self.geometry(image), self.mean, self.std)

    def source_size_for(self, width: int, height: int, margin: float = 1.0) -> tuple[int, int]:
        """The size a `width` x `height` image may be shrunk to (keeping its aspect) before `geometry` while keeping
        `margin` times the resolution the output takes from it: what a JPEG may be decoded at (draft mode)."""
        if self.pad == "squarepad":
            side = max(width, height)
        elif (
            self.pad == "targetpad"
            and min(width, height)
            and max(width, height) / min(width, height) > self.target_ratio
        ):
            side = round(max(width, height) / self.target_ratio)
        else:
            side = min(width, height)
        scale = min(1.0, margin * self.size / max(side, 1))
        return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


@dataclass
class TrainAugment:
    """Light, colour-preserving train-time augmentation in front of an `ImageTransform`.

    Random crop of 80-100% of the area, horizontal flip, mild brightness/contrast: no hue or
    saturation change, because colour is a label the model must learn.
    """

    base: ImageTransform
    scale: tuple[float, float] = (0.8, 1.0)
    flip: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = self.base.geometry(image)
        size = self.base.size
        area = self.rng.uniform(*self.scale)
        side = max(1, int(round(size * area**0.5)))
        left, top = self.rng.randint(0, size - side), self.rng.randint(0, size - side)
        image = image.crop((left, top, left + side, top + side)).resize((size, size), _RESAMPLE[self.base.resample])
        if self.rng.random() < self.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32) / 255.0
        gain = 1.0 + self.rng.uniform(-self.brightness, self.brightness)
        contrast = 1.0 + self.rng.uniform(-self.contrast, self.contrast)
        mean = array.mean()
        array = np.clip((array - mean) * contrast + mean * gain, 0.0, 1.0)
        array = (array - np.asarray(self.base.mean, dtype=np.float32)) / np.asarray(self.base.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def augment(
    images: torch.Tensor, transform: ImageTransform, generator: torch.Generator, shift: int = 4
) -> torch.Tensor:
    """uint8 batch -> normalised float batch: random flip and shift (fill-coloured border), colour untouched."""
    x = images.float() / 255.0
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if shift:
        fill = torch.tensor(transform.fill, dtype=x.dtype).view(1, 3, 1, 1) / 255.0
        padded = fill.expand(n, 3, h + 2 * shift, w + 2 * shift).clone()
        padded[:, :, shift : shift + h, shift : shift + w] = x
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        rows = dy.view(-1, 1) + torch.arange(h).view(1, -1)  # (n, h)
        cols = dx.view(-1, 1) + torch.arange(w).view(1, -1)  # (n, w)
        x = padded[
            torch.arange(n).view(-1, 1, 1, 1),
            torch.arange(3).view(1, -1, 1, 1),
            rows.view(n, 1, h, 1),
            cols.view(n, 1, 1, w),
        ]
    return normalize(x, transform)


def normalize(x: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
    mean = torch.tensor(transform.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(transform.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def to_input(images: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
    """uint8 batch -> normalised float batch, no augmentation (validation)."""
    return normalize(images.float() / 255.0, transform)
