"""The API's contract: `POST /embed`, `GET /products` paging, `POST /products` as JSON, per-item batch answers, and
the error contract of docs/service.md's "Errors" table, one test per row, each asserting the error's code."""

from __future__ import annotations

import base64

import pytest
import torch
from tests.conftest import COLOURS, jpeg_bytes, make_rows
from tests.support.http import AUTH, error_of

ROWS = {row["id"]: row for row in make_rows(12)}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- POST /embed ---------------------------------------------------------------------------------------
def test_embed_returns_unit_vectors_that_match_the_model_and_search(client):
    service = client.app.state.service
    body = client.post(
        "/embed",
        json={
            "texts": ["a red t-shirt", "blue jeans"], "images": [b64(jpeg_bytes(COLOURS["Red"]))],
            "image_urls": ["/products/1003/image"],
        },
    ).json()
    assert body["model"] == "vitrine:small" and body["runtime"] == getattr(service.model, "runtime", "torch")
    assert body["dim"] == service.model.embed_dim and body["errors"] == 0
    vectors = [torch.tensor(item["vector"]) for item in body["texts"] + body["images"] + body["image_urls"]]
    assert len(vectors) == 4 and all(len(v) == body["dim"] and abs(float(v.norm()) - 1) < 1e-4 for v in vectors)
    with torch.no_grad():
        own = torch.nn.functional.normalize(service.model.encode_text(["a red t-shirt"]), dim=-1)[0]
    assert float(vectors[0] @ own) > 0.9999
    # the stored product's image vector is the one the index holds: searching by it finds that product first
    top = client.post(
        "/search", json={"image_url": "/products/1003/image", "exclude_reference": False, "mode": "vector", "k": 1}
    ).json()
    assert top["results"][0]["id"] == "1003" and top["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    form = client.post(
        "/embed",
        data={"text": ["a red t-shirt"]},
        files=[
            ("image", ("a.jpg", jpeg_bytes(COLOURS["Red"]), "image/jpeg")),
            ("image", ("b.jpg", jpeg_bytes(COLOURS["Blue"]), "image/jpeg")),
        ],
    ).json()
    assert len(form["texts"]) == 1 and len(form["images"]) == 2
    assert torch.allclose(torch.tensor(form["texts"][0]["vector"]), vectors[0], atol=1e-5)
    assert torch.allclose(torch.tensor(form["images"][0]["vector"]), vectors[2], atol=1e-4)
    assert float(torch.tensor(form["images"][1]["vector"]) @ vectors[2]) < 0.9999  # the blue one is another vector


def test_embed_answers_each_input_in_place_or_fails_whole_on_request(client):
    body = client.post(
        "/embed", json={"texts": ["red", "   "], "images": ["not base64!"], "image_urls": ["/products/nope/image"]}
    ).json()
    assert body["errors"] == 3 and "vector" in body["texts"][0]
    assert body["texts"][1]["error"] == {
        "status": 400, "code": "invalid_request", "message": "texts[1]: the text is empty",
    }
    assert body["images"][0]["error"]["status"] == 400 and "images[0]" in body["images"][0]["error"]["message"]
    assert body["images"][0]["error"]["code"] == "invalid_request"
    assert body["image_urls"][0]["error"]["status"] == 404
    assert body["image_urls"][0]["error"]["code"] == "unknown_product"
    assert "texts[1]" in error_of(
        client.post("/embed", json={"texts": ["red", ""], "on_error": "fail"}), 400, "invalid_request"
    )
    assert "1 to 32 inputs" in error_of(
        client.post("/embed", json={"texts": ["x"] * 20, "image_urls": ["/products/1000/image"] * 13}),
        400,
        "invalid_request",
    )
    assert "got 0" in error_of(client.post("/embed", json={}), 400, "invalid_request")


# ---- GET /products ------------------------------------------------------------------------------------
def test_products_page_through_the_catalog_with_filters(client):
    first = client.get("/products", params={"limit": 5}).json()
    assert first["total"] == 12 and first["offset"] == 0 and first["limit"] == 5
    assert [p["id"] for p in first["products"]] == sorted(ROWS)[:5]
    assert (
        first["products"][0]["image_url"] == "/products/1000/image"
        and first["products"][0]["title"] == ROWS["1000"]["title"]
    )
    pages = [client.get("/products", params={"offset": o, "limit": 5}).json()["products"] for o in (0, 5, 10)]
    assert [p["id"] for page in pages for p in page] == sorted(ROWS)
    women = client.get("/products", params={"filter": "gender=Women", "limit": 100}).json()
    assert women["total"] == 6 and {p["attributes"]["gender"] for p in women["products"]} == {"Women"}
    assert client.get("/products", params={"offset": 50}).json() == {
        "total": 12, "offset": 50, "limit": 50, "products": [],
    }
    assert "limit" in error_of(client.get("/products", params={"limit": 0}), 400, "invalid_request")
    assert "gender='Nobody'" in error_of(
        client.get("/products", params={"filter": "gender=Nobody"}), 400, "unknown_filter_value"
    )


