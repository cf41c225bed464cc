"""Every recipe on the one engine resumes bit for bit: a run stopped part-way and rerun saves the same tensors as one
that ran in one go (the clip recipes are covered in test_clip.py and test_locked.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import cir_catalog, cir_config, make_rows, write_folder

from vitrine.cir.train import train_cir
from vitrine.train.regions import RegionTrainConfig, train_regions


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("locked", [True, False], ids=["cached-views", "live-tower"])
def test_region_alignment_resumes_bit_for_bit(tmp_path, locked):
    write_folder(tmp_path / "cat", make_rows(40))
    config = RegionTrainConfig(
        data=str(tmp_path / "cat"), model="vitrine:small", split_from=None, epochs=2, batch_size=8, lr=1e-3,
        warmup_steps=1, val_items=8, checkpoint_every=3, cache_dir=str(tmp_path / "cache"), freeze_image_tower=locked,
    )
    whole = train_regions(config.replace(out=str(tmp_path / "whole")), progress=False)
    stopped = train_regions(config.replace(out=str(tmp_path / "parts"), max_steps=whole.steps // 2 + 1), progress=False)
    assert 0 < stopped.steps < whole.steps
    resumed = train_regions(config.replace(out=str(tmp_path / "parts")), progress=False)
    assert resumed.steps == whole.steps and resumed.metrics == whole.metrics
    assert_same_tensors(
        load_file(str(tmp_path / "whole/model/model.safetensors")),
        load_file(str(tmp_path / "parts/model/model.safetensors")),
    )


@pytest.fixture(scope="module")
def triplet_catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("cir")
    cir_catalog(root)
    return root


@pytest.mark.parametrize(
    "stage,combiner", [(1, "combiner"), (2, "combiner"), (2, "agcn")], ids=["stage1-sum", "combiner", "agcn"]
)
def test_composed_retrieval_stages_resume_bit_for_bit(triplet_catalog, tmp_path, stage, combiner):
    root = triplet_catalog
    config = cir_config(root, stage=stage, combiner=combiner, epochs=2, agcn_width=32, agcn_layers=1)
    whole = train_cir(config.replace(out=str(tmp_path / "whole")), progress=False)
    stopped = train_cir(config.replace(out=str(tmp_path / "parts"), max_steps=whole.steps // 2 + 1), progress=False)
    assert 0 < stopped.steps < whole.steps
    resumed = train_cir(config.replace(out=str(tmp_path / "parts")), progress=False)
    assert resumed.steps == whole.steps and resumed.metrics == whole.metrics
    name = "text_projection.safetensors" if stage == 1 else "combiner.safetensors"
    assert_same_tensors(
        load_file(str(tmp_path / f"whole/combiner/{name}")), load_file(str(tmp_path / f"parts/combiner/{name}"))
    )
