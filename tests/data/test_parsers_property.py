"""Property tests for the catalog parsers: any CSV/JSONL file, tar shard or schema file parses or fails naming file and
row."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import jpeg_bytes
from tests.support.strategies import (
    ODD_JSON,
    bounded,
    csv_text,
    dumps,
    encoded,
    json_text,
    json_values,
    jsonl_text,
    odd_text,
    short_text,
)

from vitrine.data.catalog import open_catalog
from vitrine.data.errors import DataError, MissingFileError, RowFormatError
from vitrine.data.folder import FolderCatalog
from vitrine.data.schema import CatalogSchema, SchemaError, resolve_schema
from vitrine.data.shards import ShardCatalog

SCHEMAS = (
    CatalogSchema(name="plain", attributes=("gender",)),
    CatalogSchema(name="paths", image_field="image", attributes=("gender",), require_title=False),
)
KEYS = ("id", "title", "image", "gender", "\ufeffid", "")
TINY_JPEG = jpeg_bytes(size=(8, 8))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder catalog's images (one good, one corrupt) and room for the metadata file each example rewrites."""
    root = tmp_path_factory.mktemp("parsers")
    (root / "images").mkdir()
    (root / "images" / "1.jpg").write_bytes(TINY_JPEG)
    (root / "images" / "2.jpg").write_bytes(b"not a jpeg")
    return root


def assert_names_file_and_row(error: DataError, name: str) -> None:
    """A row error names the file and the row; a file-level one (bad header, not text) names the file."""
    message = str(error)
    assert name in message, message
    assert error.row is None or f"row {error.row}" in message, message


def read_all(reader, name: str) -> None:
    """Scan and decode every row under the reader's policy; only DataErrors naming the file may come out."""
    try:
        list(reader)
        reader.count()
    except DataError as exc:
        assert_names_file_and_row(exc, name)
        return
    for example in reader.report.examples:
        assert name in example and "row " in example, example


row_values = st.one_of(
    json_values,
    st.sampled_from(["1", "2", " 1 ", "images/1.jpg", "images/2.jpg", "../1.jpg", "/etc/x.jpg", "a\x00b", "\ud800"]),
)
catalog_rows = st.dictionaries(st.one_of(st.sampled_from(KEYS), short_text), row_values, max_size=6)


@bounded(150)
@given(
    data=encoded(jsonl_text(catalog_rows)), schema=st.sampled_from(SCHEMAS), on_error=st.sampled_from(["skip", "fail"])
)
def test_any_jsonl_catalog_parses_or_names_file_and_row(workdir, data, schema, on_error):
    (workdir / "catalog.jsonl").write_bytes(data)
    read_all(FolderCatalog(workdir / "catalog.jsonl", schema, on_error=on_error), "catalog.jsonl")


csv_cells = st.one_of(
    odd_text, st.sampled_from(["1", "2", "images/1.jpg", "images/2.jpg", '"', '"a""b"', "a\nb", "x" * 140_000])
)


csv_headers = st.one_of(
    st.just(["id", "title", "gender", "image"]), st.lists(st.one_of(st.sampled_from(KEYS), short_text), max_size=5)
)


@bounded(150)
@given(
    data=encoded(csv_text(csv_headers, csv_cells)), schema=st.sampled_from(SCHEMAS),
    on_error=st.sampled_from(["skip", "fail"]),
)
def test_any_csv_catalog_parses_or_names_file_and_row(workdir, data, schema, on_error):
    (workdir / "catalog.csv").write_bytes(data)
    read_all(FolderCatalog(workdir / "catalog.csv", schema, on_error=on_error), "catalog.csv")


