"""Property tests for filter strings: `field=value` specs and the Milvus expressions made from them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.strategies import bounded, odd_text

from vitrine.index.milvus_filters import filter_expression
from vitrine.search import parse_filters

specs = st.one_of(
    odd_text,
    st.builds(
        lambda field, sep, value: f"{field}{sep}{value}", odd_text, st.sampled_from(["=", "==", " = ", "=="]), odd_text
    ),
    st.sampled_from(
        ["gender=Women", "articleType=Dresses", "size (EU)=42", "and=x", "$meta=1", "a=b=c", "=x", "x=", " = "]
    ),
)


@bounded(300)
@given(given_specs=st.lists(specs, max_size=4))
def test_any_filter_strings_parse_or_name_the_bad_one(given_specs):
    try:
        filters = parse_filters(given_specs)
    except ValueError as exc:
        assert any(repr(spec) in str(exc) for spec in given_specs), str(exc)
        return
    for field, values in filters.items():
        assert field and field == field.strip() and values and all(v and v == v.strip() for v in values)
        for text in (field, *values):
            text.encode("utf-8")  # SQLite binds, and Milvus receives, UTF-8 text
    # What parse_filters accepts, every store accepts: the Milvus expression is made without error.
    if filters:
        assert parse_expression(filter_expression(filters, declared=set(filters))) == _expected(filters)


@bounded(300)
@given(
    filters=st.dictionaries(odd_text, st.one_of(odd_text, st.lists(odd_text, max_size=3)), max_size=3),
    declared=st.sets(st.sampled_from(["gender", "and", "size (EU)", "x", ""]), max_size=3),
)
def test_milvus_expressions_quote_every_field_and_value(filters, declared):
    try:
        expression = filter_expression(filters, declared | set(list(filters)[:1]))
    except ValueError as exc:
        assert any(repr(name) in str(exc) for name in filters), str(exc)
        return
    if not filters:
        assert expression == ""
        return
    if expression is None:
        assert any(not ([v] if isinstance(v, str) else v) for v in filters.values())
        return
    # No value can change the expression's shape: parsing it back gives exactly the fields and values given.
    assert parse_expression(expression) == _expected(filters)
    expression.encode("utf-8")  # pymilvus sends the expression as UTF-8


def _expected(filters) -> list[tuple[str, list[str]]]:
    return [
        (name, list(dict.fromkeys([values] if isinstance(values, str) else values)))
        for name, values in sorted(filters.items())
    ]


def parse_expression(text: str) -> list[tuple[str, list[str]]]:
    """Parse `(f == "a" or f == "b") and ($meta["g"] == "c")` following Milvus's string-literal grammar."""
    position = 0

    def expect(token: str) -> None:
        nonlocal position
        assert text.startswith(token, position), (text, position, token)
        position += len(token)

    def literal() -> str:
        nonlocal position
        expect('"')
        out = []
        escapes = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
        while text[position] != '"':
            char = text[position]
            assert char not in "\r\n", "raw line breaks end a Milvus string literal"
            if char == "\\":
                out.append(escapes[text[position + 1]])
                position += 2
            else:
                out.append(char)
                position += 1
        position += 1
        return "".join(out)

    def reference() -> str:
        nonlocal position
        if text.startswith("$meta[", position):
            expect("$meta[")
            name = literal()
            expect("]")
            return name
        end = text.index(" ", position)
        name, position = text[position:end], end
        assert name.isidentifier(), name
        return name

    clauses = []
    while True:
        expect("(")
        name, values = None, []
        while True:
            field = reference()
            assert name in (None, field)
            name = field
            expect(" == ")
            values.append(literal())
            if text.startswith(")", position):
                break
            expect(" or ")
        expect(")")
        clauses.append((name, values))
        if position == len(text):
            return clauses
        expect(" and ")


# ---- regressions: the exact inputs the properties found ------------------------------------------------------------
def test_finding_filter_spec_with_nul_is_refused_naming_it():
    # was: accepted as {'\x00': ['=']}; the Milvus store then failed with "filter values cannot contain NUL characters"
    with pytest.raises(ValueError, match=r"a filter must be Unicode text without NUL characters, got '\\x00=='"):
        parse_filters(["\x00=="])


def test_finding_filter_spec_with_lone_surrogate_is_refused_naming_it():
    # was: accepted as {'0': ['\ud800']}; SQLite then raised UnicodeEncodeError (a command-line argument that is not
    # UTF-8 arrives as such surrogates)
    with pytest.raises(ValueError, match=r"a filter must be Unicode text without NUL characters, got '0=\\ud800'"):
        parse_filters(["0=\ud800"])


def test_finding_milvus_expression_error_names_the_field():
    # was: ValueError "filter values cannot contain NUL characters", naming no field
    with pytest.raises(ValueError, match=r"filter '': filter values cannot contain NUL characters"):
        filter_expression({"": "\x00"}, declared={""})
    # was: an expression holding '\ud800', which pymilvus cannot send as UTF-8
    with pytest.raises(
        ValueError, match=r"filter '': filter values must be Unicode text; this one holds a lone surrogate"
    ):
        filter_expression({"": "\ud800"}, declared={""})
