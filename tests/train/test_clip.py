"""A tiny real training run: the loss goes down, metrics are logged, and resume gives identical weights."""

import csv
import json

import pytest
from safetensors.torch import load_file
from tests.conftest import make_rows, write_shards

from vitrine.train.clip import train_clip
from vitrine.train.config import OptimConfig, SourceConfig, SplitConfig, TrainConfig

TINY_MODEL = {
    "name": "tiny", "embed_dim": 32,
    "image": {"type": "cnn", "widths": [8, 16], "depths": [1, 1], "stem_width": 8, "stem_stride": 2},
    "text": {"type": "minilm", "max_length": 16},
    "transform": {"size": 32, "pad": "squarepad", "fill": [255, 255, 255]},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_shards(root / "shards", make_rows(80), per_shard=40)
    (root / "tiny.json").write_text(json.dumps(TINY_MODEL))
    config = TrainConfig(
        sources=(SourceConfig(str(root / "shards")),), model=str(root / "tiny.json"), epochs=2, batch_size=16,
        checkpoint_every=3, val_max_items=40, cache_dir=str(root / "cache"), optim=OptimConfig(lr=0.01, warmup_steps=1),
        split=SplitConfig(seed=0, val_fraction=0.15, holdout_field="articleType", holdout_values=("Watches",)),
    )
    return root, config


def train_items(out):
    return json.loads((out / "model" / "training.json").read_text())["train_items"]


def read_metrics(out):
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_epoch_run_lowers_the_loss_and_logs(setup):
    root, config = setup
    result = train_clip(config.replace(out=str(root / "run")), progress=False)
    rows = read_metrics(root / "run")
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    assert losses[-1] < losses[0]
    assert result.steps == 2 * (train_items(root / "run") // 16)
    assert any(r.get("val/articleType_top1_unseen") for r in rows)  # per-epoch validation on unseen types
    assert list((root / "run" / "tb").glob("events.out.tfevents.*"))
    saved = TrainConfig.from_file(root / "run" / "train_config.json")
    assert saved == config.replace(out=str(root / "run"))  # the saved config reproduces the run
    training = json.loads((root / "run" / "model" / "training.json").read_text())
    assert "Watches" not in training["seen_classes"]["articleType"]


def test_resume_gives_the_same_weights_as_one_go(setup):
    root, config = setup
    one_go = train_clip(config.replace(out=str(root / "a")), progress=False)
    half = one_go.steps // 2
    interrupted = train_clip(config.replace(out=str(root / "b"), max_steps=half), progress=False)
    assert interrupted.steps == half
    resumed = train_clip(config.replace(out=str(root / "b")), progress=False)
    assert resumed.steps == one_go.steps
    a = load_file(str(root / "a" / "model" / "model.safetensors"))
    b = load_file(str(root / "b" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)


def test_resume_refuses_a_different_config(setup):
    root, config = setup
    train_clip(config.replace(out=str(root / "c"), max_steps=1), progress=False)
    with pytest.raises(ValueError, match="different training config"):
        train_clip(config.replace(out=str(root / "c"), batch_size=8), progress=False)


def test_config_round_trips_and_rejects_bad_values(tmp_path):
    config = TrainConfig.from_dict(
        {
            "batch_size": 64, "locked": {"views": ["plain"], "hard_negative_fraction": 0.25},
            "optim": {"betas": [0.9, 0.95]},
        }
    )
    assert config.locked.views == ("plain",) and config.optim.betas == (0.9, 0.95)
    config.save(tmp_path / "c.json")
    assert TrainConfig.from_file(tmp_path / "c.json") == config
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="TrainConfig: unknown keys"):
        TrainConfig.from_dict({"batchsize": 3})
    with pytest.raises(ValueError, match="LockedConfig: unknown keys"):
        TrainConfig.from_dict({"locked": {"view": ["plain"]}})


def test_retired_options_read_at_their_no_op_value_and_are_refused_otherwise():
    old = {
        "accumulation": 1, "optim": {"lr": 0.01, "text_proj_l2_to_init": 0.0},
        "locked": {"lower_blocks": 0, "text_layers": 0, "text_smoothing": 0.0, "views": ["plain"]},
    }
    config = TrainConfig.from_dict(old)
    assert config.optim.lr == 0.01 and config.locked.views == ("plain",)
    assert "accumulation" not in config.to_dict() and "lower_blocks" not in config.to_dict()["locked"]
    for key, section, value in (
        ("lower_blocks", "locked", 15), ("text_layers", "locked", 1), ("accumulation", None, 4),
        ("text_proj_l2_to_init", "optim", 0.1),
    ):
        data = {key: value} if section is None else {section: {key: value}}
        with pytest.raises(ValueError, match=f"{key} was removed"):
            TrainConfig.from_dict(data)
