"""Search answers are orjson bytes, every route is timed by the plain ASGI middleware, `/healthz` names the HTTP
stack, and `--workers auto` counts cores."""

from __future__ import annotations

import io
import os
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vitrine.serve.app import create_app
from vitrine.serve.server import server_stack
from vitrine.serve.settings import ServeSettings, auto_workers, load_settings


def answers(settings: ServeSettings) -> tuple[list, dict, str]:
    app = create_app(settings)
    picture = io.BytesIO()
    Image.new("RGB", (60, 80), (200, 30, 30)).save(picture, format="JPEG")
    with TestClient(app) as client:
        responses = [
            client.post("/search", json={"text": "red t-shirt", "k": 5}),
            client.post("/search", data={"text": "blue jeans", "k": "3", "filter": "gender=Men"}),
            client.get("/search", params={"text": "a black watch", "k": 4}),
            client.post(
                "/search", data={"modification": "in blue", "k": "3"},
                files={"image": ("q.jpg", picture.getvalue(), "image/jpeg")},
            ),
            client.post(
                "/search/batch", json={"queries": [{"text": "green dress", "k": 2}, {"text": "white shirt", "k": 2}]}
            ),
            client.post("/search", json={"text": "red", "k": 0}),  # an error answers the same way on both paths
        ]
        health = client.get("/healthz").json()
        metrics = client.get("/metrics").text
    app.state.service.close()
    bodies = []
    for response in responses:
        body = response.json()
        body.pop("took_ms", None)  # timings differ from run to run; everything else must not
        for result in body.get("results", []):
            result.pop("took_ms", None)
        bodies.append((response.status_code, response.headers["content-type"], body))
    return bodies, health, metrics


def test_search_answers_are_json_and_every_route_is_timed(settings):
    bodies, health, metrics = answers(settings)
    assert [status for status, _, _ in bodies] == [200, 200, 200, 200, 200, 400]
    assert all(content_type == "application/json" for _, content_type, _ in bodies)
    assert health["server"] == server_stack()
    assert 'vitrine_http_requests_total{method="POST",route="/search",status="200"} 3.0' in metrics
    assert 'vitrine_http_requests_total{method="POST",route="/search",status="400"} 1.0' in metrics
    assert 'vitrine_http_requests_total{method="GET",route="/search",status="200"} 1.0' in metrics


def test_the_fast_stack_is_installed_and_chosen_by_default():
    pytest.importorskip("uvloop", reason="uvicorn[standard] is a dependency: setup installs it")
    assert server_stack() == {"server": "uvicorn", "http": "httptools", "loop": "uvloop"}


def test_workers_auto_is_one_per_core_and_one_for_milvus_lite():
    cores = len(os.sched_getaffinity(0))
    assert auto_workers("runs/serve/index") == cores
    assert load_settings(environ={}, workers="auto").workers == cores
    assert load_settings(environ={"VITRINE_WORKERS": "auto"}).workers == cores
    assert load_settings(environ={}, index="milvus:catalog.db", workers="auto").workers == 1
    from vitrine.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--index", "x", "--workers", "many"])


def test_a_large_search_upload_decodes_at_draft_size_and_embeds_alike(settings, small_model):
    """A phone-size JPEG is decoded by libjpeg at a DCT scale that keeps >= 4x the model input; a small one in full."""
    import numpy as np

    from vitrine.data.images import decode_image
    from vitrine.serve.mapping import DRAFT_MARGIN

    yy, xx = np.mgrid[0:3200, 0:2400]
    pixels = np.stack([(xx * 255 // 2400), (yy * 255 // 3200), ((xx + yy) % 400 < 200) * 200], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    transform = small_model.image_transform
    draft = lambda w, h: transform.source_size_for(w, h, DRAFT_MARGIN)  # noqa: E731
    drafted, full = decode_image(buffer.getvalue(), draft=draft), decode_image(buffer.getvalue())
    assert (
        full.size == (2400, 3200)
        and drafted.size[0] < 2400
        and min(drafted.size) >= DRAFT_MARGIN * transform.size * 2400 / 3200 - 1
    )
    import torch

    with torch.no_grad():
        a, b = small_model.encode_image(small_model.preprocess([drafted, full]))
    assert float(a @ b) >= 0.999
    small = io.BytesIO()
    Image.fromarray(pixels[:320, :240]).save(small, format="JPEG", quality=92)
    assert decode_image(small.getvalue(), draft=draft).size == (240, 320)  # under 4x the input: decoded in full
    # the service answers a large upload
    app = create_app(replace(settings, max_upload_bytes=10 * 2**20, max_pixels=40_000_000))
    with TestClient(app) as client:
        response = client.post(
            "/search", data={"k": "3"}, files={"image": ("big.jpg", buffer.getvalue(), "image/jpeg")}
        )
    app.state.service.close()
    assert response.status_code == 200 and len(response.json()["results"]) == 3


def test_serve_caps_malloc_arenas_for_itself_and_its_workers_and_keeps_an_operators_setting(monkeypatch):
    import os
    import platform

    from vitrine.serve.server import MALLOC_ARENAS, limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    capped = limit_malloc_arenas()
    assert os.environ["MALLOC_ARENA_MAX"] == str(MALLOC_ARENAS)  # inherited by the worker processes uvicorn spawns
    assert capped == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    limit_malloc_arenas()
    assert os.environ["MALLOC_ARENA_MAX"] == "4"


def test_a_client_that_hangs_up_mid_body_is_no_server_error(settings, caplog):
    """A load generator stopping, or a closed tab, while a form is uploading: no traceback in the log, no 500."""
    import asyncio
    import logging

    from vitrine.serve.app import create_app

    app = create_app(settings)
    boundary = "vitrineboundary"
    first = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\nred dress\r\n--{boundary}\r\n'
        f'Content-Disposition: form-data; name="k"\r\n\r\n'
    ).encode()
    messages = iter([{"type": "http.request", "body": first, "more_body": True}, {"type": "http.disconnect"}])
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/search",
        "raw_path": b"/search",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()), (b"host", b"test")],
    }
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    with caplog.at_level(logging.DEBUG, logger="vitrine.serve"):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("client disconnected" in r.getMessage() for r in caplog.records)