# ---- WebDataset shards -------------------------------------------------------------------------------------------
MEMBER_NAMES = (
    "1.jpg", "1.json", "1.txt", "2.jpg", "2.json", "1.JPG", "a/b.jpg", "a/b.json", "../x.jpg", "/etc/x.jpg",
    "a/../b.jpg", "./1.jpg", "x", ".jpg", "1.tar.gz", "dir/", "1.jpg.json",
)
LINK_KINDS = ("symlink", "hardlink", "fifo")
member_names = st.one_of(
    st.sampled_from(MEMBER_NAMES),
    st.sampled_from(["1.json", "2.json"]),
    st.builds(lambda key, ext: f"{key}.{ext}", short_text, st.sampled_from(["jpg", "json", "txt", "png", "cls"])),
)
payloads = st.one_of(
    st.just(TINY_JPEG),
    st.binary(max_size=40),
    st.builds(lambda value: dumps(value).encode("utf-8", "surrogatepass"), catalog_rows),
    st.one_of(json_text(json_values), st.sampled_from(ODD_JSON)).map(
        lambda text: text.encode("utf-8", "surrogatepass")
    ),
)
members = st.lists(
    st.tuples(member_names, st.sampled_from(("file",) * 5 + ("dir",) + LINK_KINDS), payloads), max_size=6
)


def tar_bytes(entries) -> bytes | None:
    """A tar of (name, kind, data) entries; None when tarfile itself cannot write such a name."""
    if any("\x00" in name for name, _, _ in entries):
        return None  # a tar header ends a name at its first NUL: what is read back is another name
    buffer = io.BytesIO()
    try:
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, kind, data in entries:
                info = tarfile.TarInfo(name)
                if kind == "file":
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    continue
                info.type = {
                    "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                    "fifo": tarfile.FIFOTYPE,
                }[kind]
                info.linkname = "1.jpg" if kind in ("symlink", "hardlink") else ""
                tar.addfile(info)
    except (ValueError, UnicodeError, tarfile.TarError):
        return None
    return buffer.getvalue()


@st.composite
def shards(draw):
    """A shard's bytes, intact or damaged, with the entries it was written from (None when damaged)."""
    entries = draw(members)
    data = tar_bytes(entries)
    if data is None:
        data = tar_bytes([])
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        return data[: draw(st.integers(0, len(data)))], None
    if damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :], None
    return data, entries


@bounded(150)
@given(shard=shards(), on_error=st.sampled_from(["skip", "fail"]))
def test_any_shard_parses_or_names_shard_and_row(workdir, shard, on_error):
    data, entries = shard
    (workdir / "shard.tar").write_bytes(data)
    reader = ShardCatalog(str(workdir / "shard.tar"), SCHEMAS[0], on_error=on_error)
    read_all(reader, "shard.tar")
    if entries is None or on_error == "fail":
        return
    # In an intact shard, each sample (a run of members sharing a key) with an unsafe member is refused naming the
    # first one: a link or special file, an absolute or '..' name, a repeated extension, or a key seen in an earlier
    # run.
    finished: set[str] = set()
    run_key, run_exts, first_unsafe = None, set(), None
    for name, kind, _ in [*(e for e in entries if e[1] != "dir"), (None, None, None)]:
        key, ext = split_key(name) if name is not None else (None, None)
        if key != run_key and run_key is not None:
            if first_unsafe is not None:
                assert any(repr(first_unsafe) in example for example in reader.report.examples), (
                    first_unsafe, reader.report.examples,
                )
            finished.add(run_key)
            run_exts, first_unsafe = set(), None
        if name is None:
            break
        unsafe = kind != "file" or name.startswith("/") or ".." in name.split("/") or ext in run_exts or key in finished
        run_key, first_unsafe = key, first_unsafe or (name if unsafe else None)
        run_exts.add(ext)


@bounded(100)
@given(
    metadata=st.one_of(encoded(json_text(catalog_rows)), encoded(st.sampled_from(ODD_JSON))),
    on_error=st.sampled_from(["skip", "fail"]),
)
def test_any_shard_metadata_parses_or_names_shard_and_row(workdir, metadata, on_error):
    (workdir / "meta.tar").write_bytes(tar_bytes([("7.jpg", "file", TINY_JPEG), ("7.json", "file", metadata)]))
    read_all(ShardCatalog(str(workdir / "meta.tar"), SCHEMAS[0], on_error=on_error), "meta.tar")


