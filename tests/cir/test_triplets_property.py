"""Property tests for triplet JSONL files: any file reads as triplets or fails naming the file and the line."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.strategies import bounded, dumps, encoded, json_values, jsonl_text, odd_text

from vitrine.cir.triplets import Triplet, read_triplets

ids = st.one_of(st.sampled_from(["1", "2", 3, "", " ", True, None, 1.5]), odd_text, json_values)
triplets = st.one_of(
    st.fixed_dictionaries(
        {
            "reference": ids, "modification": st.one_of(odd_text, json_values),
            "targets": st.one_of(st.lists(ids, max_size=3), ids),
        },
        optional={"kind": st.one_of(st.sampled_from(["colour", "gender"]), json_values)},
    ),
    st.dictionaries(
        st.sampled_from(["reference", "modification", "targets", "kind", "extra"]), json_values, max_size=4
    ),
    # A good triplet with one field off, so the checks after the first are reached.
    st.builds(
        lambda key, value: {"reference": "1", "modification": "in red", "targets": ["2"], key: value},
        st.sampled_from(["reference", "modification", "targets", "kind"]),
        st.one_of(ids, st.lists(ids, max_size=2), st.sampled_from(["\ud800", ["\udcff"], "a\x00b", {"a": 1}])),
    ),
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("triplets")


@bounded(200)
@given(data=encoded(jsonl_text(triplets)))
def test_any_triplet_file_reads_or_names_file_and_line(workdir, data):
    check_read(workdir / "train.jsonl", data)


@bounded(150)
@given(line=st.one_of(triplets.map(dumps), triplets.map(lambda t: dumps(t, ascii_only=False))))
def test_any_single_triplet_line_reads_or_names_the_line(workdir, line):
    # One good line before it: the checks of every field are reached, and the error names line 2.
    check_read(
        workdir / "train.jsonl",
        ('{"reference": "1", "modification": "in red", "targets": ["2"]}\n' + line).encode("utf-8", "surrogatepass"),
    )


def check_read(path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        read = read_triplets(path)
    except ValueError as exc:
        message = str(exc)
        assert "train.jsonl" in message, message
        assert re.search(r"line \d+", message) or "no triplets" in message, message
        return
    assert read and all(isinstance(t, Triplet) for t in read)
    for triplet in read:
        assert triplet.reference and triplet.modification.strip() and triplet.targets
        texts = [triplet.reference, triplet.modification, *triplet.targets]
        assert all(isinstance(text, str) and text for text in texts)
        for text in texts:
            text.encode("utf-8")  # lone surrogates could be neither tokenized nor written back
        assert triplet.kind is None or isinstance(triplet.kind, str)


# ---- regressions: the exact inputs the properties found ------------------------------------------------------------
GOOD_LINE = b'{"reference": "1", "modification": "in red", "targets": ["2"]}\n'


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xec", r"train.jsonl, line 1: not UTF-8 text"),  # was: UnicodeDecodeError naming neither file nor line
        (
            b"[" * 50_000 + b"]" * 50_000,
            r"train.jsonl, line 1: not valid JSON \(nested too deeply",
        ),  # was: RecursionError
        (
            GOOD_LINE + b'{"reference": "1", "modification": "in red", "targets": [""]}',
            r"train.jsonl, line 2: 'targets' must be a non-empty list of product ids",
        ),
        (
            GOOD_LINE + b'{"reference": "1", "modification": "\\ud800", "targets": ["2"]}',
            r"train.jsonl, line 2: 'modification' holds a lone surrogate",
        ),
        (
            GOOD_LINE + b'{"reference": "1", "modification": "0", "targets": ["1"], "kind": []}',
            r"train.jsonl, line 2: 'kind' must be a text, got \[\]",
        ),
    ],
)
def test_finding_bad_triplet_lines_name_file_and_line(tmp_path, data, message):
    # The last three were accepted: an empty target id, a lone surrogate no tokenizer takes, and a list as the kind
    # (evaluate_triplets groups by kind in a set, so a list kind raised TypeError: unhashable type).
    (tmp_path / "train.jsonl").write_bytes(data)
    with pytest.raises(ValueError, match=message):
        read_triplets(tmp_path / "train.jsonl")


def test_triplet_file_with_a_bom_reads_like_one_without(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + GOOD_LINE)
    assert read_triplets(tmp_path / "train.jsonl") == [Triplet("1", "in red", ("2",))]
