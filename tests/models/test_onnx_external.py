"""The ONNX runtime for the CLIP and SigLIP checkpoints users bring (`hf:DIR`, `openclip:ARCH@FILE`; tiny random
ones here): parity with torch on real KAGL images and titles, the pooled text output a Combiner's projection reads,
`onnx:DIR`, and the default runtime serving them through ONNX rather than falling back to torch."""

from __future__ import annotations

import json
import tarfile

import pytest
import torch
import torch.nn.functional as F
from tests.conftest import write_kagl_subset
from tests.support.data import needs_data
from tests.support.random_checkpoints import write_hf_clip, write_hf_siglip, write_openclip

from vitrine.cli import main
from vitrine.data.catalog import open_catalog
from vitrine.models import create_model
from vitrine.models.onnx_cache import export_dir_for

pytestmark = needs_data("kagl")
FP32_MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-external")
    shard = write_kagl_subset(root / "kagl-64.tar", 64)
    items = list(open_catalog(shard))
    models = {
        "clip": f"hf:{write_hf_clip(root / 'clip')}",
        "siglip": f"hf:{write_hf_siglip(root / 'siglip')}",
        "openclip": f"openclip:ViT-B-32@{write_openclip(root / 'openclip')}",
    }
    return root, shard, items, models


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).min())


@pytest.mark.parametrize("kind", ["clip", "siglip", "openclip"])
def test_onnx_matches_torch_on_real_products_and_opens_as_an_export_dir(setup, kind):
    _, _, items, models = setup
    torch_model, onnx_model = create_model(models[kind]), create_model(models[kind], runtime="onnx")
    assert type(onnx_model).__name__ == "OnnxEncoder" and onnx_model.name == torch_model.name
    parity = onnx_model.parity
    assert (
        parity["onnx_vs_torch_text"]["min"] >= FP32_MIN_COSINE
        and parity["onnx_vs_torch_image"]["min"] >= FP32_MIN_COSINE
    )
    titles = [item.title for item in items]
    pixels = torch_model.preprocess([item.image for item in items])
    with torch.no_grad():
        image_cos = min_cosine(onnx_model.encode_image(pixels), torch_model.encode_image(pixels))
        text_cos = min_cosine(onnx_model.encode_text(titles), torch_model.encode_text(titles))
        pooled_gap = float((onnx_model.pooled_texts(titles) - torch_model.pooled_texts(titles)).abs().max())
    print(
        f"{kind}: ONNX fp32 vs torch on {len(items)} KAGL products: image min cos {image_cos:.6f}, text min cos "
        f"{text_cos:.6f}, "
        f"pooled text max |diff| {pooled_gap:.2e}"
    )
    assert image_cos >= FP32_MIN_COSINE and text_cos >= FP32_MIN_COSINE and pooled_gap < 1e-3
    direct = create_model(f"onnx:{export_dir_for(models[kind])}")  # the cached export is an export directory
    assert torch.equal(direct.encode_text(titles[:4]), onnx_model.encode_text(titles[:4]))


def test_the_default_runtime_indexes_and_searches_a_clip_through_onnx(setup, tmp_path, capsys):
    root, shard, _, models = setup
    assert (
        main(
            [
                "index", "build", "--data", shard, "--index", str(tmp_path / "idx"), "--model", models["siglip"],
                "--no-progress",
            ]
        )
        == 0
    )
    from vitrine.index.stores import open_store

    store = open_store(str(tmp_path / "idx"))
    assert store.get_state("runtime") == "onnx"  # exported, not silently run on torch
    store.close()
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--text", "a red dress", "-k", "5", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]) == 5
    with tarfile.open(shard) as tar:
        name = next(m.name for m in tar if m.name.endswith(".jpg"))
        (tmp_path / "q.jpg").write_bytes(tar.extractfile(name).read())
    assert (
        main(
            [
                "search", "--index", str(tmp_path / "idx"), "--image", str(tmp_path / "q.jpg"), "--modify", "in red",
                "--combiner", "sum", "-k", "3", "--json",
            ]
        )
        == 0
    )
