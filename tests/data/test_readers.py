import io
import tarfile

import pytest
from tests.conftest import jpeg_bytes, make_rows, write_folder, write_shards

from vitrine.data.catalog import detect_format, open_catalog
from vitrine.data.errors import ImageDecodeError, MissingFileError, RowFormatError
from vitrine.data.shards import expand_braces, resolve_shards


def test_expand_braces_keeps_zero_padding():
    assert expand_braces("kagl-{000000..000002}.tar") == ["kagl-000000.tar", "kagl-000001.tar", "kagl-000002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]


def test_shards_from_dir_glob_and_braces_read_the_same_items(tmp_path, rows):
    write_shards(tmp_path / "shards", rows, per_shard=4)
    specs = [
        tmp_path / "shards", tmp_path, str(tmp_path / "shards" / "*.tar"),
        str(tmp_path / "shards" / "test-{000000..000002}.tar"),
    ]
    expected = [r["id"] for r in rows]
    for spec in specs:
        catalog = open_catalog(spec)
        assert detect_format(spec) == "shards"
        items = list(catalog)
        assert [i.id for i in items] == expected
        assert catalog.count() == len(rows)
    first = items[0]
    assert first.title == rows[0]["title"] and first.attributes["articleType"] == rows[0]["articleType"]
    assert first.image.mode == "RGB" and first.image.size == (60, 80)
    assert first.attributes["usage"] is None  # "NA" counts as missing


def test_missing_shard_is_named(tmp_path, rows):
    write_shards(tmp_path, rows, per_shard=4)
    with pytest.raises(FileNotFoundError, match="7 of 10 shards not found: .*test-000003.tar"):
        resolve_shards(str(tmp_path / "test-{000000..000009}.tar"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_folder_catalog(tmp_path, rows, fmt):
    write_folder(tmp_path, rows, fmt=fmt)
    catalog = open_catalog(tmp_path)
    assert detect_format(tmp_path) == "folder"
    items = list(catalog)
    assert [i.id for i in items] == [r["id"] for r in rows]
    assert items[3].attributes["baseColour"] == rows[3]["baseColour"]
    assert catalog.count() == len(rows)


def test_folder_catalog_with_image_path_column(tmp_path, rows):
    import json

    from vitrine.data.schema import CatalogSchema

    (tmp_path / "pics").mkdir()
    for row in rows:
        (tmp_path / "pics" / f"p{row['id']}.png").write_bytes(jpeg_bytes(fmt="PNG"))
        row["file"] = f"pics/p{row['id']}.png"
    with open(tmp_path / "catalog.jsonl", "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    schema = CatalogSchema(name="custom", image_field="file", attributes=("articleType",))
    items = list(open_catalog(tmp_path / "catalog.jsonl", schema=schema))
    assert len(items) == len(rows) and set(items[0].attributes) == {"articleType"}


def test_schema_from_json_file(tmp_path):
    import json

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a1.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "catalog.csv").write_text("sku,name,pattern\na1,Striped shirt,stripes\n")
    (tmp_path / "schema.json").write_text(
        json.dumps({"name": "shop", "id_field": "sku", "title_field": "name", "attributes": ["pattern"]})
    )
    [item] = list(open_catalog(tmp_path, schema=tmp_path / "schema.json"))
    assert (item.id, item.title, dict(item.attributes)) == ("a1", "Striped shirt", {"pattern": "stripes"})


BAD_IMAGES = {
    "truncated": (jpeg_bytes()[:300], ImageDecodeError, "corrupt or truncated"),
    "not an image": (b"<html>this is not a picture</html>", ImageDecodeError, "not an image"),
    "empty": (b"", ImageDecodeError, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
@pytest.mark.parametrize("layout", ["shards", "folder"])
def test_bad_image_fails_naming_row_or_is_skipped_and_counted(tmp_path, case, layout):
    rows = make_rows(6)
    data, error, text = BAD_IMAGES[case]
    bad_id = rows[2]["id"]
    if layout == "shards":
        write_shards(tmp_path, rows, per_shard=3, images={bad_id: data})
    else:
        write_folder(tmp_path, rows, images={bad_id: data})
    with pytest.raises(error, match=text) as info:
        list(open_catalog(tmp_path, on_error="fail"))
    assert f"row 3, id {bad_id}" in str(info.value)
    catalog = open_catalog(tmp_path, on_error="skip")
    ids = [i.id for i in catalog]
    assert bad_id not in ids and len(ids) == 5
    assert catalog.report.skipped == 1 and catalog.report.counts["bad image"] == 1
    assert bad_id in catalog.report.examples[0]


def test_missing_image_file(tmp_path):
    rows = make_rows(4)
    write_folder(tmp_path, rows, images={rows[1]["id"]: None})
    with pytest.raises(MissingFileError, match=r"catalog.csv, row 2, id 1001: image file not found"):
        list(open_catalog(tmp_path))
    catalog = open_catalog(tmp_path, on_error="skip")
    assert len(list(catalog)) == 3 and catalog.report.counts["missing file"] == 1


def test_shard_sample_without_image(tmp_path):
    rows = make_rows(3)
    write_shards(tmp_path, rows, per_shard=3, images={rows[0]["id"]: None})
    with pytest.raises(MissingFileError, match="no image member"):
        list(open_catalog(tmp_path))


def test_malformed_csv_rows_and_empty_title(tmp_path):
    rows = make_rows(5)
    write_folder(tmp_path, rows)
    lines = (tmp_path / "catalog.csv").read_text().splitlines()
    lines[2] = lines[2] + ",extra,fields"  # row 2: too many fields
    lines[3] = "1002,only two"  # row 3: too few
    lines[4] = lines[4].replace(rows[3]["title"], "  ")  # row 4: empty title
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RowFormatError, match="row 2: row has 12 fields, header has 10"):
        list(open_catalog(tmp_path))
    catalog = open_catalog(tmp_path, on_error="skip")
    assert [i.id for i in catalog] == ["1000", "1004"]
    assert catalog.report.counts["malformed row"] == 3
    assert any("empty title" in e for e in catalog.report.examples)


def test_malformed_jsonl_and_duplicate_id(tmp_path):
    rows = make_rows(4)
    write_folder(tmp_path, rows, fmt="jsonl")
    lines = (tmp_path / "catalog.jsonl").read_text().splitlines()
    lines[1] = '{"id": "1001", "title": '  # broken JSON
    lines.append(lines[0])  # duplicate id 1000
    (tmp_path / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RowFormatError, match="row 2: malformed JSON"):
        list(open_catalog(tmp_path))
    catalog = open_catalog(tmp_path, on_error="skip")
    assert [i.id for i in catalog] == ["1000", "1002", "1003"]
    assert catalog.report.skipped == 2 and any("duplicate id" in e for e in catalog.report.examples)


def test_malformed_shard_json_and_truncated_tar(tmp_path):
    rows = make_rows(4)
    [path] = write_shards(tmp_path, rows, per_shard=4)
    catalog = open_catalog(path, on_error="skip")
    assert len(list(catalog)) == 4
    raw = open(path, "rb").read()
    broken = tmp_path / "broken.tar"
    broken.write_bytes(raw[: len(raw) // 2])
    catalog = open_catalog(str(broken), on_error="skip")
    items = list(catalog)
    assert 0 < len(items) < 4 and catalog.report.counts["malformed row"] == 1
    bad = tmp_path / "badjson.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in [("9.jpg", jpeg_bytes()), ("9.json", b"{not json")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(RowFormatError, match="badjson.tar, row 1, id 9: sample 9: malformed JSON"):
        list(open_catalog(str(bad)))


def test_unknown_layout_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither WebDataset shards"):
        open_catalog(tmp_path)
    with pytest.raises(FileNotFoundError, match="catalog not found"):
        open_catalog(tmp_path / "nope")


def test_shards_stream_one_at_a_time(tmp_path, monkeypatch):
    import vitrine.data.shards as shards

    write_shards(tmp_path, make_rows(12), per_shard=4)
    opened = []
    real_open = shards.tarfile.open
    monkeypatch.setattr(
        shards.tarfile, "open", lambda path, mode="r", **kw: opened.append(str(path)) or real_open(path, mode, **kw)
    )
    reader = open_catalog(tmp_path)  # schema inference samples the first shard's JSON once
    sampled = len(opened)
    iterator = iter(reader)
    next(iterator)
    assert sampled <= 1 and [p.rsplit("/", 1)[1] for p in opened[sampled:]] == ["test-000000.tar"]
    assert sum(1 for _ in iterator) == 11 and len(opened) == 3 + sampled
