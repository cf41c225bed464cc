"""`index build` on a shop's own catalog: the inferred schema is saved with the index, a failed fresh build leaves no
half-made index, and skipped rows are named in the summary and all listed in the index's manifest."""

from __future__ import annotations

import json

from tests.conftest import make_rows, write_stranger_folder

from vitrine.cli import main
from vitrine.index.build import SKIPPED_MANIFEST, build_index, index_schema
from vitrine.index.stores import open_store


def test_the_inferred_schema_is_saved_with_the_index(tmp_path, small_model):
    shop = write_stranger_folder(tmp_path / "shop", make_rows(12))
    build_index(shop, str(tmp_path / "idx"), small_model, progress=False)
    store = open_store(str(tmp_path / "idx"))
    try:
        schema = index_schema(store)
        assert (schema.id_field, schema.facet_fields) == ("sku", ("colour", "category", "sex"))
        assert store.product("SKU-1003")["colour"] == "Black"
    finally:
        store.close()


def test_a_failed_fresh_build_leaves_nothing_behind(tmp_path, capsys):
    shop = write_stranger_folder(tmp_path / "shop", make_rows(6))
    (tmp_path / "wrong.json").write_text(json.dumps({"id_field": "id", "title_field": "name", "attributes": []}))
    index = tmp_path / "idx"
    assert (
        main(
            [
                "index", "build", "--data", shop, "--index", str(index), "--model", "vitrine:small", "--schema",
                str(tmp_path / "wrong.json"), "--no-progress",
            ]
        )
        == 2
    )
    assert "no id column 'id'" in capsys.readouterr().err and not index.exists()


def test_skipped_rows_are_named_and_all_listed(tmp_path, capsys):
    rows = make_rows(10)
    shop = write_stranger_folder(tmp_path / "shop", rows)
    for row in rows[2:7]:  # five photos missing
        (tmp_path / "shop" / "pics" / f"p-{row['id']}.jpg").unlink()
    index = tmp_path / "idx"
    assert (
        main(
            [
                "index", "build", "--data", shop, "--index", str(index), "--model", "vitrine:small", "--runtime",
                "torch", "--no-progress",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert (
        "5 rows skipped (row 3, id SKU-1002: missing file; row 4, id SKU-1003: missing file; row 5, id SKU-1004: "
        "missing file; and 2 more)" in err
    )
    listed = json.loads((index / SKIPPED_MANIFEST).read_text())
    assert listed["skipped"] == 5 and [r["id"] for r in listed["rows"]] == [f"SKU-{row['id']}" for row in rows[2:7]]
    assert str(index / SKIPPED_MANIFEST) in err
