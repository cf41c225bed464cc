"""Search as a shopper uses it: ranking modes, soft filters, paging, facets, the relevance signal, reference
exclusion, attribute type-ahead and the favicon, over HTTP."""

from __future__ import annotations

import pytest
from tests.conftest import make_rows

ROWS = {row["id"]: row for row in make_rows(12)}


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


@pytest.mark.parametrize("mode", ["vector", "lexical", "hybrid"])
def test_every_mode_answers_on_every_body_kind_and_says_which_ran(client, mode):
    by_form = client.post("/search", data={"text": "red tshirt", "k": "12", "mode": mode})
    by_json = client.post("/search", json={"text": "red tshirt", "k": 12, "mode": mode})
    by_get = client.get("/search", params={"text": "red tshirt", "k": 12, "mode": mode})
    assert ids(by_form) == ids(by_json) == ids(by_get)
    assert by_form.json()["query"]["mode"] == mode
    if mode == "lexical":  # words only: every hit holds one of the words in its title or values
        assert ids(by_form) and all(
            "red" in (ROWS[i]["title"] + ROWS[i]["baseColour"]).lower() or "tshirt" in ROWS[i]["articleType"].lower()
            for i in ids(by_form)
        )
    bad = client.post("/search", json={"text": "red", "mode": "fuzzy"})
    assert bad.status_code == 400


def test_soft_filters_boost_the_named_values_and_can_be_switched_off(client):
    kinds = sorted({row["articleType"] for row in ROWS.values()})
    colours = sorted({row["baseColour"] for row in ROWS.values()})
    text = f"{colours[0].lower()} for women"
    on = client.post("/search", json={"text": text, "k": 12, "mode": "vector"}).json()
    off = client.post("/search", json={"text": text, "k": 12, "mode": "vector", "soft_filters": False}).json()
    assert on["query"]["soft_filters"]["fields"] == {"baseColour": [colours[0]], "gender": ["Women"]}
    assert on["query"]["soft_filters"]["words"] == [colours[0].lower(), "women"]
    assert off["query"]["soft_filters"] is None
    wanted = [i for i in ROWS if ROWS[i]["baseColour"] == colours[0] and ROWS[i]["gender"] == "Women"]
    assert wanted and [h["id"] for h in on["results"][: len(wanted)]] == sorted(
        wanted, key=[h["id"] for h in on["results"]].index
    )
    assert set(h["id"] for h in on["results"][: len(wanted)]) == set(wanted)  # the products with both values lead
    assert len(on["results"]) == 12  # soft: the others still follow
    assert kinds  # the catalog has types to name


def test_paging_facets_relevance_and_min_score(client):
    full = client.post("/search", json={"text": "a shirt", "k": 12}).json()
    pages = [client.post("/search", json={"text": "a shirt", "k": 4, "offset": o}).json() for o in (0, 4, 8)]
    assert [h["id"] for p in pages for h in p["results"]] == [h["id"] for h in full["results"]]
    assert [h["rank"] for h in pages[1]["results"]] == [5, 6, 7, 8]
    assert full["total"] == 12 and sum(v["count"] for v in full["facets"]["gender"]) == 12
    assert {v["value"] for v in full["facets"]["baseColour"]} == {row["baseColour"] for row in ROWS.values()}
    assert set(full["relevance"]) == {"close_match", "level", "top_similarity", "basis", "words_named"}
    assert isinstance(full["relevance"]["close_match"], bool)
    floor = sorted(h["similarity"] for h in full["results"])[6]
    kept = client.post("/search", json={"text": "a shirt", "k": 12, "min_score": floor, "mode": "vector"}).json()[
        "results"
    ]
    assert kept and all(h["similarity"] >= floor - 1e-4 for h in kept) and len(kept) < 12
    too_deep = client.post("/search", json={"text": "a shirt", "offset": 5000})
    assert too_deep.status_code == 400 and "offset" in too_deep.json()["error"]["message"]


def test_more_like_this_leaves_out_its_reference_unless_asked(client):
    same = client.post("/search", json={"image_url": "/products/1003/image", "k": 12}).json()
    assert "1003" not in [h["id"] for h in same["results"]] and same["query"]["excluded"] == ["1003"]
    kept = client.post(
        "/search", json={"image_url": "/products/1003/image", "k": 12, "exclude_reference": False}
    ).json()
    assert kept["results"][0]["id"] == "1003" and kept["query"]["excluded"] == []
    composed = client.post(
        "/search", data={"image_url": "/products/1003/image", "modification": "for women", "k": "12"}
    ).json()
    assert "1003" not in [h["id"] for h in composed["results"]]
    assert composed["query"]["soft_filters"]["fields"] == {"gender": ["Women"]}
    plain = client.post(
        "/search",
        data={"image_url": "/products/1003/image", "modification": "for women", "k": "12", "soft_filters": "false"},
    ).json()
    women = [sum(h["attributes"]["gender"] == "Women" for h in body["results"][:6]) for body in (composed, plain)]
    assert women[0] >= 5 and women[0] > women[1]  # the change names a value: the products with it climb


def test_every_attribute_value_is_reachable_with_type_ahead(client):
    one = client.get("/attributes", params={"field": "articleType", "per_field": 500}).json()["fields"]
    assert list(one) == ["articleType"] and {v["value"] for v in one["articleType"]} == {
        r["articleType"] for r in ROWS.values()
    }
    typed = client.get("/attributes", params={"field": "baseColour", "prefix": "b"}).json()["fields"]["baseColour"]
    assert typed and all(v["value"].lower().startswith("b") for v in typed)
    missing = client.get("/attributes", params={"field": "nothing"})
    assert missing.status_code == 404 and "articleType" in missing.json()["error"]["message"]


def test_the_favicon_is_served(client):
    icon = client.get("/favicon.ico")
    assert (
        icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml") and b"<svg" in icon.content
    )
