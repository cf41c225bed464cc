"""The HTTP API: every endpoint, every refusal as a JSON 4xx, limits, auth, metrics and the OpenAPI spec."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from tests.conftest import COLOURS, jpeg_bytes
from tests.support.http import AUTH, error_of, upload


def test_text_search_returns_ranked_products_with_metadata_and_image_urls(client):
    response = client.post("/search", data={"text": "a red t-shirt", "k": "5"})
    assert response.status_code == 200
    body = response.json()
    assert body["query"]["kind"] == "text" and len(body["results"]) == 5
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    first = body["results"][0]
    assert first["rank"] == 1 and first["image_url"] == f"/products/{first['id']}/image"
    assert {"gender", "articleType", "baseColour"} <= set(first["attributes"]) and first["title"]
    assert client.get("/search", params={"text": "a red t-shirt", "k": 5}).json()["results"] == body["results"]


def test_image_search_finds_the_same_colour_and_image_url_queries_a_catalog_product(client):
    hits = client.post("/search", data={"k": "3"}, files=upload(jpeg_bytes(COLOURS["Green"]))).json()["results"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3) and hits[0]["attributes"]["baseColour"] == "Green"
    by_url = client.post("/search", data={"image_url": "/products/1003/image", "k": "2"}).json()["results"]
    assert by_url[0]["attributes"]["baseColour"] == "Black"  # 1003 is black; its stored image is its nearest match
    absolute = client.post("/search", data={"image_url": "http://shop.example/products/1003/image", "k": "2"}).json()[
        "results"
    ]
    assert [h["id"] for h in absolute] == [h["id"] for h in by_url]


def test_composed_search_changes_the_ranking_and_filters_restrict_it(client):
    plain = client.post("/search", data={"image_url": "/products/1000/image", "k": "12"}).json()
    composed = client.post(
        "/search", data={"image_url": "/products/1000/image", "modification": "in black", "k": "12"}
    ).json()
    assert composed["query"]["kind"] == "composed" and composed["query"]["modification"] == "in black"
    assert [h["score"] for h in composed["results"]] != [h["score"] for h in plain["results"]]
    women = client.post("/search", data={"text": "a dress", "k": "12", "filter": ["gender=Women"]}).json()["results"]
    assert len(women) == 6 and all(h["attributes"]["gender"] == "Women" for h in women)
    two = client.post(
        "/search", data={"text": "a dress", "k": "12", "filter": ["baseColour=Red", "baseColour=Blue"]}
    ).json()["results"]
    assert {h["attributes"]["baseColour"] for h in two} == {"Red", "Blue"}
    unknown = client.post("/search", data={"text": "a dress", "filter": ["gender=Nobody"]})
    assert (
        unknown.status_code == 400
        and "gender='Nobody'" in unknown.json()["error"]["message"]
        and "'Men'" in unknown.json()["error"]["message"]
    )
    near = client.post("/search", data={"text": "a dress", "filter": ["gender=women"]})
    assert "did you mean 'Women'" in error_of(near, 400, "unknown_filter_value")


@pytest.mark.parametrize(
    "form, status, code, needle",
    [
        ({}, 400, "invalid_query", "give a text query"),
        ({"text": "   "}, 400, "invalid_query", "the text query is empty"),
        ({"modification": "in black"}, 400, "invalid_query", "modification changes an image query"),
        ({"text": "red", "k": "0"}, 400, "invalid_request", "k must be between 1 and 50"),
        ({"text": "red", "k": "51"}, 400, "invalid_request", "k must be between 1 and 50"),
        ({"text": "red", "k": "many"}, 400, "invalid_request", "k:"),
        ({"text": "x" * 101}, 400, "invalid_request", "the limit is 100"),
        ({"text": "red", "filter": "gender"}, 400, "invalid_query", "a filter looks like field=value"),
        ({"text": "red", "filter": "colour=Red"}, 400, "unknown_filter_field", "unknown filter field(s) ['colour']"),
        ({"image_url": "https://elsewhere.example/cat.jpg"}, 400, "invalid_request", "fetches no other URLs"),
        ({"image_url": "/products/nope/image"}, 404, "unknown_product", "no product with id 'nope'"),
    ],
)
def test_bad_search_requests_get_a_clear_json_4xx(client, form, status, code, needle):
    assert needle in error_of(client.post("/search", data=form), status, code)


def test_uploads_over_the_limits_or_not_images_are_refused(client):
    import numpy as np

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 200_000
    assert "over the limit" in error_of(
        client.post("/search", files=upload(buffer.getvalue(), "big.png", "image/png")), 413, "too_large"
    )
    wide = io.BytesIO()
    Image.new("RGB", (2000, 600), "white").save(wide, format="JPEG")
    assert "over the limit of 1000000" in error_of(
        client.post("/search", files=upload(wide.getvalue())), 413, "too_large"
    )
    assert "not an image" in error_of(
        client.post("/search", files=upload(b"%PDF-1.4 not a picture", "doc.pdf", "application/pdf")),
        415,
        "unsupported_media_type",
    )
    truncated = jpeg_bytes()[:200]
    error_of(client.post("/search", files=upload(truncated)), 415, "unsupported_media_type")
    assert "not both" in error_of(
        client.post("/search", data={"text": "red"}, files=upload(jpeg_bytes())), 400, "invalid_request"
    )


def test_streamed_body_without_length_is_cut_off_at_the_limit(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 10_000

    response = client.post("/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert "request body is over the limit" in error_of(response, 413, "too_large")


def test_products_read_write_delete_with_bearer_token(client):
    product = client.get("/products/1002").json()
    assert (
        product["id"] == "1002"
        and product["attributes"]["baseColour"] == "Green"
        and product["image_url"] == "/products/1002/image"
    )
    assert set(product["tags"]) >= {"gender", "baseColour"}  # predicted at indexing time
    image = client.get("/products/1002/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (60, 80)
    assert "no product with id 'missing'" in error_of(client.get("/products/missing"), 404, "unknown_product")
    error_of(client.get("/products/missing/image"), 404, "unknown_product")

    form = {
        "id": "new-1",
        "title": "A new red dress",
        "attributes": json.dumps({"gender": "Women", "baseColour": "Red"}),
    }
    new_image = upload(jpeg_bytes((220, 20, 20), size=(90, 120)))
    assert "Authorization: Bearer" in error_of(
        client.post("/products", data=form, files=new_image), 401, "unauthorized"
    )
    assert "not valid" in error_of(
        client.post("/products", data=form, files=new_image, headers={"Authorization": "Bearer wrong-token"}),
        403,
        "forbidden",
    )
    created = client.post("/products", data=form, files=new_image, headers=AUTH)
    assert created.status_code == 201 and created.json()["created"] is True
    assert created.json()["attributes"] == {"gender": "Women", "baseColour": "Red"} and created.json()["tags"]
    replaced = client.post("/products", data={**form, "title": "Renamed"}, files=new_image, headers=AUTH)
    assert replaced.status_code == 200 and replaced.json()["created"] is False and replaced.json()["title"] == "Renamed"
    assert client.get("/healthz").json()["products"] == 13
    hits = client.post(
        "/search", data={"k": "1", "filter": "gender=Women", "exclude_reference": "false"}, files=new_image
    ).json()["results"]
    assert hits[0]["id"] == "new-1" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)

    assert "reserved" in error_of(
        client.post(
            "/products", data={**form, "attributes": '{"predicted_gender": "Men"}'}, files=new_image, headers=AUTH
        ),
        400,
        "invalid_request",
    )
    assert "JSON object" in error_of(
        client.post("/products", data={**form, "attributes": "[1, 2]"}, files=new_image, headers=AUTH),
        400,
        "invalid_request",
    )
    assert "product id" in error_of(
        client.post("/products", data={**form, "id": "../etc"}, files=new_image, headers=AUTH), 400, "invalid_request"
    )
    assert "give the product image" in error_of(
        client.post("/products", data={"id": "x1"}, headers=AUTH), 400, "invalid_request"
    )
    error_of(client.post("/products", data=form, files=upload(b"nope"), headers=AUTH), 415, "unsupported_media_type")

    error_of(client.delete("/products/new-1"), 401, "unauthorized")
    assert client.delete("/products/new-1", headers=AUTH).status_code == 204
    error_of(client.delete("/products/new-1", headers=AUTH), 404, "unknown_product")
    error_of(client.get("/products/new-1"), 404, "unknown_product")
    assert client.get("/healthz").json()["products"] == 12


def test_writes_are_refused_while_no_token_is_configured_and_reads_can_be_closed(settings):
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app

    app = create_app(replace(settings, write_token=None, read_token="reader-token-1"))
    with TestClient(app) as client:
        assert "writes are disabled" in error_of(client.delete("/products/1000", headers=AUTH), 403, "writes_disabled")
        error_of(client.post("/search", data={"text": "red"}), 401, "unauthorized")
        ok = client.post("/search", data={"text": "red", "k": "1"}, headers={"Authorization": "Bearer reader-token-1"})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 1
        assert client.get("/healthz").status_code == 200
    app.state.service.close()


def test_tag_with_the_shipped_vocabulary_and_with_a_new_attribute(client):
    tags = client.post("/tag", files=upload(jpeg_bytes(COLOURS["Red"]))).json()["tags"]
    assert {"gender", "baseColour", "articleType"} <= set(tags)
    assert set(tags["gender"]) == {"value", "best", "score", "probability"}
    vocabulary = "attributes:\n  pattern:\n    values: [striped, floral, plain]\n"
    custom = client.post("/tag", data={"vocabulary": vocabulary}, files=upload(jpeg_bytes())).json()["tags"]
    assert list(custom) == ["pattern"] and custom["pattern"]["best"] in {"striped", "floral", "plain"}
    assert 0.0 <= custom["pattern"]["probability"] <= 1.0
    assert "at least two values" in error_of(
        client.post("/tag", data={"vocabulary": "pattern: [striped]"}, files=upload(jpeg_bytes())),
        400,
        "invalid_vocabulary",
    )
    assert "not valid YAML" in error_of(
        client.post("/tag", data={"vocabulary": "a: [b"}, files=upload(jpeg_bytes())), 400, "invalid_request"
    )
    assert "image" in error_of(client.post("/tag"), 400, "invalid_request")
    assert "no Content-Type" in error_of(
        client.post("/tag", content=b'{"image_url": "/products/1000/image"}'), 415, "unsupported_media_type"
    )


def test_attributes_health_metrics_and_the_openapi_spec(client):
    from openapi_spec_validator import validate

    fields = client.get("/attributes").json()["fields"]
    assert {"value": "Men", "count": 6} in fields["gender"] and not any(
        name.startswith("predicted_") for name in fields
    )
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["products"] == 12 and health["model"] == "vitrine:small"
    client.post("/search", data={"text": "red"})
    client.post("/search", data={})
    text = client.get("/metrics").text
    assert 'vitrine_http_requests_total{method="POST",route="/search",status="200"} 1.0' in text
    assert 'vitrine_http_requests_total{method="POST",route="/search",status="400"} 1.0' in text
    assert 'vitrine_http_request_duration_seconds_bucket{le="0.5",method="POST",route="/search"}' in text
    assert "vitrine_catalog_products 12.0" in text
    spec = client.get("/openapi.json").json()
    validate(spec)
    assert {
        "/search", "/tag", "/products", "/products/{product_id}", "/products/{product_id}/image", "/healthz",
        "/metrics",
    } <= set(spec["paths"])
    docs = client.get("/docs")
    assert (
        docs.status_code == 200
        and "cdn" not in docs.text.lower()
        and "/static-offline-docs/swagger-ui-bundle.js" in docs.text
    )
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="search-input"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "Not Found" in error_of(client.get("/nothing-here"), 404, "not_found")
