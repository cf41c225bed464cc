"""The request-to-query mapping is a plain module: bodies become checked Queries without a server or a model."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest
from PIL import Image
from tests.conftest import jpeg_bytes

from vitrine.data.transforms import ImageTransform
from vitrine.errors import VitrineError
from vitrine.serve.bodies import SearchForm, SearchJSON
from vitrine.serve.mapping import MAX_OFFSET, RequestMapper
from vitrine.serve.settings import ServeSettings


@pytest.fixture
def mapper() -> RequestMapper:
    catalog = {"1000": Image.new("RGB", (60, 80), (200, 30, 30))}
    service = SimpleNamespace(
        model=SimpleNamespace(image_transform=ImageTransform()), product_image=lambda item: catalog[item]
    )
    return RequestMapper(ServeSettings(index="unused", max_k=50), service)


def test_a_json_body_becomes_a_query_with_its_options_and_filters(mapper):
    query = mapper.from_body(
        SearchJSON(text="  red dress ", k=5, filters={"gender": ["Women", " "]}, mode="lexical", offset=3)
    )
    assert (query.text, query.k, dict(query.filters), query.mode, query.offset, query.kind) == (
        "red dress", 5, {"gender": ["Women"]}, "lexical", 3, "text",
    )
    form = mapper.from_body(SearchForm(text="red dress", k=5, filter=["gender=Women"]))
    assert dict(form.filters) == {"gender": ["Women"]} and form.text == query.text


def test_images_come_from_an_upload_or_a_catalog_url_and_name_their_reference(mapper):
    uploaded = mapper.from_body(SearchJSON(image=base64.b64encode(jpeg_bytes()).decode(), modification="in blue"))
    assert uploaded.kind == "composed" and uploaded.reference_id is None and uploaded.image.size == (60, 80)
    by_url = mapper.from_body(SearchJSON(image_url="/products/1000/image"))
    assert by_url.kind == "image" and by_url.reference_id == "1000"


@pytest.mark.parametrize(
    "body, message",
    [
        (
            SearchJSON(text="red", image="not even base64"),
            "queries[2]: give text or an image, not both",
        ),  # before decoding
        (SearchJSON(text="   "), "queries[2]: the text query is empty"),
        (SearchJSON(modification="in blue"), "queries[2]: a modification changes an image query: give an image too"),
        (SearchJSON(text="red", k=51), "queries[2]: k must be between 1 and 50, got 51"),
        (SearchJSON(text="red", offset=MAX_OFFSET + 1), f"queries[2]: offset must be between 0 and {MAX_OFFSET}"),
        (
            SearchJSON(text="red", filters={"gender": [" "]}),
            "queries[2]: filters: each field needs a name and at least one non-empty value",
        ),
        (
            SearchJSON(image="x", image_url="/products/1000/image"),
            "queries[2]: give an image upload or an image_url, not both",
        ),
    ],
)
def test_refusals_name_the_query_s_place_and_use_the_words_every_surface_uses(mapper, body, message):
    with pytest.raises(VitrineError) as refused:
        mapper.from_body(body, "queries[2]: ")
    assert refused.value.message.startswith(message) and refused.value.status == 400