def split_key(name: str) -> tuple[str, str]:
    """The WebDataset convention: the key is the path up to the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


# ---- catalog schema files (--schema) -------------------------------------------------------------------------------
SCHEMA_KEYS = ("name", "id_field", "title_field", "image_field", "attributes", "missing_values", "require_title")
schema_docs = st.dictionaries(st.one_of(st.sampled_from(SCHEMA_KEYS), short_text), json_values, max_size=7)
good_values = {
    "name": st.text(), "id_field": st.text(min_size=1), "title_field": st.text(min_size=1),
    "image_field": st.none() | st.text(min_size=1), "attributes": st.lists(st.text()),
    "missing_values": st.lists(st.text()), "require_title": st.booleans(),
}
good_docs = st.fixed_dictionaries({}, optional=good_values)
near_docs = st.fixed_dictionaries(
    {}, optional={key: values | json_values for key, values in good_values.items()}
)  # one field off


@bounded(200)
@given(data=encoded(st.one_of(json_text(schema_docs), st.builds(dumps, near_docs))))
def test_any_schema_file_parses_or_names_file_and_field(workdir, data):
    path = workdir / "schema.json"
    path.write_bytes(data)
    try:
        schema = resolve_schema(path)
    except ValueError as exc:
        assert "schema.json" in str(exc), str(exc)
        return
    assert all(isinstance(getattr(schema, key), str) for key in ("name", "id_field", "title_field"))
    assert schema.image_field is None or isinstance(schema.image_field, str)
    assert all(isinstance(v, str) for v in schema.attributes + schema.missing_values)
    assert isinstance(schema.require_title, bool)
    # What the file said is what the schema holds (a string is not split into characters, for one).
    given_doc = json.loads(data.decode("utf-8-sig", "surrogatepass"))
    assert {k: v for k, v in schema.to_dict().items() if k in given_doc} == given_doc


@bounded(100)
@given(doc=good_docs)
def test_well_formed_schema_files_round_trip(workdir, doc):
    path = workdir / "good-schema.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    schema = CatalogSchema.from_file(path)
    assert CatalogSchema.from_dict(schema.to_dict()) == schema
    assert {k: v for k, v in schema.to_dict().items() if k in doc} == doc


# ---- regressions: the exact inputs the properties found, and the shard guards ---------------------------------------
def folder_catalog(
    tmp_path, name: str, data: bytes, schema: CatalogSchema = SCHEMAS[0], on_error: str = "fail"
) -> FolderCatalog:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "1.jpg").write_bytes(TINY_JPEG)
    (tmp_path / name).write_bytes(data)
    return FolderCatalog(tmp_path / name, schema, on_error=on_error)


def test_finding_jsonl_id_with_4400_digits_is_a_row_error(tmp_path):
    # Was: ValueError "Exceeds the limit (4300 digits) for integer string conversion" from json, naming nothing.
    with pytest.raises(RowFormatError, match=r"catalog.jsonl, row 1: malformed JSON \(Exceeds the limit"):
        list(folder_catalog(tmp_path, "catalog.jsonl", b'{"id": ' + b"1" * 4400 + b"}"))


def test_finding_jsonl_row_nested_50000_deep_is_a_row_error(tmp_path):
    # Was: RecursionError out of json.loads.
    reader = folder_catalog(
        tmp_path, "catalog.jsonl", b"[" * 50_000 + b"]" * 50_000 + b'\n{"id": "1", "title": "t"}', on_error="skip"
    )
    assert [item.id for item in reader] == ["1"]
    assert reader.report.examples == [
        "RowFormatError: catalog.jsonl, row 1: malformed JSON (maximum recursion depth exceeded while decoding a JSON "
        "array from a unicode string)"
    ]


def test_finding_jsonl_id_with_nul_byte_is_a_missing_image(tmp_path):
    # Was: ValueError "embedded null byte" from open() while decoding the row's image.
    with pytest.raises(
        MissingFileError, match=r"catalog.jsonl, row 1, id a\x00b: image path .* is not a valid file name"
    ):
        list(folder_catalog(tmp_path, "catalog.jsonl", b'{"id": "a\\u0000b"}', schema=SCHEMAS[1]))


def test_finding_jsonl_id_with_lone_surrogate_is_a_row_error(tmp_path):
    # Was: UnicodeEncodeError "surrogates not allowed" from open(); such an id could not be stored or served either.
    with pytest.raises(RowFormatError, match=r"catalog.jsonl, row 1: column 'id' holds a lone surrogate \('\\ud800'\)"):
        list(folder_catalog(tmp_path, "catalog.jsonl", b'{"id": "\\ud800", "title": "\\udcff"}'))


def test_finding_csv_field_over_the_size_limit_is_a_row_error(tmp_path):
    # Was: _csv.Error "field larger than field limit (131072)" out of the reader; now that row alone is bad.
    data = b"id,title,gender,image\n" + b"x" * 140_000 + b"\n1,Red shirt,Men,\n"
    reader = folder_catalog(tmp_path, "catalog.csv", data, on_error="skip")
    assert [item.id for item in reader] == ["1"]
    assert reader.report.examples == [
        "RowFormatError: catalog.csv, row 1: malformed CSV (field larger than field limit (131072))"
    ]


def test_finding_csv_header_over_the_size_limit_names_the_file(tmp_path):
    with pytest.raises(RowFormatError, match=r"catalog.csv: malformed CSV header \(field larger than field limit"):
        list(folder_catalog(tmp_path, "catalog.csv", b"x" * 140_000 + b"\n1\n"))


@pytest.mark.parametrize(
    "metadata, message",
    [
        (b"1" * 4400, "Exceeds the limit"),  # was: ValueError out of json.loads
        (b"[" * 50_000 + b"]" * 50_000, "maximum recursion depth"),  # was: RecursionError
    ],
)
def test_finding_shard_metadata_with_huge_number_or_deep_nesting_is_a_row_error(tmp_path, metadata, message):
    (tmp_path / "meta.tar").write_bytes(tar_bytes([("7.jpg", "file", TINY_JPEG), ("7.json", "file", metadata)]))
    with pytest.raises(RowFormatError, match=rf"meta.tar, row 1, id 7: sample 7: malformed JSON metadata \({message}"):
        list(ShardCatalog(str(tmp_path / "meta.tar"), SCHEMAS[0]))


def refused(tmp_path, entries, **options) -> tuple[list[str], list[str]]:
    """Ids read and errors reported from a shard of `entries`, under the skip policy."""
    (tmp_path / "s.tar").write_bytes(tar_bytes(entries))
    reader = ShardCatalog(str(tmp_path / "s.tar"), SCHEMAS[0], on_error="skip", **options)
    return [item.id for item in reader], reader.report.examples


GOOD = [("2.jpg", "file", TINY_JPEG), ("2.json", "file", b'{"title": "Blue shirt"}')]


def test_finding_shard_symlink_member_is_refused_by_name(tmp_path):
    # Was: the symlink was skipped without a word (found as [('x', 'symlink')]).
    ids, errors = refused(tmp_path, [("x", "symlink", b""), *GOOD])
    assert ids == ["2"] and errors == [
        "RowFormatError: s.tar, row 1, id x: member 'x': is a symlink; shards hold regular files only"
    ]


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_shard_links_and_special_files_are_refused(tmp_path, kind):
    ids, errors = refused(tmp_path, [("1.jpg", kind, b""), ("1.json", "file", b'{"title": "t"}'), *GOOD])
    label = {"symlink": "symlink", "hardlink": "hardlink", "fifo": "special file"}[kind]
    assert ids == ["2"] and errors == [
        f"RowFormatError: s.tar, row 1, id 1: member '1.jpg': is a {label}; shards hold regular files only"
    ]


@pytest.mark.parametrize("name", ["../x.jpg", "/etc/x.jpg", "a/../../x.jpg", "..\\x.jpg"])
def test_shard_member_names_that_climb_out_or_are_absolute_are_refused(tmp_path, name):
    ids, errors = refused(tmp_path, [(name, "file", TINY_JPEG), *GOOD])
    assert ids == ["2"] and len(errors) == 1
    assert (
        errors[0].startswith("RowFormatError: s.tar, row 1, id ")
        and f"member {name!r}: name is absolute or climbs out of the shard with '..'" in errors[0]
    )


def test_shard_member_repeating_key_and_extension_is_refused(tmp_path):
    ids, errors = refused(tmp_path, [("1.jpg", "file", TINY_JPEG), ("1.jpg", "file", TINY_JPEG), *GOOD])
    assert ids == ["2"] and errors == [
        "RowFormatError: s.tar, row 1, id 1: member '1.jpg': repeats key '1' with extension 'jpg' in the same sample"
    ]


def test_shard_key_reappearing_after_another_sample_is_refused(tmp_path):
    ids, errors = refused(
        tmp_path,
        [("1.jpg", "file", TINY_JPEG), ("1.txt", "file", b"Red shirt"), *GOOD, ("1.json", "file", b'{"title": "t"}')],
    )
    assert ids == ["1", "2"]
    assert errors == [
        (
            "RowFormatError: s.tar, row 3, id 1: member '1.json': key '1' already appeared earlier in the shard; "
            "a sample's members must be adjacent"
        )
    ]


def test_shard_member_declaring_a_huge_size_is_refused_unread(tmp_path):
    # A header may declare a terabyte; the reader must refuse it before reading, naming the shard and the member.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("1.jpg")
        info.size = 2**40
        tar.addfile(info)  # the header alone: the archive ends where the data should start
    (tmp_path / "huge.tar").write_bytes(buffer.getvalue())
    with pytest.raises(
        RowFormatError,
        match=r"huge.tar, row 1, id 1: member '1.jpg': declares 1099511627776 bytes, over the limit of 67108864 bytes",
    ):
        list(ShardCatalog(str(tmp_path / "huge.tar"), SCHEMAS[0]))


def test_shard_member_limit_is_configurable_and_later_samples_still_read(tmp_path):
    big = [("1.jpg", "file", TINY_JPEG + b"\0" * 100), ("1.json", "file", b'{"title": "t"}')]
    ids, errors = refused(tmp_path, [*big, *GOOD], max_member_bytes=len(TINY_JPEG))
    assert ids == ["2"]
    assert errors == [
        f"RowFormatError: s.tar, row 1, id 1: member '1.jpg': declares {len(TINY_JPEG) + 100} bytes, over the limit of "
        f"{len(TINY_JPEG)} bytes per member (--max-member-bytes)"
    ]
    (tmp_path / "s.tar").write_bytes(tar_bytes([*big, *GOOD]))
    assert [
        item.id
        for item in open_catalog(str(tmp_path / "s.tar"), schema=SCHEMAS[0], max_member_bytes=len(TINY_JPEG) + 100)
    ] == ["1", "2"]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{", r"schema.json: not valid JSON \(Expecting property name"),  # was: JSONDecodeError without the file
        (b"\xff\xfeN\x00a\x00N\x00", r"schema.json: not UTF-8 text"),  # was: UnicodeDecodeError without the file
        (b"NaN", r"schema.json: expected a JSON object, got float"),  # was: TypeError 'float' object is not iterable
        (b'{"name": {}}', r"schema.json: field 'name' must be a string, got \{\}"),  # was: accepted, a dict as the name
        (
            b'{"attributes":{}}',
            r"schema.json: field 'attributes' must be a list of strings, got \{\}",
        ),  # was: accepted as no attributes
        (
            b'{"missing_values": "NA"}',
            r"schema.json: field 'missing_values' must be a list of strings, got 'NA'",
        ),  # was: ('N', 'A')
    ],
)
def test_finding_bad_schema_files_name_the_file_and_field(tmp_path, data, message):
    (tmp_path / "schema.json").write_bytes(data)
    with pytest.raises(SchemaError, match=message):
        resolve_schema(tmp_path / "schema.json")


def test_schema_file_with_a_bom_reads_like_one_without(tmp_path):
    (tmp_path / "schema.json").write_bytes(b'\xef\xbb\xbf{"id_field": "sku"}')
    assert resolve_schema(tmp_path / "schema.json").id_field == "sku"
