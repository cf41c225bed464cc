"""A full disk (ENOSPC, injected at exact write points by `VITRINE_FAILPOINTS=name:n:enospc`): an index build, an
upsert and a snapshot are refused cleanly, and nothing is lost: the previous commit stays searchable, the index
reopens, and the same write succeeds once there is space again."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tests.conftest import copy_index, jpeg_bytes, make_rows, prepared_index, write_folder

from vitrine import failpoints
from vitrine.cli import main
from vitrine.index.stores import open_store
from vitrine.serve.settings import ServeSettings

SETTINGS = dict(tag_model="vitrine:small", combiner="sum", runtime="torch")
TOKEN = "enospc-write-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FULL = "no space left on device while writing"
# FaissStore's vector writes: a new vector file (a merge), or a record appended to the delta log
VECTORS = "index.vectors_written:1,index.delta_written:1"
INTACT = "the previous commit is intact"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Six products indexed as `vitrine serve --catalog` does, and a second catalog of six more to add."""
    root = tmp_path_factory.mktemp("enospc")
    rows = make_rows(12)
    write_folder(root / "more", rows)
    prepared_index(root / "first", str(root / "index"), rows[:6], **SETTINGS)
    return root


@pytest.fixture
def index(served, tmp_path) -> Path:
    return copy_index(served / "index", tmp_path)


@pytest.fixture
def disk_full(monkeypatch):
    """`disk_full("name:n,...")`: the disk fills at those failpoints (from the n-th hit on); `disk_full(None)` frees
    it."""
    failpoints.reset()

    def fill(spec: str | None) -> None:
        failpoints.reset()
        if spec is None:
            monkeypatch.delenv("VITRINE_FAILPOINTS", raising=False)
        else:
            monkeypatch.setenv("VITRINE_FAILPOINTS", ",".join(f"{entry}:enospc" for entry in spec.split(",")))

    yield fill
    failpoints.reset()


def no_temp_files(index: Path) -> list[str]:
    return [str(p.relative_to(index)) for p in index.rglob("*") if ".tmp" in p.name]


def products(index: Path) -> dict:
    store = open_store(str(index))  # the index reopens
    try:
        stats = store.stats()
        assert stats["products"] == stats["vectors"]
        hits = store.lexical(["brand"], k=100)
        return {"count": stats["products"], "generation": stats["generation"], "found": len(hits)}
    finally:
        store.close()


# ---- index build / add -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("point", [VECTORS, "images.write:3"], ids=["vector-file", "images"])
def test_a_build_that_fills_the_disk_fails_clearly_and_keeps_the_previous_commit(
    index, served, disk_full, capsys, point
):
    """The vector file's write (FaissStore's own failpoint) and, for `serve --catalog`, the images written beside it."""
    from vitrine.disk import DiskFullError
    from vitrine.serve.prepare import prepare_index

    before = products(index)
    disk_full(point)
    if point.startswith("index."):
        code = main(
            [
                "index", "add", "--data", str(served / "more"), "--index", str(index), "--model", "vitrine:small",
                "--runtime", "torch", "--no-progress",
            ]
        )
        err = capsys.readouterr().err
        assert code == 1 and f"error: {FULL} {index}: {INTACT}" in err and "Traceback" not in err, err
    else:
        with pytest.raises(DiskFullError, match=f"{FULL} .*images/[0-9a-f]{{40}}.jpg: {INTACT}"):
            prepare_index(
                str(served / "more"), ServeSettings(index=str(index), **SETTINGS), "vitrine:small", progress=False
            )
    assert products(index) == before and before["count"] == 6 and no_temp_files(index) == []
    disk_full(None)  # space again: the same command goes on from the last commit
    assert (
        main(
            [
                "index", "add", "--data", str(served / "more"), "--index", str(index), "--model", "vitrine:small",
                "--runtime", "torch", "--no-progress",
            ]
        )
        == 0
    )
    assert products(index)["count"] == 12


