"""`vitrine adapt` and `train clip --model vitrine:kagl-base` on a shop's own catalog (not KAGL's columns)."""

from __future__ import annotations

import json

import pytest
from tests.conftest import make_rows, write_stranger_folder

from vitrine.cli import main
from vitrine.models import create_model
from vitrine.train import validate
from vitrine.train.adapt import adapt


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return write_stranger_folder(tmp_path_factory.mktemp("shop"), make_rows(40))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))  # the Lite2 features of the shop's images, shared by the tests here


def test_adapt_end_to_end(shop, cache, tmp_path, capsys):
    out = tmp_path / "adapted"
    assert (
        main(
            [
                "adapt", "--catalog", shop, "--out", str(out), "--epochs", "2", "--cache-dir", cache, "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert result["model"] == f"vitrine:{(out / 'model').resolve()}" and f"--model {result['model']}" in "\n".join(
        printed
    )
    assert result["heldout_items"] + result["train_items"] == 40 and result["heldout_items"] > 0
    for figures in (result["before"], result["after"]):
        assert {"t2i_R@10", "colour_top1", "category_top1", "sex_top1"} <= set(figures)  # the catalog's own columns
        assert "price_top1" not in figures
    info = json.loads((out / "model" / "training.json").read_text())
    assert info["seen_classes"]["category"] == ["Dresses", "Jeans", "Tshirts", "Watches"]
    margin = info["calibration"]["category"]  # kagl-base's articleType margin, keyed by this catalog's type column
    assert margin["base_field"] == "articleType" and "kagl-base" in margin["source"]["from"]
    model = create_model(result["model"])
    assert model.encode_text(["a red dress"]).shape == (1, model.embed_dim)
    # rerunning the same command resumes: the finished run is not trained again
    again = adapt(shop, str(out), epochs=2, cache_dir=cache, progress=False)
    assert again.steps == result["steps"] and again.after == result["after"]


def test_a_failing_validation_still_saves_the_model(shop, cache, tmp_path, monkeypatch):
    def broken(self, model):
        raise RuntimeError("stack expects a non-empty TensorList")

    monkeypatch.setattr(validate.Validator, "__call__", broken)
    result = adapt(shop, str(tmp_path / "run"), epochs=1, cache_dir=cache, progress=False)
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert any("baseline validation" in e for e in result.validation_errors)
    assert any("TensorList" in e for e in result.validation_errors if e.startswith("validation"))


def test_train_clip_continues_a_shipped_model_on_any_schema(shop, cache, tmp_path):
    out = tmp_path / "clip"
    assert (
        main(
            [
                "train", "clip", "--model", "vitrine:kagl-base", "--data", shop, "--out", str(out), "--max-steps", "2",
                "--no-progress",
            ]
        )
        == 0
    )
    info = json.loads((out / "model" / "training.json").read_text())
    assert info["config"]["model"].endswith("kagl-base") and "sex" in info["seen_classes"]


@pytest.mark.parametrize(
    "name, says", [("onnx:/tmp/export", "ONNX export for inference"), ("vitrine:no-such-model", "cannot train")]
)
def test_a_model_that_cannot_be_trained_says_why(shop, tmp_path, capsys, name, says):
    assert main(["train", "clip", "--model", name, "--data", shop, "--out", str(tmp_path / "x")]) == 2
    assert says in capsys.readouterr().err
