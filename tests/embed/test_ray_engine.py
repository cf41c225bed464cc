"""`vitrine embed --engine ray`: a local Ray (2 CPUs) gives the in-process output exactly, and resumes a killed job."""

import csv
import json

import numpy as np
import pytest
from tests.conftest import make_rows, require_scale, write_folder, write_shards

ray = require_scale("ray")

from vitrine.cli import main  # noqa: E402
from vitrine.embed import run_embed  # noqa: E402
from vitrine.embed.parts import PartStore  # noqa: E402
from vitrine.embed.ray_engine import RayOptions  # noqa: E402
from vitrine.embed.units import plan_units  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (RaySession reuses a running Ray and leaves it up)."""
    import os

    from vitrine.embed.ray_engine import LOCAL_GCS_WAIT_S

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", LOCAL_GCS_WAIT_S)  # CI's busy cores start GCS slowly
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def read_ids(out):
    with open(out / "metadata.csv", newline="", encoding="utf-8") as handle:
        return [row["id"] for row in csv.DictReader(handle)]


def assert_same_output(a, b, texts=False):
    assert read_ids(a) == read_ids(b)
    for kind in ["image", "text"] if texts else ["image"]:
        x, y = np.load(a / f"{kind}_embeddings.npy"), np.load(b / f"{kind}_embeddings.npy")
        assert x.shape == y.shape and np.abs(x - y).max() <= 1e-5


def test_units_cover_the_catalog_in_order(tmp_path):
    write_shards(tmp_path / "shards", make_rows(37), per_shard=10)
    units = plan_units(str(tmp_path / "shards"), part_size=4)
    assert [(u.start, u.stop) for u in units[:4]] == [(0, 4), (4, 8), (8, 10), (0, 4)]
    assert sum(u.stop - u.start for u in units) == 37 and [u.index for u in units] == list(range(len(units)))
    write_folder(tmp_path / "cat", make_rows(9))
    assert [(u.start, u.stop) for u in plan_units(str(tmp_path / "cat"), part_size=4)] == [(0, 4), (4, 8), (8, 9)]


@pytest.mark.parametrize("layout", ["shards", "folder"])
def test_ray_output_equals_the_in_process_output(tmp_path, layout):
    rows = make_rows(37)
    data = tmp_path / "data"
    write_shards(data, rows, per_shard=10) if layout == "shards" else write_folder(data, rows)
    local = run_embed(
        str(data), "vitrine:small", out=str(tmp_path / "local"), batch_size=4, part_size=8, texts=True, progress=False
    )
    remote = run_embed(
        str(data), "vitrine:small", out=str(tmp_path / "ray"), batch_size=4, part_size=8, texts=True, progress=False,
        engine="ray", ray=RayOptions(workers=2),
    )
    assert remote.count == local.count == 37 and remote.computed == 37
    assert_same_output(tmp_path / "local", tmp_path / "ray", texts=True)
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["engine"] == "ray"


def test_a_killed_ray_job_resumes_without_recomputing_committed_parts(tmp_path, monkeypatch):
    write_shards(tmp_path / "shards", make_rows(40), per_shard=10)
    run_embed(
        str(tmp_path / "shards"), "vitrine:small", out=str(tmp_path / "local"), batch_size=4, part_size=5,
        progress=False,
    )
    written = []
    original = PartStore.write

    def write_then_die(self, index, arrays, rows, marker):
        original(self, index, arrays, rows, marker)
        written.append(index)
        if len(written) == 3:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(PartStore, "write", write_then_die)
    args = dict(
        out=str(tmp_path / "ray"), batch_size=4, part_size=5, progress=False, engine="ray", ray=RayOptions(workers=2)
    )
    with pytest.raises(KeyboardInterrupt):
        run_embed(str(tmp_path / "shards"), "vitrine:small", **args)
    monkeypatch.undo()
    recomputed = []
    monkeypatch.setattr(
        PartStore, "write", lambda self, index, *rest: (recomputed.append(index), original(self, index, *rest))
    )
    result = run_embed(str(tmp_path / "shards"), "vitrine:small", **args)
    assert result.computed == 40 - 15 and result.count == 40
    assert not set(recomputed) & set(written) and len(recomputed) == 5
    assert_same_output(tmp_path / "local", tmp_path / "ray")


def test_cli_engine_flags(tmp_path, capsys):
    write_folder(tmp_path / "cat", make_rows(6))
    out = tmp_path / "out"
    assert (
        main(
            [
                "embed", "--data", str(tmp_path / "cat"), "--model", "vitrine:small", "--out", str(out), "--engine",
                "ray", "--workers", "1", "--no-progress",
            ]
        )
        == 0
    )
    assert "wrote 6 embeddings" in capsys.readouterr().err
    assert (
        main(
            ["embed", "--data", str(tmp_path / "cat"), "--model", "vitrine:small", "--out", str(out), "--workers", "2"]
        )
        == 2
    )
    assert "--engine ray" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_index_build_on_ray_matches_the_in_process_build_and_resumes(tmp_path, capsys, backend):
    from vitrine.index.stores import open_store

    if backend == "milvus":
        require_scale("pymilvus")
    write_shards(tmp_path / "shards", make_rows(30), per_shard=10)
    common = [
        "--data", str(tmp_path / "shards"), "--model", "vitrine:small", "--no-progress", "--commit-every", "8",
        "--batch-size", "4",
    ]
    assert main(["index", "build", *common, "--index", str(tmp_path / "local")]) == 0
    spec = str(tmp_path / "ray") if backend == "faiss" else f"milvus:{tmp_path}/ray.db"
    assert main(["index", "build", *common, "--index", spec, "--engine", "ray", "--workers", "2"]) == 0
    assert "30 products; added 30" in capsys.readouterr().err
    assert main(["index", "add", *common, "--index", spec, "--engine", "ray", "--workers", "2"]) == 0
    assert "30 products; added 0" in capsys.readouterr().err  # every unit is committed: nothing is encoded again
    local, remote = open_store(str(tmp_path / "local")), open_store(spec)
    try:
        queries = np.random.default_rng(0).standard_normal((3, local.dim)).astype(np.float32)
        for a, b in zip(local.search(queries, k=30), remote.search(queries, k=30)):
            assert sorted(h.id for h in a) == sorted(h.id for h in b)
            assert np.allclose(sorted(h.score for h in a), sorted(h.score for h in b), atol=1e-5)
        assert remote.product("1003") == local.product("1003")
    finally:
        local.close()
        remote.close()
