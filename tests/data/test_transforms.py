import random

import numpy as np
import pytest
import torch
from PIL import Image

from vitrine.data.transforms import CLIP_MEAN, CLIP_STD, ImageTransform, TrainAugment, squarepad, targetpad


def test_squarepad_centres_the_image():
    padded = squarepad(Image.new("RGB", (60, 80), (255, 0, 0)), fill=(0, 0, 0))
    assert padded.size == (80, 80)
    assert padded.getpixel((5, 40)) == (0, 0, 0) and padded.getpixel((40, 40)) == (255, 0, 0)


def test_targetpad_pads_only_beyond_the_ratio():
    # 60x80 has ratio 1.33 > 1.25: the short side grows to 80 / 1.25 = 64.
    assert targetpad(Image.new("RGB", (60, 80)), 1.25).size == (64, 80)
    assert targetpad(Image.new("RGB", (200, 100)), 1.25).size == (200, 160)
    same = Image.new("RGB", (70, 80))
    assert targetpad(same, 1.25) is same  # ratio 1.14 <= 1.25: untouched


@pytest.mark.parametrize("pad", ["none", "squarepad", "targetpad"])
def test_transform_output_shape_and_normalisation(pad):
    transform = ImageTransform(size=32, pad=pad)
    out = transform(Image.new("RGB", (60, 80), (255, 255, 255)))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = (1.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    assert torch.allclose(out[:, 16, 16], torch.tensor(expected, dtype=torch.float32), atol=1e-5)


def test_bad_transform_config():
    with pytest.raises(ValueError, match="pad must be"):
        ImageTransform(pad="reflect")


def test_train_augment_is_seeded_and_keeps_colour():
    image = Image.new("RGB", (60, 80), (200, 20, 20))
    base = ImageTransform(size=32, pad="squarepad", fill=(200, 20, 20))
    a = TrainAugment(base, rng=random.Random(3))
    b = TrainAugment(base, rng=random.Random(3))
    first, second = a(image), b(image)
    assert torch.equal(first, second)
    pixels = first * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)
    red, green, blue = pixels.mean(dim=(1, 2)).tolist()
    assert red > 0.6 and green < 0.2 and blue < 0.2  # no hue change: a red product stays red
