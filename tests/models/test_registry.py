"""Every backend gets the same checks: it encodes a batch, with unit-norm embeddings of the documented shapes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tests.support.random_checkpoints import write_hf_clip, write_hf_siglip, write_openclip

from vitrine.errors import Conflict, InvalidInput, NotFound
from vitrine.models import backend_entries, create_model, list_models


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
    with pytest.raises(NotFound, match="unknown model") as unknown:
        create_model("torchhub:resnet")
    assert unknown.value.code == "unknown_model"
    with pytest.raises(InvalidInput, match="look like <backend>:<model>") as unprefixed:
        create_model("small")
    assert unprefixed.value.code == "invalid_model_name" and "did you mean 'vitrine:small'" in str(unprefixed.value)
    with pytest.raises(NotFound, match="neither a registered vitrine model nor a model directory") as typo:
        create_model("vitrine:kagl-bse")
    assert typo.value.code == "unknown_model" and "did you mean 'vitrine:kagl-base'" in str(typo.value)
    with pytest.raises(FileNotFoundError, match="vitrine runs offline"):
        create_model("hf:patrickjohncyh/fashion-clip")
    with pytest.raises(ValueError, match="openclip:<arch>@<checkpoint>"):
        create_model("openclip:ViT-B-32")


def test_list_models_takes_fnmatch_patterns_on_the_full_or_the_short_name():
    every = list_models()
    assert every == sorted(every) and all(name.startswith("vitrine:") for name in every)
    assert list_models("*") == every
    small = ["vitrine:kagl-small", "vitrine:kagl-small-regions"]
    assert list_models("kagl-small*") == small and list_models("vitrine:kagl-small*") == small
    assert list_models("kagl-?ase") == ["vitrine:kagl-base"]
    assert list_models("*-regions") == [name for name in every if name.endswith("-regions")] != []
    assert list_models("hf:*") == [] and list_models("no-such-model") == []


def test_every_register_function_refuses_a_taken_name_and_keeps_the_first():
    from vitrine.models import (
        head_class,
        head_kinds,
        model_entries,
        register_backend,
        register_head,
        register_model,
        register_runtime,
        runtime_names,
    )
    from vitrine.models.heads import SavedHead

    before = (list_models(), [e.prefix for e in backend_entries()], runtime_names(), head_kinds())
    small = model_entries("small")[0].factory
    combiner = head_class("combiner")

    class Again(SavedHead):
        kind = "combiner"

    attempts = {
        "model vitrine:small": lambda: register_model("small", "again")(lambda: None),
        "backend hf:": lambda: register_backend("hf", "hf:<x>", "again")(lambda rest: None),
        "runtime onnx": lambda: register_runtime("onnx", "again")(lambda *args: None),
        "runtime torch": lambda: register_runtime("torch", "again")(lambda *args: None),
        "head combiner": lambda: register_head(Again),
    }
    for what, attempt in attempts.items():
        with pytest.raises(Conflict, match=f"{what} is registered twice") as refused:
            attempt()
        assert refused.value.code == "duplicate_name"
    assert (list_models(), [e.prefix for e in backend_entries()], runtime_names(), head_kinds()) == before
    assert model_entries("small")[0].factory is small and head_class("combiner") is combiner
    with pytest.raises(NotFound, match="did you mean 'combiner'") as unknown:
        head_class("combinr")
    assert unknown.value.code == "unknown_head"


def test_vitrine_models_filters_by_pattern(capsys):
    from vitrine.cli import main

    assert main(["models", "--json", "--pattern", "kagl-small*"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed["models"]] == ["vitrine:kagl-small", "vitrine:kagl-small-regions"]
    assert listed["backends"] == []
    assert main(["models", "--pattern", "hf:*"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["NAME", "DESCRIPTION"] and [row.split()[0] for row in rows[1:]] == ["hf:<directory"]
    assert main(["models", "--pattern", "no-such-*"]) == 2
    assert "no-such-*" in capsys.readouterr().err


def test_the_examples_of_docs_extending_run(tmp_path):
    """docs/extending.md's Python blocks, in order, in a fresh interpreter (a reader pastes them into one session)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "extending.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 5  # listing, a model, a backend, a runtime, a head
    script = tmp_path / "extending.py"
    script.write_text("\n\n".join(blocks) + '\nprint("examples ran")\n', encoding="utf-8")
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.strip().endswith("examples ran")
    assert (tmp_path / "text-only-head" / "combiner.json").is_file()
