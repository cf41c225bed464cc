"""Hypothesis strategies for outside input (JSON-like values, odd text, file bytes) and bounded, deterministic
settings."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

BOM = "\ufeff"
DEEP = 50_000  # nesting deeper than any recursion limit (Hypothesis raises the limit while it runs a test)

# Inputs that have broken parsers before: NUL, BOMs, lone surrogates, traversal, format syntax, huge numbers, deep
# nesting.
ODD_STRINGS = (
    "", " ", "\t", "\x00", "a\x00b", BOM, BOM + "id", "NA", "nan", "None", "null", "true", "0", "-1", "1.5", "1e400",
    "..", "../x", "/etc/x", "a/../b", "..\\x", "C:\\x", "{", "}", "{value}", "{}", "{0}", "{value!x}", "{value:zz}",
    "{value[0]}", "{} {value}", "\r\n", "\r", "\n", '"', "'", "\\", ",", "=", "a=b", "\u2028", "\u0085", "é", "e\u0301",
    "🙂", "\U0010ffff", "\ud800", "\udcff", "milvus:x.db", "1" * 4400, "[" * DEEP, "x" * 140_000,
)
# Whole JSON documents that json.dumps never writes but files hold: NaN, huge integers, escaped surrogates, deep
# nesting.
ODD_JSON = (
    "NaN", "[NaN, Infinity, -Infinity]", '{"id": NaN}', '{"id": 1e400}', '{"id": ' + "1" * 4400 + "}", "1" * 4400,
    "[" * DEEP + "]" * DEEP, '{"a": ' * DEEP + "1" + "}" * DEEP, '{"id": "\\ud800", "title": "\\udcff"}',
    '{"id": "a\\u0000b"}', BOM + '{"id": "1", "title": "t"}', '{"id": "1", "id": "2"}', "{", "[", '"', "",
)


def bounded(max_examples: int) -> settings:
    """The same examples on every run: derandomized, no example database, no deadline, `max_examples` at most."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# Characters that quoting, escaping, path handling and encoding get wrong, packed densely.
TRICKY_CHARS = "a1 \"'\\/.,:=$[]{}\n\r\t\x00\ufeff\u2028\ud800\udcff\U0001f642"

odd_text = st.one_of(
    st.text(max_size=10),
    st.sampled_from(ODD_STRINGS),
    st.text(st.sampled_from(TRICKY_CHARS), min_size=1, max_size=6),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=4),  # surrogates and unassigned code points too
)
short_text = st.one_of(st.text(max_size=8), st.sampled_from(ODD_STRINGS[:44]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(), odd_text)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4), max_leaves=12
)
# What yaml.safe_load can return: keys may be None, bools, numbers as well as text.
yaml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), short_text),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def dumps(value, ascii_only: bool = True) -> str:
    """json.dumps that keeps NaN and surrogates, as files written by other tools can."""
    return json.dumps(value, ensure_ascii=ascii_only)


def json_text(documents) -> st.SearchStrategy[str]:
    """One JSON document: a dump of `documents` (ASCII-escaped or raw), an odd document, or text that is not JSON."""
    return st.one_of(st.builds(dumps, documents, st.booleans()), st.sampled_from(ODD_JSON), odd_text)


def jsonl_text(rows) -> st.SearchStrategy[str]:
    """Lines of JSON (or not), joined by LF, CRLF or CR, sometimes with blank lines."""
    lines = st.lists(st.one_of(json_text(rows), st.sampled_from(ODD_JSON), st.just("")), max_size=6)
    return st.builds(lambda items, newline: newline.join(items), lines, st.sampled_from(["\n", "\r\n", "\r"]))


def csv_text(headers, cells) -> st.SearchStrategy[str]:
    """A CSV file: written properly by csv.writer, or joined naively so quotes and commas break it."""

    @st.composite
    def build(draw):
        header = draw(headers)
        rows = draw(st.lists(st.lists(cells, max_size=6), max_size=5))
        if draw(st.booleans()):
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
            writer.writerows([header, *rows])
            return buffer.getvalue()
        return "\n".join(",".join(row) for row in [header, *rows])

    return build()


def _encode(text: str, how: str) -> bytes:
    if how == "bom":
        return (BOM + text).encode("utf-8", "surrogatepass")
    if how == "latin-1":
        return text.encode("latin-1", "replace")
    return text.encode(how, "surrogatepass")


def encoded(texts) -> st.SearchStrategy[bytes]:
    """Text as a file holds it: mostly UTF-8 (surrogates kept as invalid bytes), else with a BOM, UTF-16, Latin-1; or
    any bytes."""
    return st.one_of(
        st.builds(_encode, texts, st.sampled_from(["utf-8", "utf-8", "utf-8", "bom", "utf-16", "latin-1"])),
        st.binary(max_size=64),
    )