# ---- the HTTP API: 507 -----------------------------------------------------------------------------------------------
@pytest.fixture
def client(index):
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app

    app = create_app(ServeSettings(index=str(index), write_token=TOKEN, **SETTINGS))
    app.state.service.tag = lambda image, vocabulary=None: {}  # tags play no part here
    with TestClient(app) as test_client:
        yield test_client
    app.state.service.close()


def upsert(client, product_id: str, title: str):
    return client.post(
        "/products",
        data={"id": product_id, "title": title},
        files={"image": ("p.jpg", jpeg_bytes((9, 99, 199)), "image/jpeg")},
        headers=AUTH,
    )


@pytest.mark.parametrize("point", [VECTORS, "images.write:1"], ids=["vector-file", "image-staging"])
def test_an_upsert_or_delete_on_a_full_disk_answers_507_and_changes_nothing(client, index, disk_full, point):
    old_title, old_image = client.get("/products/1001").json()["title"], client.get("/products/1001/image").content
    disk_full(point)
    for answer in (upsert(client, "1001", "replaced"), upsert(client, "new-1", "added")):
        assert answer.status_code == 507, answer.text
        assert answer.json() == {
            "error": {
                "status": 507,
                "code": "disk_full",
                "message": "insufficient storage: the server's disk is full; the write was not "
                "made and the catalog is as before",
            }
        }
        assert str(index) not in answer.text  # server paths stay in the server's log
    if point.startswith("index."):  # a delete writes a vector file too
        assert client.delete("/products/1002", headers=AUTH).status_code == 507
    assert (
        client.get("/products/1001").json()["title"] == old_title
        and client.get("/products/1001/image").content == old_image
    )
    assert client.get("/products/new-1").status_code == 404 and client.get("/products/1002").status_code == 200
    found = client.post("/search", json={"text": "brand", "k": 50})
    assert found.status_code == 200 and len(found.json()["results"]) == 6
    assert no_temp_files(index) == [] and not any((index / "images" / "staged").glob("*"))
    disk_full(None)
    assert upsert(client, "1001", "replaced").status_code == 200 and upsert(client, "new-1", "added").status_code == 201
    assert client.delete("/products/1002", headers=AUTH).status_code == 204
    assert (
        client.get("/products/1001").json()["title"] == "replaced"
        and client.get("/products/new-1/image").status_code == 200
    )
    assert products(index)["count"] == 6


def test_507_is_in_the_error_contract_of_the_write_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert (
        "507" in paths["/products"]["post"]["responses"]
        and "507" in paths["/products/{product_id}"]["delete"]["responses"]
    )
    assert "507" not in paths["/search"]["post"]["responses"]


# ---- snapshots -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["snapshot.write:2", "snapshot.db_copied:1"])
def test_a_snapshot_on_a_full_disk_fails_clearly_and_leaves_index_and_earlier_snapshot_intact(
    index, tmp_path, disk_full, capsys, point
):
    out = tmp_path / "snap.tar"
    assert main(["index", "snapshot", "--index", str(index), "--out", str(out), "--no-progress"]) == 0
    earlier = out.read_bytes()
    capsys.readouterr()
    disk_full(point)
    assert main(["index", "snapshot", "--index", str(index), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    written = out if point.startswith("snapshot.write") else index / ".snapshot-"
    assert f"error: {FULL} {written}" in err and INTACT in err and "Traceback" not in err, err
    assert out.read_bytes() == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["index", "snap.tar"]
    assert no_temp_files(index) == [] and products(index)["count"] == 6
    from vitrine.serve.service import SearchService

    service = SearchService(ServeSettings(index=str(index), **SETTINGS))  # the lock was let go: a write goes through
    service.tag = lambda image, vocabulary=None: {}
    try:
        service.upsert("after", "after the full disk", {}, Image.new("RGB", (30, 30), (5, 5, 5)))
    finally:
        service.close()
    disk_full(None)
    assert main(["index", "snapshot", "--index", str(index), "--out", str(out), "--no-progress"]) == 0
    assert (
        main(["index", "restore", "--snapshot", str(out), "--index", str(tmp_path / "restored"), "--no-progress"]) == 0
    )
    assert products(tmp_path / "restored")["count"] == 7