# ---- POST /products as JSON ---------------------------------------------------------------------------
def test_products_are_added_as_json_with_base64_or_a_stored_image(client):
    created = client.post(
        "/products",
        json={
            "id": "json-1", "title": "Green Dress", "attributes": {"gender": "Women", "year": 2013},
            "image": b64(jpeg_bytes(COLOURS["Green"])),
        },
        headers=AUTH,
    )
    assert created.status_code == 201 and created.json()["created"] is True
    assert created.json()["attributes"]["year"] == "2013" and created.json()["image_url"] == "/products/json-1/image"
    copied = client.post("/products", json={"id": "json-2", "image_url": "/products/1003/image"}, headers=AUTH)
    assert copied.status_code == 201
    both = client.post("/embed", json={"image_urls": ["/products/json-2/image", "/products/1003/image"]}).json()[
        "image_urls"
    ]
    assert (
        float(torch.tensor(both[0]["vector"]) @ torch.tensor(both[1]["vector"])) > 0.99
    )  # the same picture, stored again as JPEG
    again = client.post(
        "/products", json={"id": "json-1", "title": "Renamed", "image": b64(jpeg_bytes(COLOURS["Green"]))}, headers=AUTH
    )
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["title"] == "Renamed"
    assert client.get("/healthz").json()["products"] == 14


# ---- per-item batch answers ----------------------------------------------------------------------------
def test_one_bad_query_does_not_sink_the_batch(client):
    queries = [
        {"text": "red"}, {"text": "blue", "k": 999}, {"text": "a dress", "filters": {"gender": "Nobody"}},
        {"image_url": "/products/missing/image"}, {"text": "jeans", "k": 2},
    ]
    body = client.post("/search/batch", json={"queries": queries}).json()
    assert body["errors"] == 3 and len(body["results"]) == 5
    assert body["results"][0]["query"]["text"] == "red" and len(body["results"][4]["results"]) == 2
    assert body["results"][1]["error"]["status"] == 400 and body["results"][1]["error"]["message"].startswith(
        "queries[1]: k must be"
    )
    assert body["results"][2]["error"]["status"] == 400 and "gender='Nobody'" in body["results"][2]["error"]["message"]
    assert body["results"][3]["error"]["status"] == 404
    alone = client.post("/search", json={"text": "jeans", "k": 2}).json()["results"]
    assert [h["id"] for h in body["results"][4]["results"]] == [h["id"] for h in alone]
    assert "queries[1]" in error_of(
        client.post("/search/batch", json={"queries": queries, "on_error": "fail"}), 400, "invalid_request"
    )


# ---- the error contract: one test per row of docs/service.md's table -----------------------------------------
def test_contract_malformed_json_is_400(client):
    assert "not valid JSON" in error_of(
        client.post("/search", content=b"{text:", headers={"Content-Type": "application/json"}), 400, "invalid_request"
    )
    assert "JSON object" in error_of(
        client.post("/embed", content=b"[1]", headers={"Content-Type": "application/json"}), 400, "invalid_request"
    )


@pytest.mark.parametrize(
    "call, code",
    [
        (lambda c: c.post("/search", json={"text": "red", "k": "many"}), "invalid_request"),  # wrong type, JSON
        (lambda c: c.post("/search", data={"text": "red", "k": "many"}), "invalid_request"),  # wrong type, form
        (
            lambda c: c.get("/search", params={"text": "red", "k": "many"}),
            "invalid_request",
        ),  # wrong type, query string
        (lambda c: c.get("/attributes", params={"per_field": "x"}), "invalid_request"),
        (lambda c: c.post("/search", json={"text": "red", "k": 0}), "invalid_request"),  # out of range
        (lambda c: c.post("/search", json={"text": "red", "typo": 1}), "invalid_request"),  # unknown field
        (
            lambda c: c.post("/search", json={"text": "red", "image_url": "/products/1000/image"}),
            "invalid_query",
        ),  # conflicting fields
        (lambda c: c.post("/products", json={"title": "no id"}, headers=AUTH), "invalid_request"),  # missing field
    ],
)
def test_contract_invalid_fields_are_400_in_every_body_form(client, call, code):
    error_of(call(client), 400, code)


