"""CLIP4Cir on a CLIP or SigLIP that users bring (`hf:DIR`, tiny random ones here): stage 1 tunes its text projection
under `sum` (`stage1_trains: projection`), stage 2 trains the Combiner and the AGCN on its features and tokens; both
resume bit for bit and `eval composed` runs on the results. Stage 1 on the encoders themselves:
test_external_clip_stage1."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import cir_catalog, cir_config
from tests.support.random_checkpoints import write_hf_clip, write_hf_siglip

from vitrine.cir.train import train_cir
from vitrine.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cir-hf")
    cir_catalog(root)
    model = f"hf:{write_hf_clip(root / 'clip')}"
    config = cir_config(root, stage=1, model=model, epochs=2, agcn_width=32, agcn_layers=1, agcn_heads=2)
    return root, config


def test_both_stages_and_the_agcn_train_resume_and_evaluate_on_a_clip(setup, tmp_path, capsys):
    root, config = setup
    stage1 = config.replace(out=str(tmp_path / "s1"))
    train_cir(stage1.replace(max_steps=5), progress=False)
    done = train_cir(stage1, progress=False)
    whole = train_cir(stage1.replace(out=str(tmp_path / "s1-whole")), progress=False)
    assert done.steps == whole.steps == 16 and done.metrics == whole.metrics
    tuned = load_file(str(tmp_path / "s1/combiner/text_projection.safetensors"))
    assert all(
        torch.equal(v, load_file(str(tmp_path / "s1-whole/combiner/text_projection.safetensors"))[k])
        for k, v in tuned.items()
    )
    from vitrine.models import create_model

    start = create_model(config.model).model.text_projection.weight
    assert not torch.equal(next(iter(tuned.values())), start)  # stage 1 moved the CLIP's text projection
    for combiner in ("combiner", "agcn"):
        stage2 = config.replace(
            stage=2, combiner=combiner, start=str(tmp_path / "s1/combiner"), out=str(tmp_path / combiner)
        )
        result = train_cir(stage2, progress=False)
        assert result.steps == 16 and set(result.metrics) >= {"R@1", "R@10", "R@50"}
        capsys.readouterr()
        assert (
            main(
                [
                    "eval", "composed", "--data", str(root / "cat"), "--triplets", str(root / "all.jsonl"), "--model",
                    config.model, "--combiner", str(tmp_path / combiner / "combiner"), "--cache-dir",
                    str(root / "cache"), "--json", "--no-progress",
                ]
            )
            == 0
        )
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["n_queries"] == 120 and report["R@50"] >= report["R@10"] >= report["R@1"]
    # an index of the CLIP's vectors, searched by an image plus a change through each trained head
    assert (
        main(
            [
                "index", "build", "--data", str(root / "cat"), "--index", str(tmp_path / "idx"), "--model",
                config.model, "--no-progress",
            ]
        )
        == 0
    )
    image = next((root / "cat" / "images").glob("*.jpg"))
    for combiner in ("combiner", "agcn"):
        capsys.readouterr()
        assert (
            main(
                [
                    "search", "--index", str(tmp_path / "idx"), "--image", str(image), "--modify", "in red",
                    "--combiner", str(tmp_path / combiner / "combiner"), "--model", config.model, "-k", "3", "--json",
                ]
            )
            == 0
        )
        assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]) == 3
    # the service on the CLIP's index, composing with the trained Combiner (torch runtime: ONNX for hf: is item 4)
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app
    from vitrine.serve.settings import ServeSettings

    app = create_app(
        ServeSettings(
            index=str(tmp_path / "idx"), tag_model="vitrine:small", combiner=str(tmp_path / "combiner" / "combiner"),
            runtime="torch",
        )
    )
    with TestClient(app) as client:
        response = client.post(
            "/search", data={"modification": "in red", "k": "3"},
            files={"image": ("q.jpg", image.read_bytes(), "image/jpeg")},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["query"]["kind"] == "composed" and len(body["results"]) == 3
    app.state.service.close()


def test_a_siglip_trains_its_text_head_in_stage1_and_a_combiner_on_it(setup, tmp_path, capsys):
    """SigLIP's projection is its text head, a linear layer with a bias: stage 1 tunes both and the Composer applies
    both."""
    root, config = setup
    config = config.replace(model=f"hf:{write_hf_siglip(tmp_path / 'siglip')}")
    train_cir(config.replace(out=str(tmp_path / "s1")), progress=False)
    tuned = load_file(str(tmp_path / "s1/combiner/text_projection.safetensors"))
    from vitrine.models import create_model

    head = create_model(config.model).model.text_model.head
    assert set(tuned) == {"weight", "bias"} and not torch.equal(tuned["bias"], head.bias.detach())
    stage2 = train_cir(
        config.replace(stage=2, start=str(tmp_path / "s1/combiner"), out=str(tmp_path / "s2")), progress=False
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval", "composed", "--data", str(root / "cat"), "--triplets", str(root / "all.jsonl"), "--model",
                config.model, "--combiner", str(stage2.saved), "--cache-dir", str(root / "cache"), "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {
        k: report[k] for k in stage2.metrics
    } == stage2.metrics  # the saved head and projection score as in training
