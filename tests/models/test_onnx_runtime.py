"""The ONNX runtime: export, parity with torch on real catalog images and titles, the runtime cache, and index
runtimes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tests.conftest import make_rows, write_folder

from vitrine.cli import main
from vitrine.errors import NotFound
from vitrine.index.build import build_index
from vitrine.index.store import IndexMismatchError
from vitrine.models import create_model
from vitrine.models.onnx_export import PARITY_MIN_COSINE, export_onnx
from vitrine.search import SearchEngine

HIRES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "kagl-hires"
MODEL = "vitrine:kagl-base"
FP32_MIN_COSINE = 0.9999  # the bar for ONNX fp32 against torch, per embedding


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    """kagl-base in torch, and its ONNX export made through the runtime cache (as `--runtime onnx` does)."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    previous = os.environ.get("VITRINE_ONNX_CACHE")
    os.environ["VITRINE_ONNX_CACHE"] = str(cache)
    try:
        torch_model = create_model(MODEL)
        onnx_model = create_model(MODEL, runtime="onnx")
        int8_model = create_model(MODEL, runtime="onnx-int8")
        yield torch_model, onnx_model, int8_model, cache
    finally:
        if previous is None:
            os.environ.pop("VITRINE_ONNX_CACHE", None)
        else:
            os.environ["VITRINE_ONNX_CACHE"] = previous


def real_batch(model, n: int = 32):
    rows = list(csv.DictReader(open(HIRES / "catalog.csv", encoding="utf-8")))[:: 1012 // n][:n]
    pixels = torch.stack(
        [model.image_transform(Image.open(HIRES / "images" / f"{row['id']}.jpg").convert("RGB")) for row in rows]
    )
    return pixels, [row["title"] for row in rows]


def cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a, b = torch.nn.functional.normalize(a.float(), dim=-1), torch.nn.functional.normalize(b.float(), dim=-1)
    return (a * b).sum(-1).numpy()


def test_onnx_fp32_matches_torch_on_real_catalog_images_and_titles(runtimes):
    torch_model, onnx_model, _, _ = runtimes
    pixels, titles = real_batch(torch_model)
    with torch.inference_mode():
        image_cos = cosines(onnx_model.encode_image(pixels), torch_model.encode_image(pixels))
        text_cos = cosines(onnx_model.encode_text(titles), torch_model.encode_text(titles))
        # dynamic axes: one text alone, and a batch whose length differs from the export's example
        alone = cosines(onnx_model.encode_text(titles[:1]), torch_model.encode_text(titles[:1]))
        long = ["a " + " ".join(titles[:6])] + titles[6:9]
        long_cos = cosines(onnx_model.encode_text(long), torch_model.encode_text(long))
    assert image_cos.min() >= FP32_MIN_COSINE, image_cos.min()
    assert min(text_cos.min(), alone.min(), long_cos.min()) >= FP32_MIN_COSINE
    assert onnx_model.name == MODEL and onnx_model.embed_dim == torch_model.embed_dim
    assert onnx_model.image_transform == torch_model.image_transform  # the same preprocessing code and settings


def test_int8_text_parity_is_measured_and_recorded(runtimes):
    _, onnx_model, int8_model, _ = runtimes
    _, titles = real_batch(onnx_model, 64)
    cos = cosines(int8_model.encode_text(titles), onnx_model.encode_text(titles))
    recorded = int8_model.parity["int8_vs_fp32_text"]
    assert (
        cos.mean() > 0.97 and recorded["mean"] > 0.97
    )  # close, but (measured) not within PARITY_MIN_COSINE per embedding
    assert int8_model.parity["onnx_vs_torch_text"]["min"] >= FP32_MIN_COSINE
    assert int8_model.runtime == "onnx-int8" and onnx_model.runtime == "onnx"
    # images: the int8 runtime runs the fp32 image graph (dynamic int8 convolutions measured far slower)
    pixels, _ = real_batch(onnx_model, 4)
    assert cosines(int8_model.encode_image(pixels), onnx_model.encode_image(pixels)).min() >= FP32_MIN_COSINE


def test_the_cache_exports_once_and_an_export_dir_opens_directly(runtimes, tmp_path, capsys):
    _, onnx_model, _, cache = runtimes
    manifest = onnx_model.directory / "runtime.json"
    stamp = manifest.stat().st_mtime_ns
    again = create_model(MODEL, runtime="onnx")
    assert again.directory == onnx_model.directory and manifest.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [onnx_model.directory.name]
    direct = create_model(f"onnx:{onnx_model.directory}")
    assert direct.runtime == "onnx" and direct.name == MODEL
    with pytest.raises(FileExistsError, match="already holds an ONNX export"):
        export_onnx(create_model(MODEL), onnx_model.directory)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    assert main(["export", "onnx", "--model", MODEL, "--out", str(tmp_path / "busy")]) == 2
    assert "not an ONNX export" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="vitrine export onnx"):
        create_model(f"onnx:{tmp_path / 'busy'}")
    with pytest.raises(NotFound, match="runtime must be one of") as unknown:
        create_model(MODEL, runtime="tensorrt")
    assert unknown.value.code == "unknown_runtime"


