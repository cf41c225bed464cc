"""Schemas read from a catalog's own columns: odd headers, KAGL's columns, and the ambiguity error with its draft."""

from __future__ import annotations

import csv
import json

import pytest
from tests.conftest import jpeg_bytes, make_rows, write_folder, write_shards, write_stranger_folder

from vitrine.data.catalog import open_catalog, schema_for
from vitrine.data.schema import CatalogSchema, SchemaError
from vitrine.data.schema_infer import AmbiguousSchemaError, infer_from_rows


def test_a_shops_catalog_is_read_without_a_schema(tmp_path):
    folder = write_stranger_folder(tmp_path / "shop", make_rows(20))
    schema, line = schema_for(folder)
    assert (schema.id_field, schema.title_field, schema.image_field) == ("sku", "name", "photo")
    assert schema.facet_fields == ("colour", "category", "sex")
    assert "price" in schema.attributes and "price" not in schema.facet_fields
    assert "id=sku" in line and "price (number)" in line
    records = list(open_catalog(folder).records())
    assert [r.id for r in records[:2]] == ["SKU-1000", "SKU-1001"]
    assert records[4].attributes["colour"] is None  # a blank cell is missing, not a class
    assert records[0].image_path.endswith("pics/p-1000.jpg")


def test_kagl_columns_get_the_kagl_schema(tmp_path):
    rows = make_rows(8)
    write_folder(tmp_path / "folder", rows)
    write_shards(tmp_path / "shards", rows)
    for path in (tmp_path / "folder", tmp_path / "shards"):
        schema, _ = schema_for(path)
        assert schema.name == "kagl" and "year" not in schema.facet_fields and "articleType" in schema.facet_fields


@pytest.mark.parametrize(
    "header, expected",
    [
        (["Product ID", "Product Name", "Image File", "Color"], ("Product ID", "Product Name", "Image File")),
        (["item_id", "Title", "picture", "Brand"], ("item_id", "Title", "picture")),
        (["code", "description", "img", "size"], ("code", "description", "img")),
    ],
)
def test_odd_headers(header, expected):
    rows = [
        {
            header[0]: f"A{i:03d}", header[1]: f"Soft cotton shirt number {i}", header[2]: f"x/{i}.png",
            header[3]: ["S", "M", "L"][i % 3],
        }
        for i in range(30)
    ]
    schema, about = infer_from_rows(header, rows)
    assert (schema.id_field, schema.title_field, schema.image_field) == expected
    assert schema.facet_fields == (header[3],) and not about["problems"]


def test_numbers_years_and_free_text_are_not_facets():
    header = ["sku", "name", "year", "notes", "material"]
    rows = [
        {
            "sku": f"s{i}", "name": f"Shirt {i}", "year": str(2000 + i % 9),
            "notes": f"hand wash only, item {i} of the spring line", "material": ["cotton", "wool"][i % 2],
        }
        for i in range(60)
    ]
    schema, about = infer_from_rows(header, rows)
    assert schema.facet_fields == ("material",)
    assert about["kinds"] == {"year": "number", "notes": "text", "material": "category"}


def test_an_ambiguous_catalog_writes_a_draft_and_names_it(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "images").mkdir()
    with open(folder / "catalog.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ref_a", "ref_b", "colour"])  # two unique columns, neither named like an id, and no title
        for i in range(12):
            writer.writerow([f"a{i}", f"b{i}", "Red"])
            (folder / "images" / f"a{i}.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(AmbiguousSchemaError) as caught:
        schema_for(folder)
    draft = folder / "schema.draft.json"
    assert str(draft) in str(caught.value) and "'ref_a', 'ref_b'" in str(caught.value)
    CatalogSchema.from_file(draft)  # the draft is a schema file the user can edit and pass with --schema


def test_a_schema_file_with_facets_outside_its_attributes_is_refused(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"attributes": ["colour"], "facets": ["size"]}))
    with pytest.raises(SchemaError, match="facets"):
        CatalogSchema.from_file(path)
