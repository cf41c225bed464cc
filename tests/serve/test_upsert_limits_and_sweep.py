"""Upserts and the image store: the form cap on upserts, stale temp files swept at open, a row never shown without its
image."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from tests.conftest import jpeg_bytes
from tests.support.http import AUTH

from vitrine.serve.images import ImageStore


def dead_pid() -> int:
    """The pid of a process that has exited (what a killed writer's temp file is named after)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def torch_client(settings):
    """The API over a copy of the served index, on the torch runtime (no ONNX export to wait for)."""
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app

    app = create_app(replace(settings, runtime="torch"))
    with TestClient(app) as test_client:
        yield test_client
    app.state.service.close()


# ---- POST /products and the form cap --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["multipart", "urlencoded"])
def test_an_upsert_form_of_65_fields_is_refused_like_any_other_form(torch_client, kind):
    client = torch_client
    padding = {"attributes": ['{"gender": "Men"}'] * 63}  # with id and title: 65 text fields
    fields = {"id": "many-1", "title": "t", **padding}
    files = {"image": ("p.jpg", jpeg_bytes(), "image/jpeg")} if kind == "multipart" else None
    answer = client.post("/products", data=fields, files=files, headers=AUTH)
    assert answer.status_code == 400 and "Too many fields" in answer.json()["error"]["message"], answer.text
    assert (
        client.post(
            "/search", data={"text": "red", "filter": [f"gender=Men{i}" for i in range(64)]}, files=files
        ).status_code
        == 400
    )
    # one field fewer is read (and refused for what it says, not for its size)
    fields["attributes"] = fields["attributes"][:62]
    answer = client.post("/products", data=fields, files=files, headers=AUTH)
    assert (
        answer.status_code == 400 and "attributes: give it once, got 62 values" in answer.json()["error"]["message"]
    ), answer.text
    assert client.get("/products/many-1").status_code == 404


# ---- stale temp files ------------------------------------------------------------------------------------------------
def leave_temp_files(index: Path) -> tuple[list[Path], list[Path]]:
    """Temp files a killed prepare / backfill / worker / snapshot left (their pid is dead), and one of a live writer."""
    gone = dead_pid()
    images = index / "images"
    (images / "staged").mkdir(exist_ok=True)
    stale = [
        images / f"{'a' * 40}.jpg.{gone}.tmp", images / "staged" / f"{'b' * 32}.jpg.{gone}.tmp",
        index / f".snapshot-0a1b2c3d.{gone}.tmp",
    ]
    for path in stale[:2]:
        path.write_bytes(b"half a jpeg")
    stale[2].mkdir()
    (stale[2] / "index.sqlite").write_bytes(b"a copy")
    live = [images / f"{'c' * 40}.jpg.{os.getpid()}.tmp"]  # this process is alive: a writer still at work
    live[0].write_bytes(b"being written")
    return stale, live


def test_stale_temp_files_are_swept_when_the_service_opens(settings):
    from vitrine.serve.service import SearchService

    stale, live = leave_temp_files(Path(settings.index))
    service = SearchService(replace(settings, runtime="torch"))
    try:
        assert [p for p in stale if p.exists()] == [] and all(p.exists() for p in live)
        assert service.stats()["products"] == 12
    finally:
        service.close()


def test_stale_temp_files_are_swept_by_a_rerun_of_index_images(settings, served_index, capsys):
    """`vitrine index images` (and `serve --catalog`'s prepare, through the same `sweep_images`) sweeps when it
    starts."""
    from vitrine.cli import main

    stale, live = leave_temp_files(Path(settings.index))
    assert (
        main(["index", "images", "--data", str(served_index / "catalog"), "--index", settings.index, "--no-progress"])
        == 0
    )
    assert [p for p in stale[:2] if p.exists()] == [] and all(p.exists() for p in live)
    assert "already there 12" in capsys.readouterr().err


# ---- a row is never seen without its image ---------------------------------------------------------------------------
def two_services(settings):
    from vitrine.serve.service import SearchService

    torch_settings = replace(settings, runtime="torch")
    writer, reader = SearchService(torch_settings), SearchService(torch_settings)
    writer.tag = lambda image, vocabulary=None: {}  # tags play no part here
    return writer, reader


@pytest.mark.parametrize("product_id", ["new-1", "1001"])  # a new product, and a replacement
def test_another_worker_between_commit_and_settle_sees_the_row_with_its_own_image(settings, monkeypatch, product_id):
    import vitrine.serve.service as service_module

    writer, reader = two_services(settings)
    seen = []
    try:
        before = reader.image_bytes(product_id) if product_id == "1001" else None

        def between(name: str) -> None:
            if name == "serve.upsert_committed":
                assert writer.images.has_staged()  # committed, not yet settled: the window this test is about
                seen.append(
                    (reader.product(product_id)["title"], reader.image_bytes(product_id), reader.image_path(product_id))
                )

        monkeypatch.setattr(service_module, "failpoint", between)
        writer.upsert(product_id, "written", {"gender": "Men"}, Image.new("RGB", (40, 40), (10, 200, 30)))
        settled = writer.image_bytes(product_id)
        assert len(seen) == 1
        title, image, path = seen[0]
        assert (title, image) == ("written", settled) and image != before
        assert path.parent.name == "staged"  # read from where the commit left it, before the settle moved it
        assert (reader.product(product_id)["title"], reader.image_bytes(product_id)) == ("written", settled)
        assert reader.image_path(product_id) == writer.images.path(product_id) and not writer.images.has_staged()
    finally:
        writer.close()
        reader.close()


def test_a_staged_image_whose_write_did_not_commit_is_never_shown(settings):
    """Staged, then the writer died before its commit: readers keep the old row with the old image."""
    writer, reader = two_services(settings)
    try:
        old = reader.image_bytes("1001")
        with writer._lock, writer._write_lock():
            before = writer.store.product("1001")
            writer.images.stage("1001", Image.new("RGB", (40, 40), (250, 0, 0)), {"before": before})
            assert reader.image_bytes("1001") == old and reader.image_path("1001") == writer.images.path("1001")
            writer._settle_images = lambda: None  # as if it died here: nothing settles on the way out
        assert reader.image_bytes("1001") == old and reader.product("1001")["title"] == before["title"]
    finally:
        writer.close()
        reader.close()


WRITE_AND_DIE = """
import sys
import torch
from PIL import Image
from vitrine.serve.service import SearchService
from vitrine.serve.settings import ServeSettings

torch.set_num_threads(1)
service = SearchService(ServeSettings(index=sys.argv[1], tag_model="vitrine:small", combiner="sum", runtime="torch"))
service.tag = lambda image, vocabulary=None: {}
service.upsert("new-2", "written", {"gender": "Men"}, Image.new("RGB", (40, 40), (10, 200, 30)))
"""


def test_a_writer_killed_between_commit_and_settle_leaves_its_row_readable_with_its_image(settings):
    from vitrine.serve.service import SearchService

    reader = SearchService(replace(settings, runtime="torch"))
    try:
        killed = subprocess.run(
            [sys.executable, "-c", WRITE_AND_DIE, settings.index],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "VITRINE_FAILPOINTS": "serve.upsert_committed:1"},
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        images = ImageStore(Path(settings.index) / "images")
        assert images.has_staged() and not images.has("new-2")  # committed, never settled
        shown = reader.image_bytes("new-2")
        assert reader.product("new-2")["title"] == "written"
        after = SearchService(replace(settings, runtime="torch"))  # a restart settles it
        try:
            assert not images.has_staged() and after.image_bytes("new-2") == shown == images.path("new-2").read_bytes()
        finally:
            after.close()
    finally:
        reader.close()
