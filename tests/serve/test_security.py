"""Security review of the service, a test per point: paths, uploads by content, limits, tokens, CORS, error texts."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image
from tests.conftest import jpeg_bytes
from tests.support.http import AUTH, TOKEN, error_of, upload


def served(settings):
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app

    return TestClient(create_app(settings), raise_server_exceptions=False)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- product ids and file names never escape the index directory ----------------------------------------
@hypothesis_settings(max_examples=300, derandomize=True, database=None)
@given(product_id=st.text(min_size=1, max_size=200))
def test_any_product_id_maps_to_a_file_inside_the_images_directory(tmp_path_factory, product_id):
    from vitrine.serve.images import ImageStore

    root = tmp_path_factory.getbasetemp() / "images-property"
    store = ImageStore(root)
    path = store.path(product_id)
    assert path.parent == root and path.name.endswith(".jpg") and len(path.name) == 44  # sha1 hex + .jpg


@pytest.mark.parametrize(
    "product_id", ["../escape", "..", "a/b", "/etc/passwd", "..\\x", ".hidden", "x" * 129, "a b", "%2e%2e", "é"]
)
def test_unsafe_product_ids_are_refused_on_write(client, product_id):
    form = {"id": product_id, "title": "t"}
    assert "product id" in error_of(
        client.post("/products", data=form, files=upload(jpeg_bytes()), headers=AUTH), 400, "invalid_request"
    )


def test_traversal_in_urls_and_upload_file_names_touches_nothing_outside(client, settings, tmp_path):
    before = tree(tmp_path)
    for url in ("/products/..%2F..%2Fetc%2Fpasswd/image", "/products/%2e%2e/image", "/products/..%2Findex/image"):
        assert client.get(url).status_code == 404
    created = client.post(
        "/products", data={"id": "safe-1", "title": "t"}, files=upload(jpeg_bytes(), name="../../../evil.jpg"),
        headers=AUTH,
    )
    assert created.status_code == 201
    added = tree(tmp_path) - before
    assert all(p.startswith("index/") for p in added) and not any("evil" in p for p in added), added
    assert not (tmp_path.parent / "evil.jpg").exists()


# ---- uploads are judged by their bytes, not their declared type ----------------------------------------
def test_uploads_are_checked_by_content_not_declared_type(client):
    png = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(png, format="PNG")
    assert client.post("/search", files=upload(png.getvalue(), "red.txt", "text/plain")).status_code == 200
    html = b"<html><script>alert(1)</script></html>"
    assert "not an image" in error_of(
        client.post("/search", files=upload(html, "x.jpg", "image/jpeg")), 415, "unsupported_media_type"
    )
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert "not an image" in error_of(
        client.post("/products", data={"id": "svg-1"}, files=upload(svg, "x.svg", "image/svg+xml"), headers=AUTH),
        415,
        "unsupported_media_type",
    )
    assert client.get("/products/svg-1").status_code == 404  # nothing stored


# ---- request bodies and multipart parts have limits ----------------------------------------------------
def test_forms_have_limits_on_fields_files_and_part_size(client):
    many_fields = {"filter": [f"gender=Men{i}" for i in range(100)]}
    assert "Too many fields" in error_of(
        client.post("/search", data=many_fields, files=upload(jpeg_bytes())), 400, "invalid_request"
    )
    two_files = [("image", ("a.jpg", jpeg_bytes(), "image/jpeg")), ("image", ("b.jpg", jpeg_bytes(), "image/jpeg"))]
    assert "Too many files" in error_of(client.post("/search", files=two_files), 400, "invalid_request")
    long_vocabulary = "pattern: [" + "a" * 70_000 + ", b]"
    assert "Part exceeded maximum size" in error_of(
        client.post("/tag", data={"vocabulary": long_vocabulary}, files=upload(jpeg_bytes())), 400, "invalid_request"
    )
    huge_json = json.dumps({"text": "x" * 400_000}).encode()  # over (200,000 * 4/3) + 64 KiB
    assert "request body is over the limit" in error_of(
        client.post("/search", content=huge_json, headers={"Content-Type": "application/json"}), 413, "too_large"
    )


# ---- tokens rotate through a token file without a restart ----------------------------------------------
def test_tokens_rotate_through_the_token_file_without_a_restart(settings, tmp_path, caplog):
    token_file = tmp_path / "tokens.json"
    token_file.write_text(json.dumps({"write": ["old-write-token"], "read": []}))
    form = {"id": "rot-1", "title": "t"}
    with served(replace(settings, write_token=None, token_file=str(token_file))) as client:

        def write(token: str) -> int:
            return client.post(
                "/products", data=form, files=upload(jpeg_bytes()), headers={"Authorization": f"Bearer {token}"}
            ).status_code

        assert write("old-write-token") == 201
        token_file.write_text(json.dumps({"write": ["old-write-token", "new-write-token"]}))  # both during the switch
        assert write("new-write-token") == 200 and write("old-write-token") == 200
        token_file.write_text(json.dumps({"write": "new-write-token", "read": ["reader-token-9"]}))
        os.utime(token_file, ns=(1, 1))  # a different stamp even on a coarse clock
        assert write("old-write-token") == 403 and write("new-write-token") == 200
        assert client.get("/products/rot-1").status_code == 401  # reads closed by the file too
        assert client.get("/products/rot-1", headers={"Authorization": "Bearer reader-token-9"}).status_code == 200
        token_file.write_text("write: [short]")  # a bad edit: logged, the tokens before stay in force
        os.utime(token_file, ns=(2, 2))
        assert write("new-write-token") == 200
        assert "shorter than 8 characters" in caplog.text and "keeping the tokens read before" in caplog.text
        client.app.state.service.close()


def test_a_bad_token_file_stops_the_start(settings, tmp_path):
    from vitrine.serve.tokens import read_token_file

    bad = tmp_path / "tokens.yaml"
    for text, needle in [
        ("[1, 2]", "must be an object"), ("write: 12345678", "token or a list"),
        ("admin: [abcdefghij]", "must be an object"), ("write: [abc]", "shorter than 8"),
        ("write: [a", "cannot be read"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=needle):
            read_token_file(bad)
    with pytest.raises(ValueError, match="tokens.yaml"):
        served(replace(settings, token_file=str(bad)))


# ---- CORS is off unless configured -----------------------------------------------------------------------
def test_cors_is_off_by_default_and_configurable(settings):
    preflight = {
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with served(settings) as client:
        assert (
            "access-control-allow-origin"
            not in client.get("/healthz", headers={"Origin": "https://shop.example"}).headers
        )
        assert "access-control-allow-origin" not in client.options("/search", headers=preflight).headers
        client.app.state.service.close()
    with served(replace(settings, cors_origins="https://shop.example, https://admin.example")) as client:
        allowed = client.options("/search", headers=preflight)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://shop.example"
        assert (
            client.get("/healthz", headers={"Origin": "https://admin.example"}).headers["access-control-allow-origin"]
            == "https://admin.example"
        )
        assert (
            "access-control-allow-origin"
            not in client.get("/healthz", headers={"Origin": "https://evil.example"}).headers
        )
        client.app.state.service.close()


# ---- errors never echo secrets or server paths -----------------------------------------------------------
def test_server_errors_never_echo_secrets_or_paths(settings, monkeypatch):
    with served(settings) as client:
        service = client.app.state.service

        def leak(*args, **kwargs):
            raise RuntimeError(f"failed reading {settings.index}/vectors.faiss with token {TOKEN}")

        monkeypatch.setattr(service, "rank", leak)  # what the search routes call
        monkeypatch.setattr(service, "upsert", leak)
        responses = [
            client.post("/search", json={"text": "red"}),
            client.post("/search", data={"text": "red"}),
            client.post("/products", data={"id": "p-1"}, files=upload(jpeg_bytes()), headers=AUTH),
        ]
        for response in responses:
            assert "internal error" in error_of(response, 500, "internal")
            assert (
                settings.index not in response.text
                and TOKEN not in response.text
                and "vectors.faiss" not in response.text
            )
        service.images.path("1000").unlink()  # stored image removed under the service: a 404 without the path
        missing = client.get("/products/1000/image")
        assert missing.status_code == 404 and settings.index not in missing.text
        # a delete between the service's check and the read (another worker's DELETE): still a 404, not a 500
        monkeypatch.setattr(service, "image_path", lambda product_id: service.images.path("1000"))
        raced = client.get("/products/1001/image")
        assert raced.status_code == 404 and settings.index not in raced.text
        health = client.get("/healthz").text
        assert settings.index not in health and TOKEN not in health
        service.close()
