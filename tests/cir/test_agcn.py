"""RaF-CLIP's AGCN: shapes, the gate's range, padding invariance, save/load, and stage-2 training with --combiner
agcn."""

import json

import pytest
import torch
from tests.conftest import cir_catalog, cir_config

from vitrine.cir.compose import Composer
from vitrine.cir.train import train_cir
from vitrine.cli import main
from vitrine.models.agcn import AGCN, AGCNConfig
from vitrine.models.composed import load_combiner


def inputs(batch=5, tokens=16, words=7, d=32, wi=24, wt=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(batch, d, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(batch, d, generator=g), dim=-1)
    mask = torch.ones(batch, words, dtype=torch.long)
    mask[0, 3:] = 0  # a shorter text, padded
    return image, text, torch.randn(batch, tokens, wi, generator=g), torch.randn(batch, words, wt, generator=g), mask


@pytest.mark.parametrize("layers", [1, 3])
def test_shapes_unit_norm_and_gate_range(layers):
    torch.manual_seed(0)
    agcn = AGCN(AGCNConfig(embed_dim=32, image_width=24, text_width=40, width=16, layers=layers, heads=2)).eval()
    assert len(agcn.blocks) == layers
    image, text, image_tokens, text_tokens, mask = inputs()
    query = agcn(image, text, image_tokens, text_tokens, mask)
    assert query.shape == (5, 32) and torch.allclose(query.norm(dim=-1), torch.ones(5), atol=1e-5)
    with torch.no_grad():  # a trained gate can be anywhere; push it hard both ways
        agcn.gate.weight.normal_(0, 5.0)
    fused = agcn.fuse(image_tokens, text_tokens, mask)
    gate = agcn.gate_values(fused, image, text)
    assert gate.shape == (5, 32) and gate.min() >= 0 and gate.max() <= 1 and gate.std() > 0.1


def test_untrained_agcn_starts_near_sum_and_ignores_padding():
    agcn = AGCN(AGCNConfig(embed_dim=32, image_width=24, text_width=40, width=16, layers=2, heads=2)).eval()
    image, text, image_tokens, text_tokens, mask = inputs()
    query = agcn(image, text, image_tokens, text_tokens, mask)
    summed = torch.nn.functional.normalize(image + text, dim=-1)
    assert (query * summed).sum(-1).min() > 0.9  # gate sigmoid(-2) = 0.12 at the start
    changed = text_tokens.clone()
    changed[0, 3:] = 99.0  # padding positions must not matter
    assert torch.allclose(agcn(image, text, image_tokens, changed, mask), query, atol=1e-5)


def test_save_load_and_dispatch(tmp_path):
    agcn = AGCN(
        AGCNConfig(embed_dim=32, image_width=24, text_width=40, width=16, heads=2, encoder="vitrine:small")
    ).eval()
    agcn.save(tmp_path / "agcn", extra={"stage": 2})
    loaded = load_combiner(str(tmp_path / "agcn"), embed_dim=32, encoder="vitrine:small")
    assert isinstance(loaded, AGCN) and json.loads((tmp_path / "agcn/combiner.json").read_text())["kind"] == "agcn"
    args = inputs()
    assert torch.allclose(loaded(*args), agcn(*args))
    with pytest.raises(ValueError, match="trained on"):
        load_combiner(str(tmp_path / "agcn"), embed_dim=32, encoder="vitrine:other")


def test_stage2_agcn_trains_evaluates_and_searches(tmp_path, capsys):
    cir_catalog(tmp_path)
    config = cir_config(
        tmp_path, stage=2, combiner="agcn", out=str(tmp_path / "agcn"), epochs=2, agcn_width=32, agcn_layers=1,
        agcn_heads=2,
    )
    first = train_cir(config.replace(max_steps=3), progress=False)
    assert first.steps == 3
    done = train_cir(config, progress=False)  # resumes
    assert done.steps == 16 and set(done.metrics) >= {"R@1", "R@10", "R@50"}
    assert list((tmp_path / "cache").rglob("tokens.npy"))
    saved = tmp_path / "agcn" / "combiner"
    assert json.loads((saved / "combiner.json").read_text())["kind"] == "agcn"
    capsys.readouterr()
    assert (
        main(
            [
                "eval", "composed", "--data", str(tmp_path / "cat"), "--triplets", str(tmp_path / "all.jsonl"),
                "--model", "vitrine:small", "--combiner", str(saved), "--cache-dir", str(tmp_path / "cache"), "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n_queries"] == 120 and report["R@50"] >= report["R@10"] >= report["R@1"]
    composer = Composer(
        __import__("vitrine.models", fromlist=["create_model"]).create_model("vitrine:small"), str(saved)
    )
    assert composer.needs_tokens
    with pytest.raises(ValueError, match="tokens"):
        composer.queries(torch.zeros(1, 256), ["in red"])
    # the search engine hands the query image's tokens to the AGCN
    assert (
        main(
            [
                "index", "build", "--data", str(tmp_path / "cat"), "--index", str(tmp_path / "idx"), "--model",
                "vitrine:small", "--no-progress",
            ]
        )
        == 0
    )
    image = next((tmp_path / "cat" / "images").glob("*.jpg"))
    assert (
        main(
            [
                "search", "--index", str(tmp_path / "idx"), "--image", str(image), "--modify", "in red", "--combiner",
                str(saved), "--model", "vitrine:small", "-k", "3", "--json",
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert len(hits) == 3
