"""Flip test-time averaging: the embedding of an image and of its mirror image is the same, and ONNX export keeps it."""

import json

import torch

from vitrine.models.dual import DualConfig, DualEncoder

TOWER = {
    "type": "efficientnet-lite", "stages": [[1, 3, 1, 1, 8], [1, 3, 2, 4, 16]], "stem_width": 8, "head_width": 24,
    "input_mean": [0.498, 0.498, 0.498], "input_std": [0.502, 0.502, 0.502],
}


def tiny(tta: str) -> DualEncoder:
    config = DualConfig(
        name="tiny-tta",
        embed_dim=384,
        image=TOWER,
        text={"type": "minilm", "max_length": 16},
        transform={"size": 32, "pad": "squarepad", "fill": [255, 255, 255]},
        image_head={"type": "mlp", "hidden": 32},
        text_proj_init="identity",
        image_tta=tta,
    )
    return DualEncoder(config, pretrained_image=False).eval()


def test_flip_averaging_makes_an_image_and_its_mirror_alike():
    torch.manual_seed(0)
    pixels = torch.rand(3, 3, 32, 32) * 0.2
    pixels[..., :8] += torch.linspace(0.5, 1.0, 3).view(3, 1, 1, 1)  # a bright left edge: the mirror image differs
    plain, averaged = tiny("none"), tiny("flip")
    with torch.no_grad():
        a = averaged.image_features(pixels).embeds
        b = averaged.image_features(pixels.flip(3)).embeds
        one = plain.image_features(pixels).embeds
        mirror = plain.image_features(pixels.flip(3)).embeds
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a, torch.nn.functional.normalize(one + mirror, dim=-1), atol=1e-5)
    assert (one - mirror).abs().max() > 10 * (a - b).abs().max()  # the tower alone is not mirror-invariant
    averaged.train(), plain.train()
    with torch.no_grad():  # training sees single views
        assert torch.allclose(averaged.image_features(pixels).embeds, plain.image_features(pixels).embeds, atol=1e-5)


def test_flip_averaging_survives_onnx_export_at_any_batch_size(tmp_path):
    from vitrine.models.onnx_export import RUNTIME_FILE, export_onnx
    from vitrine.models.onnx_runtime import OnnxEncoder

    model = tiny("flip")
    export_onnx(model, tmp_path / "onnx", int8=False)
    parity = json.loads((tmp_path / "onnx" / RUNTIME_FILE).read_text())["parity"]
    assert parity["onnx_vs_torch_image"]["min"] > 0.9999
    runtime = OnnxEncoder(tmp_path / "onnx")
    for batch in (1, 5):
        pixels = torch.rand(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model.image_features(pixels).embeds
        assert torch.allclose(torch.as_tensor(runtime.encode_image(pixels)), expected, atol=1e-4)
