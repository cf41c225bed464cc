"""Reading untrusted catalogs: image paths confined to the catalog folder, and the shard member size cap, from the
CLI."""

from __future__ import annotations

import json
import os

import pytest
from tests.conftest import jpeg_bytes, make_rows, write_folder, write_shards

from vitrine.cli import main
from vitrine.data.catalog import open_catalog
from vitrine.data.errors import UnsafePathError
from vitrine.data.schema import CatalogSchema

PATHS = CatalogSchema(name="paths", image_field="file", attributes=("gender",))
EMBED = ["--model", "vitrine:small", "--runtime", "torch", "--batch-size", "4", "--no-progress"]


@pytest.fixture
def untrusted(tmp_path):
    """A catalog whose image column points inside (row 1, and row 5 through a symlink that stays inside), and out of its
    folder: '..' (row 2), an absolute path (row 3), a symlink pointing out (row 4)."""
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "private.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    folder = tmp_path / "catalog"
    (folder / "pics").mkdir(parents=True)
    (folder / "pics" / "a.jpg").write_bytes(jpeg_bytes())
    os.symlink(outside / "private.jpg", folder / "pics" / "link-out.jpg")
    os.symlink(folder / "pics" / "a.jpg", folder / "pics" / "link-in.jpg")
    files = [
        "pics/a.jpg", "../secret/private.jpg", str(outside / "private.jpg"), "pics/link-out.jpg", "pics/link-in.jpg",
    ]
    with open(folder / "catalog.jsonl", "w", encoding="utf-8") as handle:
        for i, name in enumerate(files):
            handle.write(
                json.dumps({"id": f"p{i + 1}", "title": f"item {i + 1}", "gender": "Men", "file": name}) + "\n"
            )
    return folder


def test_image_paths_leading_out_of_the_catalog_folder_are_bad_rows_naming_the_row(untrusted):
    reader = open_catalog(untrusted, schema=PATHS, on_error="skip")
    assert [item.id for item in reader] == ["p1", "p5"]
    assert reader.report.counts == {"image path outside the catalog": 3}
    assert [e.split(": image path")[0] for e in reader.report.examples] == [
        "UnsafePathError: catalog.jsonl, row 2, id p2", "UnsafePathError: catalog.jsonl, row 3, id p3",
        "UnsafePathError: catalog.jsonl, row 4, id p4",
    ]
    assert "'../secret/private.jpg' resolves outside the catalog folder" in reader.report.examples[0]
    with pytest.raises(
        UnsafePathError, match=r"catalog.jsonl, row 2, id p2: image path '../secret/private.jpg' resolves outside"
    ):
        list(open_catalog(untrusted, schema=PATHS, on_error="fail"))


def test_a_trusted_catalog_may_point_anywhere_when_confinement_is_off(untrusted):
    from dataclasses import replace

    items = list(open_catalog(untrusted, schema=replace(PATHS, confine_images=False), on_error="fail"))
    assert [item.id for item in items] == ["p1", "p2", "p3", "p4", "p5"]


def test_ids_that_climb_out_of_the_images_folder_are_refused_too(tmp_path):
    rows = make_rows(2)
    rows[1]["id"] = "../../escape"
    write_folder(tmp_path / "cat", rows[:1])
    (tmp_path / "escape.jpg").write_bytes(jpeg_bytes())
    with open(tmp_path / "cat" / "catalog.csv", "a", encoding="utf-8") as handle:
        handle.write(",".join(str(rows[1][k]) for k in rows[1]) + "\n")
    reader = open_catalog(tmp_path / "cat", on_error="skip")
    assert [item.id for item in reader] == ["1000"] and reader.report.counts == {"image path outside the catalog": 1}


def test_cli_confine_images_is_on_by_default_and_can_be_turned_off(untrusted, tmp_path, capsys):
    schema = tmp_path / "paths.json"
    schema.write_text(json.dumps(PATHS.to_dict() | {"confine_images": True}))
    base = ["embed", "--data", str(untrusted), "--schema", str(schema), *EMBED]
    assert main([*base, "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert (
        "UnsafePathError: catalog.jsonl, row 2, id p2: image path '../secret/private.jpg' resolves outside the catalog "
        "folder" in err
    )
    assert main([*base, "--out", str(tmp_path / "o2"), "--on-error", "skip"]) == 0
    manifest = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["errors"]["by_kind"] == {"image path outside the catalog": 3}
    assert main([*base, "--out", str(tmp_path / "o3"), "--no-confine-images"]) == 0
    assert json.loads((tmp_path / "o3" / "manifest.json").read_text())["count"] == 5


def test_cli_max_member_bytes_refuses_larger_members_per_on_error(tmp_path, capsys):
    rows = make_rows(4)
    big = jpeg_bytes(size=(400, 400)) + b"\0" * 5000  # over 4K; the other images are under 1K
    write_shards(tmp_path / "shards", rows, per_shard=4, images={rows[1]["id"]: big})
    base = ["embed", "--data", str(tmp_path / "shards"), *EMBED]
    assert main([*base, "--out", str(tmp_path / "o1"), "--max-member-bytes", "4K"]) == 2
    err = capsys.readouterr().err
    assert (
        f"RowFormatError: test-000000.tar, row 2, id 1001: member '1001.jpg': declares {len(big)} bytes, over the "
        "limit of 4096 "
        f"bytes per member (--max-member-bytes)"
    ) in err
    assert main([*base, "--out", str(tmp_path / "o2"), "--max-member-bytes", "4096", "--on-error", "skip"]) == 0
    manifest = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert manifest["count"] == 3 and "member '1001.jpg': declares" in manifest["errors"]["examples"][0]
    assert "over the limit of 4096 bytes" in manifest["errors"]["examples"][0]
    assert main([*base, "--out", str(tmp_path / "o3")]) == 0  # the default (64 MiB) reads it
    assert json.loads((tmp_path / "o3" / "manifest.json").read_text())["count"] == 4
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "o4"), "--max-member-bytes", "0"])
    assert "at least 1 byte" in capsys.readouterr().err


def test_the_options_reach_every_command_that_reads_catalogs():
    from vitrine.cli import build_parser

    parser = build_parser()
    for command in (
        ["embed", "--data", "d", "--out", "o"], ["index", "build", "--data", "d", "--index", "i"],
        ["index", "add", "--data", "d", "--index", "i"], ["index", "images", "--data", "d", "--index", "i"],
        ["eval", "zero-shot", "--data", "d", "--field", "f"], ["eval", "retrieval", "--data", "d"],
        ["eval", "attributes", "--data", "d"], ["eval", "composed", "--data", "d"], ["serve", "--catalog", "d"],
    ):
        args = parser.parse_args([*command, "--max-member-bytes", "1M", "--no-confine-images"])
        assert (args.max_member_bytes, args.confine_images) == (2**20, False), command


def test_schema_files_take_the_reading_options(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "s", "confine_images": False, "max_member_bytes": 1000}))
    schema = CatalogSchema.from_file(path)
    assert (schema.confine_images, schema.max_member_bytes) == (False, 1000)
    path.write_text(json.dumps({"name": "s", "max_member_bytes": 0}))
    with pytest.raises(ValueError, match="max_member_bytes' must be a whole number of bytes >= 1"):
        CatalogSchema.from_file(path)
