"""Writes and reads stay consistent under concurrency, across worker processes, and across restarts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace

import httpx
import pytest
from PIL import Image
from tests.conftest import jpeg_bytes
from tests.support.http import AUTH, TOKEN, free_port

from vitrine.errors import InvalidRequest, NotFound
from vitrine.serve.server import wait_until_ready
from vitrine.serve.service import Query, SearchService


def picture(i: int) -> Image.Image:
    """A distinct image per i (colour from the index)."""
    return Image.new("RGB", (48, 64), ((i * 53) % 256, (i * 97) % 256, (i * 31) % 256))


def test_concurrent_writes_and_reads_in_one_process_lose_nothing(settings):
    service = SearchService(settings)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        try:
            for j in range(4):
                service.upsert(f"w{w}-{j}", f"product {w}-{j}", {"gender": "Women"}, picture(w * 10 + j))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                hits = service.search(Query(text="a product", k=5, filters={"gender": ["Women"]}))
                assert all(h.metadata["gender"] == "Women" for h in hits)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    stats = service.stats()
    assert stats["products"] == stats["vectors"] == 12 + 16
    for w in range(4):
        hit = service.search(Query(image=picture(w * 10 + 3), k=1, exclude_reference=False))[0]
        assert hit.id == f"w{w}-3" and hit.score == pytest.approx(1.0, abs=1e-3)
    service.close()


def test_two_workers_on_one_index_see_each_others_writes(settings):
    first, second = SearchService(settings), SearchService(settings)
    first.upsert("a", "from the first worker", {}, picture(1))
    second.upsert("b", "from the second worker", {}, picture(2))  # must not drop "a": it rereads before writing
    first.upsert("c", "first again", {}, picture(3))
    for service in (first, second):
        assert service.stats()["products"] == 15
        assert {service.product(i)["title"] for i in "abc"} == {
            "from the first worker", "from the second worker", "first again",
        }
        assert service.search(Query(image=picture(2), k=1, exclude_reference=False))[0].id == "b"
    second.delete("a")
    with pytest.raises(NotFound):
        first.product("a")
    assert "a" not in {h.id for h in first.search(Query(image=picture(1), k=15))}
    with pytest.raises(InvalidRequest, match="product id"):
        first.upsert("", None, {}, picture(4))
    first.close()
    second.close()


def test_products_survive_a_restart_and_deleted_ones_stay_deleted(settings):
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app

    app = create_app(settings)
    with TestClient(app) as client:
        assert (
            client.post(
                "/products",
                data={"id": "kept", "title": "Kept"},
                files={"image": ("k.jpg", jpeg_bytes((1, 2, 250)), "image/jpeg")},
                headers=AUTH,
            ).status_code
            == 201
        )
        assert client.delete("/products/1001", headers=AUTH).status_code == 204
        stored = client.get("/products/kept/image").content
    app.state.service.close()
    again = create_app(settings)
    with TestClient(again) as client:
        assert client.get("/products/kept").json()["title"] == "Kept"
        assert client.get("/products/kept/image").content == stored
        assert client.get("/products/1001").status_code == 404
        ids = {h["id"] for h in client.post("/search", data={"text": "anything", "k": "50"}).json()["results"]}
        assert "kept" in ids and "1001" not in ids and len(ids) == 12
    again.state.service.close()


def _start(index: str, port: int, workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, "VITRINE_WRITE_TOKEN": TOKEN}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [
        sys.executable, "-m", "vitrine", "serve", "--index", index, "--port", str(port), "--tag-model", "vitrine:small",
        "--combiner", "sum", "--log-level", "warning", "--workers", str(workers),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, timeout=120)
    except RuntimeError:
        process.kill()
        raise
    return process


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def test_a_real_server_process_restart_keeps_writes(settings):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(settings.index, port)
    try:
        added = httpx.post(
            f"{base}/products",
            data={"id": "live-1", "title": "Live"},
            headers=AUTH,
            files={"image": ("l.jpg", jpeg_bytes((250, 200, 0)), "image/jpeg")},
            timeout=60,
        )
        assert added.status_code == 201, added.text
        assert httpx.delete(f"{base}/products/1004", headers=AUTH, timeout=60).status_code == 204
    finally:
        _stop(server)
    server = _start(settings.index, port)
    try:
        assert httpx.get(f"{base}/products/live-1", timeout=60).json()["title"] == "Live"
        assert httpx.get(f"{base}/products/1004", timeout=60).status_code == 404
        assert httpx.get(f"{base}/healthz", timeout=60).json()["products"] == 12
    finally:
        _stop(server)


def test_two_worker_server_reports_metrics_for_the_whole_server_and_shares_writes(settings):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(settings.index, port, workers=2)
    try:
        with httpx.Client(base_url=base, timeout=60) as client:  # one connection: every request on one worker
            for _ in range(6):
                assert client.get("/search", params={"text": "a red shirt", "k": 3}).status_code == 200
        for _ in range(6):  # fresh connections spread over both workers; each answers for the whole server
            text = httpx.get(f"{base}/metrics", timeout=60, headers={"Connection": "close"}).text
            assert 'vitrine_http_requests_total{method="GET",route="/search",status="200"} 6.0' in text
        added = httpx.post(
            f"{base}/products",
            data={"id": "w2", "title": "Two workers"},
            headers=AUTH,
            timeout=60,
            files={"image": ("w.jpg", jpeg_bytes((9, 99, 199)), "image/jpeg")},
        )
        assert added.status_code == 201
        for _ in range(6):  # whichever worker answers has the new product
            assert httpx.get(f"{base}/products/w2", timeout=60, headers={"Connection": "close"}).status_code == 200
    finally:
        _stop(server)


def test_settings_validate_and_come_from_the_environment(tmp_path):
    from vitrine.serve.settings import ServeSettings, load_settings

    with pytest.raises(ValueError, match="max_k must be >= 1"):
        ServeSettings(max_k=0)
    with pytest.raises(ValueError, match="at least 8 characters"):
        ServeSettings(write_token="short")
    config = tmp_path / "serve.json"
    config.write_text('{"index": "somewhere", "max_k": 20}')
    settings = load_settings(
        str(config), environ={"VITRINE_MAX_K": "30", "VITRINE_WRITE_TOKEN": "from-the-env"}, index="cli-wins"
    )
    assert (settings.index, settings.max_k, settings.write_token) == ("cli-wins", 30, "from-the-env")
    assert (
        settings.public()["write_token"] == "set"
        and replace(settings, write_token=None).public()["write_token"] is None
    )
    with pytest.raises(ValueError, match="VITRINE_MAX_K must be a whole number, got 'many'"):
        load_settings(None, environ={"VITRINE_MAX_K": "many"})
    config.write_text('{"colour": 1}')
    with pytest.raises(ValueError, match=r"serve.json: unknown keys \[.colour.\]"):
        load_settings(str(config), environ={})


def test_serve_command_refuses_clearly_without_a_catalog_or_index(tmp_path, capsys):
    from vitrine.cli import main

    assert main(["serve"]) == 2
    assert "give --catalog PATH" in capsys.readouterr().err
    assert main(["serve", "--index", str(tmp_path / "none")]) == 2
    assert "no vitrine index in" in capsys.readouterr().err


def test_the_multi_worker_listener_is_marked_tcp_so_connections_get_nodelay():
    import asyncio

    from vitrine.serve.server import tcp_listener

    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # how uvicorn binds for --workers N: protocol 0
    raw.bind(("127.0.0.1", 0))
    raw.listen()
    listener = tcp_listener(raw)
    assert listener.proto == socket.IPPROTO_TCP
    seen = {}

    async def main() -> None:
        async def handle(reader, writer):
            seen["nodelay"] = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        while "nodelay" not in seen:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 10))
    assert seen["nodelay"] == 1
