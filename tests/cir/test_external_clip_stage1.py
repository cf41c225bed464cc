"""CLIP4Cir's stage 1 fine-tuning the encoders themselves (`stage1_trains: text | both`) of a CLIP or SigLIP that users
bring, on real KAGL products: the loss falls, resume is bit-identical, the saved model loads back under its name and
scores exactly as it did in training, and stage 2, `eval composed`, `index build` and `search --modify` run on it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tests.conftest import write_kagl_subset
from tests.support.data import needs_data
from tests.support.random_checkpoints import write_hf_clip, write_hf_siglip, write_openclip

from vitrine.cir.config import CirTrainConfig
from vitrine.cir.train import train_cir
from vitrine.cir.triplets import read_triplets
from vitrine.cli import main
from vitrine.data.product_images import decode_products
from vitrine.data.transforms import to_input
from vitrine.models import create_model

pytestmark = needs_data("kagl")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cir-stage1")
    shard = write_kagl_subset(root / "kagl-400.tar", 400)
    assert main(["data", "make-triplets", "--data", shard, "--out", str(root / "all.jsonl"), "--kinds", "colour"]) == 0
    models = {
        "clip": f"hf:{write_hf_clip(root / 'clip')}",
        "siglip": f"hf:{write_hf_siglip(root / 'siglip')}",
        "openclip": f"openclip:ViT-B-32@{write_openclip(root / 'openclip')}",
    }
    config = CirTrainConfig(
        stage=1, data=(shard,), triplets=str(root / "all.jsonl"), val_triplets=str(root / "all.jsonl"), epochs=2,
        batch_size=16, lr=1e-3, warmup_steps=1, weight_decay=0.0, cache_dir=str(root / "cache"),
    )
    return root, shard, models, config


def sum_loss(model, shard: str, triplets_file: str) -> float:
    """The stage-1 loss (sum combination, scale 100) on the first 32 triplets, each against the others' targets."""
    triplets = read_triplets(triplets_file)[:32]
    ids = [t.reference for t in triplets] + [t.targets[0] for t in triplets]
    rows, images = decode_products((shard,), ids, model.image_transform, progress=False)
    model.eval()
    with torch.no_grad():
        embeds = model.encode_image(to_input(images[[rows[i] for i in ids]], model.image_transform))
        text = model.encode_text([t.modification for t in triplets])
    query = F.normalize(embeds[: len(triplets)] + text, dim=-1)
    logits = 100.0 * query @ embeds[len(triplets) :].T
    return float(F.cross_entropy(logits, torch.arange(len(triplets))))


@pytest.mark.parametrize("kind,trains", [("clip", "text"), ("siglip", "both"), ("openclip", "both")])
def test_stage1_fine_tunes_the_encoders_resumes_and_saves_a_model_that_scores_the_same(
    setup, tmp_path, capsys, kind, trains
):
    root, shard, models, config = setup
    config = config.replace(model=models[kind], stage1_trains=trains)
    before = sum_loss(create_model(config.model), shard, config.triplets)
    whole = train_cir(config.replace(out=str(tmp_path / "whole")), progress=False)
    train_cir(config.replace(out=str(tmp_path / "parts"), max_steps=whole.steps // 2 + 1), progress=False)
    resumed = train_cir(config.replace(out=str(tmp_path / "parts")), progress=False)
    assert resumed.steps == whole.steps > 10 and resumed.metrics == whole.metrics
    a, b = ((tmp_path / name / "model" / "model.safetensors").read_bytes() for name in ("whole", "parts"))
    assert a == b  # bit-identical resume
    head = json.loads((tmp_path / "whole" / "combiner" / "combiner.json").read_text())
    assert head["kind"] == "sum" and head["stage1_trains"] == trains
    assert head["encoder"].startswith({"clip": "hf:", "siglip": "hf:", "openclip": "openclip:"}[kind])
    assert not (tmp_path / "whole" / "combiner" / "text_projection.safetensors").exists()  # the model carries its own
    tuned = create_model(head["encoder"])
    after = sum_loss(tuned, shard, config.triplets)
    assert after < before - 0.5, (before, after)
    start, end = create_model(config.model).state_dict(), tuned.state_dict()
    image_moved = any(
        not torch.equal(start[k], end[k]) for k in start if "vision_model" in k or k.startswith("model.vision")
    )
    assert image_moved == (trains == "both")
    # the reloaded model scores the validation triplets exactly as the trained one did before it was saved
    capsys.readouterr()
    assert (
        main(
            [
                "eval", "composed", "--data", shard, "--triplets", config.val_triplets, "--model", head["encoder"],
                "--combiner", "sum", "--json", "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: report[k] for k in whole.metrics} == whole.metrics
    print(kind, trains, "loss on 32 triplets", round(before, 4), "->", round(after, 4), whole.metrics)


def test_stage2_search_and_the_service_run_on_a_stage1_fine_tuned_clip(setup, tmp_path, capsys):
    root, shard, models, config = setup
    stage1 = train_cir(
        config.replace(model=models["clip"], stage1_trains="both", out=str(tmp_path / "s1")), progress=False
    )
    tuned = json.loads((Path(stage1.saved) / "combiner.json").read_text())["encoder"]
    stage2 = train_cir(config.replace(stage=2, model=tuned, out=str(tmp_path / "s2")), progress=False)
    assert set(stage2.metrics) >= {"R@1", "R@10", "R@50"}
    capsys.readouterr()
    assert (
        main(
            [
                "eval", "composed", "--data", shard, "--triplets", config.val_triplets, "--model", tuned, "--combiner",
                str(stage2.saved), "--json", "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: report[k] for k in stage2.metrics} == stage2.metrics
    assert (
        main(["index", "build", "--data", shard, "--index", str(tmp_path / "idx"), "--model", tuned, "--no-progress"])
        == 0
    )
    reference = read_triplets(config.triplets)[0].reference
    with tarfile.open(shard) as tar:
        (tmp_path / "query.jpg").write_bytes(tar.extractfile(f"{reference}.jpg").read())
    capsys.readouterr()
    assert (
        main(
            [
                "search", "--index", str(tmp_path / "idx"), "--image", str(tmp_path / "query.jpg"), "--modify",
                "in red", "--combiner", str(stage2.saved), "-k", "3", "--json",
            ]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]) == 3
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app
    from vitrine.serve.settings import ServeSettings

    app = create_app(ServeSettings(index=str(tmp_path / "idx"), tag_model="vitrine:small", combiner=str(stage2.saved)))
    with TestClient(app) as client:
        response = client.post(
            "/search",
            data={"modification": "in red", "k": "3"},
            files={"image": ("q.jpg", (tmp_path / "query.jpg").read_bytes(), "image/jpeg")},
        )
        assert response.status_code == 200, response.text
        assert response.json()["query"]["kind"] == "composed" and len(response.json()["results"]) == 3
    app.state.service.close()