def test_contract_unknown_filter_values_and_attributes_are_400(client):
    assert "did you mean 'Women'" in error_of(
        client.post("/search", json={"text": "dress", "filters": {"gender": "women"}}), 400, "unknown_filter_value"
    )
    refused = client.post(
        "/products", json={"id": "x-1", "attributes": {"colour": "Red"}, "image": b64(jpeg_bytes())}, headers=AUTH
    )
    message = error_of(refused, 400, "unknown_attribute")
    assert "['colour'] are not in this catalog" in message and "baseColour" in message and "new_attributes" in message
    assert client.get("/products/x-1").status_code == 404  # nothing stored
    added = client.post(
        "/products",
        json={"id": "x-1", "attributes": {"colour": "Red"}, "image": b64(jpeg_bytes()), "new_attributes": True},
        headers=AUTH,
    )
    assert added.status_code == 201 and added.json()["attributes"]["colour"] == "Red"
    assert (
        client.post("/search", json={"text": "red", "filters": {"colour": "Red"}}).json()["results"][0]["id"] == "x-1"
    )


def test_contract_missing_or_wrong_tokens_are_401_and_403(client):
    error_of(client.post("/products", json={"id": "a", "image": b64(jpeg_bytes())}), 401, "unauthorized")
    error_of(
        client.post(
            "/products", json={"id": "a", "image": b64(jpeg_bytes())}, headers={"Authorization": "Bearer wrong"}
        ),
        403,
        "forbidden",
    )


def test_contract_unknown_products_are_404(client):
    error_of(client.get("/products/nope"), 404, "unknown_product")
    error_of(client.post("/search", json={"image_url": "/products/nope/image"}), 404, "unknown_product")


def test_contract_over_a_limit_is_413(client):
    error_of(client.post("/search", files=[("image", ("big.jpg", b"\xff" * 200_001, "image/jpeg"))]), 413, "too_large")
    error_of(
        client.post(
            "/embed", files=[("image", ("big.jpg", b"\xff" * 200_001, "image/jpeg"))], data={"on_error": "fail"}
        ),
        413,
        "too_large",
    )
    in_place = client.post("/embed", files=[("image", ("big.jpg", b"\xff" * 200_001, "image/jpeg"))]).json()
    assert in_place["images"][0]["error"]["status"] == 413


def test_contract_content_type_missing_or_other_is_415(client):
    assert "no Content-Type" in error_of(
        client.post("/search", content=b'{"text": "red"}'), 415, "unsupported_media_type"
    )
    assert "not text/plain" in error_of(
        client.post("/products", content=b"id=1", headers={**AUTH, "Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert "not an image" in error_of(
        client.post("/products", json={"id": "p-1", "image": b64(b"%PDF not a picture")}, headers=AUTH),
        415,
        "unsupported_media_type",
    )


def test_contract_spec_documents_400_and_no_422(client):
    spec = client.get("/openapi.json").json()
    operations = [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    assert not [(p, m) for p, m, op in operations if "422" in op["responses"]]
    assert (
        {"/embed", "/products"} <= set(spec["paths"])
        and "get" in spec["paths"]["/products"]
        and "post" in spec["paths"]["/products"]
    )
    assert set(spec["paths"]["/products"]["post"]["requestBody"]["content"]) == {
        "application/json", "multipart/form-data",
    }
    assert set(spec["paths"]["/embed"]["post"]["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    for path, method, op in operations:
        if op.get("parameters") or op.get("requestBody"):
            assert "400" in op["responses"], (path, method)


def test_contract_a_store_server_down_or_restarting_is_503_never_500(client, monkeypatch):
    """A Milvus server down or restarting reaches the store as StoreUnavailable: a JSON 503 on every route that needs
    the
    store, documented in the spec; the same requests succeed once the store answers again (no restart)."""
    from vitrine.index.store import StoreUnavailable

    store = client.app.state.service.store
    message = (
        "the Milvus server at http://milvus:19530 is not reachable (connection refused); "
        "vitrine reconnects by itself: retry shortly"
    )

    def down(*args, **kwargs):
        raise StoreUnavailable(message)

    monkeypatch.setattr(store, "refresh", down)
    for response in (
        client.post("/search", data={"text": "red"}), client.get("/search", params={"text": "red"}),
        client.get("/products/1001"), client.get("/products/1001/image"), client.get("/products"),
        client.get("/healthz"), client.delete("/products/1001", headers=AUTH),
    ):
        assert error_of(response, 503, "unavailable") == message and response.headers["retry-after"] == "5"
    spec = client.get("/openapi.json").json()
    for path, method in (
        ("/search", "post"), ("/products", "post"), ("/products/{product_id}", "delete"), ("/healthz", "get"),
    ):
        assert "503" in spec["paths"][path][method]["responses"], (path, method)
    monkeypatch.undo()
    assert (
        client.post("/search", data={"text": "red"}).status_code == 200
        and client.get("/products/1001").status_code == 200
    )
