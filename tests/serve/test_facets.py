"""`GET /schema`: the fields the web UI offers as chips, from the schema saved with the index, or, for an index built
before schemas were saved, from its stored fields (numbers and free text left out, the tagger's fill-ins marked)."""

from __future__ import annotations

from vitrine.data.schema import CatalogSchema, builtin_schema
from vitrine.serve.facets import facets_from

# A shop's stored values as `Ranker.catalog_values` gives them: its own columns, and the tagger's gender filled in
# for every product (the shop has no such column) while its baseColour was filled in for one product only.
VALUES = {
    "colour": [("Red", 3), ("Blue", 2)],
    "category": [("Tshirts", 3), ("Jeans", 2)],
    "sex": [("Men", 3), ("Women", 2)],
    "price": [(f"{9.5 + i:.2f}", 1) for i in range(5)],
    "notes": [(f"hand wash only, item {i} of the spring line", 1) for i in range(5)],
    "gender": [("Men", 4), ("Women", 1)],
    "predicted_gender": [("Men", 4), ("Women", 1)],
    "baseColour": [("Red", 4), ("Blue", 1)],
    "predicted_baseColour": [("Red", 5)],
    "predicted_fields": [("gender", 4), ("gender,baseColour", 1)],
}
SHOP = CatalogSchema(
    name="inferred",
    id_field="sku",
    title_field="name",
    image_field="photo",
    attributes=("colour", "category", "sex", "price", "notes", "baseColour"),
    facets=("colour", "category", "sex", "baseColour"),
)


def fields(answer: dict, predicted: bool) -> list[str]:
    return [f["field"] for f in answer["facets"] if f["predicted"] is predicted]


def test_the_saved_schema_gives_the_catalogs_own_facets_then_predicted_tags():
    answer = facets_from(SHOP, VALUES)
    assert answer["source"] == "index" and answer["attributes"] == list(SHOP.attributes)
    assert fields(answer, False) == [
        "colour",
        "category",
        "sex",
        "baseColour",
    ]  # column order; price and notes are no facets
    assert fields(answer, True) == ["gender"]  # the catalog has no gender column: the tagger's stand-in
    assert {f["field"]: f["filled"] for f in answer["facets"]} == {
        "colour": 0, "category": 0, "sex": 0, "baseColour": 1, "gender": 5,
    }


def test_an_index_without_a_saved_schema_is_read_from_its_fields():
    answer = facets_from(None, VALUES)
    assert answer["source"] == "fields"
    assert fields(answer, False) == ["baseColour", "category", "colour", "sex"]  # numbers and free text left out
    assert fields(answer, True) == ["gender"]  # filled in for every product that has it
    assert "price" in answer["attributes"] and "gender" not in answer["attributes"]


def test_get_schema_serves_the_index_schema(client):
    body = client.get("/schema").json()
    filled = {f["field"]: f["filled"] for f in body["facets"]}
    assert filled["gender"] == 0 and filled["usage"] <= 4  # the tagger fills blank cells only: 4 rows have usage NA
    kagl = builtin_schema("kagl")
    assert body == {
        "source": "index",
        "attributes": list(kagl.attributes),
        "facets": [{"field": name, "predicted": False, "filled": filled.get(name, 0)} for name in kagl.facet_fields],
    }
    assert client.app.openapi()["paths"]["/schema"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/CatalogFacets"}
