"""The locked-image recipe: cached tower features, head-only training, resume, and a light saved model."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import make_rows, write_shards

from vitrine.models.dual import DualEncoder
from vitrine.models.image_towers import build_image_tower
from vitrine.train.clip import train_clip
from vitrine.train.config import FreezeConfig, LockedConfig, OptimConfig, SourceConfig, SplitConfig, TrainConfig
from vitrine.train.locked import HardNegatives

TOWER = {
    "type": "efficientnet-lite", "stages": [[1, 3, 1, 1, 8], [1, 3, 2, 4, 16]], "stem_width": 8, "head_width": 24,
    "input_mean": [0.498, 0.498, 0.498], "input_std": [0.502, 0.502, 0.502],
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("locked")
    write_shards(root / "shards", make_rows(80), per_shard=40)
    # A "pretrained" tower: random weights saved to a file, named by a file: source as a wheel would be by pypi:.
    torch.manual_seed(1)
    tower = build_image_tower(TOWER, pretrained=False)
    torch.save({k.removeprefix("net."): v for k, v in tower.state_dict().items()}, root / "tower.pth")
    model = {
        "name": "tiny-locked", "embed_dim": 384, "image": {**TOWER, "pretrained": f"file:{root / 'tower.pth'}"},
        "text": {"type": "minilm", "max_length": 16},
        "transform": {"size": 32, "pad": "squarepad", "fill": [255, 255, 255]},
        "image_head": {"type": "mlp", "hidden": 32}, "text_proj_init": "identity",
    }
    (root / "tiny.json").write_text(json.dumps(model))
    config = TrainConfig(
        sources=(SourceConfig(str(root / "shards")),), model=str(root / "tiny.json"), epochs=3, batch_size=16,
        amp=False, val_max_items=40, cache_dir=str(root / "cache"), optim=OptimConfig(lr=0.01, warmup_steps=1),
        freeze=FreezeConfig(image_tower=True, text_tower=True, text_proj=True),
        locked=LockedConfig(views=("plain", "flip"), hard_negative_fraction=0.25),
        split=SplitConfig(seed=0, val_fraction=0.15, holdout_field="articleType", holdout_values=("Watches",)),
    )
    return root, config


def test_locked_run_trains_heads_only_and_saves_no_tower_weights(setup):
    root, config = setup
    result = train_clip(config.replace(out=str(root / "run")), progress=False)
    saved = load_file(str(root / "run" / "model" / "model.safetensors"))
    assert not any(
        k.startswith("visual.") or k.startswith("text.bert.") for k in saved
    )  # both come from their packages
    assert {"image_proj.0.weight", "image_proj.3.weight", "text_proj.weight", "logit_scale"} <= set(saved)
    assert torch.equal(saved["text_proj.weight"], torch.eye(384))  # frozen text side: MiniLM's own space
    model = DualEncoder.load(root / "run" / "model")
    assert torch.equal(
        model.visual.state_dict()["net._conv_stem.weight"], torch.load(root / "tower.pth")["_conv_stem.weight"]
    )
    assert result.steps > 0 and np.isfinite(result.final_loss)
    folders = sorted((root / "cache" / "image").iterdir())
    assert len(folders) == 2  # one cached feature set per view


def test_locked_resume_gives_the_same_heads_as_one_go(setup):
    root, config = setup
    one_go = train_clip(config.replace(out=str(root / "a")), progress=False)
    train_clip(config.replace(out=str(root / "b"), max_steps=one_go.steps // 2), progress=False)
    resumed = train_clip(config.replace(out=str(root / "b")), progress=False)
    assert resumed.steps == one_go.steps
    a = load_file(str(root / "a" / "model" / "model.safetensors"))
    b = load_file(str(root / "b" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cached_features_equal_the_tower_output(setup):
    root, config = setup
    train_clip(config.replace(out=str(root / "c"), max_steps=1), progress=False)
    model = DualEncoder.load(root / "c" / "model")
    from vitrine.data.transforms import to_input
    from vitrine.embed.tower_cache import cached_image_features
    from vitrine.train.data import load_pool

    pool = load_pool(config, model.image_transform, progress=False)
    cached = cached_image_features(model, pool.images, pool.ids, ("plain", "flip"), config.cache_dir, progress=False)
    with torch.inference_mode():
        direct = model.visual(to_input(pool.images[:8], model.image_transform))[1]
        flipped = model.visual(to_input(pool.images[:8].flip(3), model.image_transform))[1]
    assert torch.allclose(cached[0, :8].float(), direct, atol=2e-2, rtol=1e-2)
    assert torch.allclose(cached[1, :8].float(), flipped, atol=2e-2, rtol=1e-2)


def test_hard_negatives_share_the_type_and_differ_in_colour(setup):
    root, config = setup
    from vitrine.train.data import load_pool

    model = DualEncoder.load(root / "run" / "model")
    pool = load_pool(config, model.image_transform, progress=False)
    train = pool.indices("train")
    negatives = HardNegatives(pool, train)
    partners = negatives.partners(train[:20], np.random.default_rng(0))
    for anchor, partner in zip(train[:20], partners):
        assert pool.attributes[anchor]["articleType"] == pool.attributes[partner]["articleType"]
        assert pool.attributes[anchor]["baseColour"] != pool.attributes[partner]["baseColour"]
        assert partner in set(train)


def test_a_shipping_run_inherits_the_protocol_runs_margin_and_says_where_from(setup):
    root, config = setup
    protocol = config.replace(
        out=str(root / "protocol"),
        epochs=1,
        split=SplitConfig(
            seed=0, val_fraction=0.15, holdout_field="articleType", holdout_values=("Watches",),
            calibration_fraction=0.5,
        ).__dict__,
    )
    train_clip(protocol, progress=False)
    tuned = json.loads((root / "protocol" / "model" / "training.json").read_text())["calibration"]["articleType"]
    assert tuned["source"] == {"tuned_on": "calib types of this run"}
    shipping = config.replace(
        out=str(root / "shipping"), epochs=1, split=SplitConfig(seed=0, val_fraction=0.15).__dict__,
        calibration_from=str(root / "protocol"),
    )
    train_clip(shipping, progress=False)
    info = json.loads((root / "shipping" / "model" / "training.json").read_text())
    assert sorted(info["seen_classes"]["articleType"]) == ["Dresses", "Jeans", "Tshirts", "Watches"]  # every type
    inherited = info["calibration"]["articleType"]
    assert inherited["gamma"] == tuned["gamma"]
    assert inherited["source"]["from"] == str(root / "protocol" / "model" / "training.json")
    assert inherited["source"]["split"]["calibration_fraction"] == 0.5


def test_a_shipping_run_without_its_protocol_run_stops_before_training(setup, tmp_path):
    from vitrine.train.calibration import CalibrationSourceError

    root, config = setup
    with pytest.raises(CalibrationSourceError, match="train the protocol config"):
        train_clip(
            config.replace(out=str(tmp_path / "run"), calibration_from=str(tmp_path / "nowhere")), progress=False
        )
    assert not (tmp_path / "run").exists()


def test_a_trained_text_tower_gets_its_own_text_cache_key(setup):
    from vitrine.embed.text_cache import _tower_key
    from vitrine.models.dual import DualConfig

    root, _ = setup
    model = DualEncoder(DualConfig.from_file(root / "tiny.json"))
    before = _tower_key(model)
    with torch.no_grad():
        model.text.bert.encoder.layer[5].output.dense.bias.add_(0.01)
    assert _tower_key(model) != before


def test_a_learned_text_pooling_is_refused_by_the_locked_recipe_with_the_way_out(setup, tmp_path):
    root, config = setup
    spec = json.loads((root / "tiny.json").read_text())
    spec["text"] = {**spec["text"], "pooling": "attention"}
    (tmp_path / "tiny-text.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="freeze.text_tower false"):
        train_clip(config.replace(out=str(tmp_path / "run"), model=str(tmp_path / "tiny-text.json")), progress=False)