def test_a_cached_export_is_found_from_the_files_without_building_the_torch_model(runtimes, tmp_path, monkeypatch):
    _, onnx_model, _, _ = runtimes
    from vitrine.models import model_files_fingerprint
    from vitrine.models.dual import DualEncoder
    from vitrine.models.onnx_cache import export_dir_for

    def never(*_):
        raise AssertionError("the torch model was built to find a cached export")

    monkeypatch.setattr(DualEncoder, "load", never)  # what the registered kagl-base builds itself with
    assert create_model(MODEL, runtime="onnx").directory == onnx_model.directory
    # the key follows the weights: a copy of the model directory shares it, one changed tensor does not
    shipped = Path(str(resources.files("vitrine.models") / "weights" / "kagl-base"))
    copy = tmp_path / "copy"
    shutil.copytree(shipped, copy)
    before = model_files_fingerprint(f"vitrine:{copy}")
    assert before == model_files_fingerprint(MODEL)
    state = load_file(str(copy / "model.safetensors"))
    first = sorted(state)[0]
    state[first] = state[first] + 1e-3
    save_file(state, str(copy / "model.safetensors"))
    assert model_files_fingerprint(f"vitrine:{copy}") != before
    assert export_dir_for(f"vitrine:{copy}") != export_dir_for(f"vitrine:{shipped}")
    assert model_files_fingerprint(f"vitrine:{tmp_path / 'none'}") is None and model_files_fingerprint("hf:a/b") is None


def test_a_seeded_builtin_config_is_fingerprinted_by_its_file_and_its_export_found_unbuilt(tmp_path, monkeypatch):
    """`vitrine:small` (a seeded init): two processes, on different thread counts, build the same weights, so its config
    file, tower wheels and torch version name them, and a second start opens the cached export without building
    torch."""
    from vitrine.models import model_files_fingerprint, towers
    from vitrine.models.onnx_cache import weights_digest

    monkeypatch.setenv("VITRINE_ONNX_CACHE", str(tmp_path / "cache"))
    script = f"import torch; torch.set_num_threads({torch.get_num_threads() + 1}); "  # LAPACK's QR rounds by threads
    script += "from vitrine.models import create_model; from vitrine.models.onnx_cache import weights_digest; "
    script += "print(weights_digest(create_model('vitrine:small')))"
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == weights_digest(create_model("vitrine:small"))
    assert model_files_fingerprint("vitrine:small") not in (None, model_files_fingerprint("vitrine:kagl-small"))
    exported = create_model("vitrine:small", runtime="onnx").directory
    monkeypatch.setattr(towers.MiniLMTower, "__init__", lambda *_, **__: pytest.fail("torch model built"))
    assert create_model("vitrine:small", runtime="onnx").directory == exported


def test_indexes_record_their_runtime_and_refuse_vectors_of_another_space(runtimes, tmp_path):
    torch_model, onnx_model, int8_model, _ = runtimes
    catalog = tmp_path / "catalog"
    write_folder(catalog, make_rows(6))
    build_index(str(catalog), str(tmp_path / "by-torch"), torch_model, progress=False)
    build_index(str(catalog), str(tmp_path / "by-int8"), int8_model, progress=False)
    by_onnx = SearchEngine(str(tmp_path / "by-torch"), runtime="onnx")  # torch and onnx fp32 share one space
    by_torch = SearchEngine(str(tmp_path / "by-torch"))
    assert [h.id for h in by_onnx.text("red shirt", k=6)] == [h.id for h in by_torch.text("red shirt", k=6)]
    assert int8_model.parity["int8_vs_fp32_text"]["min"] < PARITY_MIN_COSINE  # measured: so mixing is refused
    with pytest.raises(IndexMismatchError, match="built with --runtime torch; --runtime onnx-int8"):
        SearchEngine(str(tmp_path / "by-torch"), runtime="onnx-int8")
    with pytest.raises(IndexMismatchError, match="built with --runtime onnx-int8; --runtime torch"):
        SearchEngine(str(tmp_path / "by-int8"))
    with pytest.raises(IndexMismatchError, match="rebuild it with --runtime onnx-int8"):
        build_index(str(catalog), str(tmp_path / "by-torch"), int8_model, progress=False)
    assert len(SearchEngine(str(tmp_path / "by-int8"), runtime="onnx-int8").text("red shirt", k=6)) == 6


def test_composed_queries_match_torch_with_the_shipped_combiner_and_agcn_is_refused(runtimes):
    from vitrine.cir.compose import Composer

    torch_model, onnx_model, _, _ = runtimes
    pixels, _ = real_batch(torch_model, 4)
    changes = ["in red", "with long sleeves", "for women", "darker and shorter"]
    with torch.inference_mode():
        want = Composer(torch_model, "combiner").queries(torch_model.encode_image(pixels), changes)
        got = Composer(onnx_model, "combiner").queries(onnx_model.encode_image(pixels), changes)
    assert cosines(got, want).min() >= FP32_MIN_COSINE
    with pytest.raises(ValueError, match="use --runtime torch"):
        Composer(onnx_model, "agcn")


def test_export_command_writes_graphs_tokenizer_and_manifest(runtimes):
    _, onnx_model, _, _ = runtimes
    files = sorted(p.name for p in onnx_model.directory.iterdir())
    assert files == ["image.onnx", "runtime.json", "text.int8.onnx", "text.onnx", "tokenizer"]
    manifest = json.loads((onnx_model.directory / "runtime.json").read_text())
    assert manifest["model"] == MODEL and manifest["text_outputs"] == ["embeds", "pooled"]
    assert manifest["transform"]["size"] == onnx_model.image_transform.size
    import onnx

    graph = onnx.load(str(onnx_model.directory / "image.onnx"), load_external_data=False).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # a dynamic batch axis
