"""Every backend gets the same checks: it encodes a batch, with unit-norm embeddings of the documented shapes."""

import pytest
import torch
from PIL import Image

from vitrine.models import create_model, list_models
from vitrine.models._random_checkpoints import write_hf_clip, write_hf_siglip, write_openclip


@pytest.fixture(scope="module")
def model_names(tmp_path_factory, small_model):
    root = tmp_path_factory.mktemp("ckpt")
    small_model.save(root / "vitrine-dir")
    return {
        **{name: name for name in list_models()},
        "vitrine:<dir>": f"vitrine:{root / 'vitrine-dir'}",
        "hf:clip": f"hf:{write_hf_clip(root / 'clip')}",
        "hf:siglip": f"hf:{write_hf_siglip(root / 'siglip')}",
        "openclip": f"openclip:ViT-B-32@{write_openclip(root / 'oc')}",
    }


@pytest.fixture(scope="module")
def images():
    return [Image.new("RGB", (60, 80), colour) for colour in [(200, 0, 0), (0, 0, 200), (20, 160, 20)]]


TEXTS = ["a red dress", "blue jeans for men", "a green watch"]


@pytest.mark.parametrize("key", list_models() + ["vitrine:<dir>", "hf:clip", "hf:siglip", "openclip"])
def test_backend_encodes_unit_norm_batches(key, model_names, images, small_model):
    model = small_model if key == "vitrine:small" else create_model(model_names[key])
    pixels = model.preprocess(images)
    size = model.image_transform.size
    assert pixels.shape == (3, 3, size, size)
    with torch.no_grad():
        image_features = model.image_features(pixels)
        text_features = model.text_features(TEXTS)
    assert image_features.embeds.shape == (3, model.embed_dim)
    assert text_features.embeds.shape == (3, model.embed_dim)
    for embeds in (image_features.embeds, text_features.embeds):
        assert torch.allclose(embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
        assert not torch.allclose(embeds[0], embeds[1])  # different inputs, different vectors
    assert image_features.tokens.dim() == 3 and image_features.tokens.shape[0] == 3
    assert text_features.tokens.shape[:2] == text_features.mask.shape
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_text("a single string")


def test_same_seed_same_embeddings(small_model, images):
    again = create_model("vitrine:small")
    pixels = small_model.preprocess(images)
    with torch.no_grad():
        assert torch.equal(small_model.encode_image(pixels), again.encode_image(pixels))
        assert torch.equal(small_model.encode_text(TEXTS), again.encode_text(TEXTS))


def test_saved_directory_round_trips_exactly(model_names, small_model, images):
    loaded = create_model(model_names["vitrine:<dir>"])
    pixels = small_model.preprocess(images)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(pixels), small_model.encode_image(pixels))
        assert torch.equal(loaded.encode_text(TEXTS), small_model.encode_text(TEXTS))


def test_registry_lists_and_refuses_unknown_names(tmp_path):
    assert "vitrine:small" in list_models()
    with pytest.raises(KeyError, match="unknown model"):
        create_model("torchhub:resnet")
    with pytest.raises(ValueError, match="look like <backend>:<model>"):
        create_model("small")
    with pytest.raises(KeyError, match="neither a registered vitrine model nor a model directory"):
        create_model("vitrine:does-not-exist")
    with pytest.raises(FileNotFoundError, match="vitrine runs offline"):
        create_model("hf:patrickjohncyh/fashion-clip")
    with pytest.raises(ValueError, match="openclip:<arch>@<checkpoint>"):
        create_model("openclip:ViT-B-32")
