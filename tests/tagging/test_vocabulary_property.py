"""Property tests for attribute vocabularies: any YAML/JSON file or structure is a vocabulary or a VocabularyError
naming it."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from tests.support.strategies import bounded, encoded, json_text, odd_text, scalars, short_text, yaml_values

from vitrine.tagging.vocabulary import (
    Vocabulary,
    VocabularyError,
    load_vocabulary,
    vocabulary_from_dict,
    vocabulary_from_text,
)

templates = st.one_of(
    st.sampled_from(["a {value}", "a photo of a {value}", "{value}", "{value}{value}", "{{value}} {value}"]),
    st.sampled_from(
        [
            "{} {value}", "{0} {value}", "{value!x}", "{value!r}", "{value:zz}", "{value:>99}", "{value[0]}", "{value",
            "value}",
        ]
    ),
    odd_text,
)
numbers = st.one_of(
    st.sampled_from([10**400, -(10**400), float("nan"), float("inf"), "nan", "inf", "0.5", True, None, 0, -1]),
    st.floats(),
    st.integers(),
    odd_text,
)
names = st.one_of(st.sampled_from(["Navy", "", " ", None, True, 3, 2.5, float("nan")]), scalars)
words = st.one_of(scalars, st.lists(odd_text, max_size=3))
values = st.one_of(scalars, st.fixed_dictionaries({"name": names}, optional={"synonyms": words, "prompts": words}))
optional_fields = {
    "templates": st.one_of(st.lists(templates, max_size=2), templates),
    "temperature": numbers,
    "min_probability": numbers,
    "region_weight": numbers,
}
# Two good values and one field off, so the checks behind the values list are reached; then anything at all.
near_specs = st.fixed_dictionaries(
    {
        "values": st.one_of(
            st.lists(st.sampled_from(["Red", "Blue", "Navy Blue", "é", "🙂"]), min_size=2, max_size=3, unique=True),
            st.lists(values, max_size=3).map(lambda extra: ["Red", "Blue", *extra]),
        )
    },
    optional=optional_fields,
)
specs = st.one_of(
    near_specs,
    st.lists(values, max_size=4),
    st.fixed_dictionaries(
        {},
        optional={
            "values": st.one_of(st.lists(values, max_size=4), st.dictionaries(scalars, words, max_size=4), scalars),
            "templates": st.one_of(st.lists(templates, max_size=3), templates, scalars),
            "temperature": numbers,
            "min_probability": numbers,
            "region_weight": numbers,
            "colours": scalars,
        },
    ),
    yaml_values,
)
attribute_names = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), short_text)
vocabularies = st.one_of(
    st.dictionaries(attribute_names, specs, max_size=3).map(lambda attributes: {"attributes": attributes}),
    st.dictionaries(attribute_names, specs, max_size=3),
    yaml_values,
)


@bounded(150)
@given(entry=values, spec=st.fixed_dictionaries({}, optional=optional_fields))
def test_any_value_entry_or_number_beside_a_good_value_is_usable_or_named(entry, spec):
    try:
        vocabulary = vocabulary_from_dict({"colour": {"values": ["Red", entry], **spec}}, origin="shop.yaml")
    except VocabularyError as exc:
        assert "shop.yaml: attribute 'colour'" in str(exc), str(exc)
        return
    assert_usable(vocabulary)


@bounded(50)
@given(
    names=st.lists(
        st.sampled_from([1, "1", 1.5, "1.5", None, "None", False, "False", "colour", " colour"]),
        min_size=1,
        max_size=4,
        unique=True,
    )
)
def test_attribute_names_that_print_alike_are_usable_or_named(names):
    # YAML keys need not be strings; two keys that print alike (1 and "1") would be one attribute name.
    try:
        vocabulary = vocabulary_from_dict({name: ["Red", "Blue"] for name in names}, origin="shop.yaml")
    except VocabularyError as exc:
        assert "shop.yaml" in str(exc), str(exc)
        return
    assert_usable(vocabulary)


def _dump(data, suffix: str) -> str:
    """YAML or JSON text of `data`; empty when the dumper itself refuses it (huge numbers, surrogates)."""
    try:
        return json.dumps(data) if suffix == ".json" else yaml.safe_dump(data, allow_unicode=True)
    except (ValueError, TypeError, yaml.YAMLError):
        return ""


def assert_usable(vocabulary: Vocabulary) -> None:
    """What tagging relies on: named attributes with two or more distinct values, each with prompts, and sane
    numbers."""
    assert vocabulary.attributes and len(set(vocabulary.names)) == len(vocabulary.names)
    for attribute in vocabulary.attributes:
        assert isinstance(attribute.name, str)
        assert len(attribute.values) >= 2 and len(set(attribute.value_names)) == len(attribute.values)
        for value in attribute.values:
            assert isinstance(value.name, str) and value.name.strip()
            assert value.prompts and all(isinstance(p, str) and p.strip() for p in value.prompts)
        assert math.isfinite(attribute.temperature) and attribute.temperature > 0
        for share in (attribute.min_probability, attribute.region_weight):
            assert share is None or 0.0 <= share <= 1.0


def usable_or_naming(origin: str, parse) -> None:
    """`parse()` gives a usable vocabulary, or a VocabularyError that names `origin`."""
    try:
        vocabulary = parse()
    except VocabularyError as exc:
        assert origin in str(exc), str(exc)
        return
    assert_usable(vocabulary)


@bounded(300)
@given(data=vocabularies)
def test_any_structure_is_a_vocabulary_or_an_error_naming_the_origin(data):
    usable_or_naming("shop.yaml", lambda: vocabulary_from_dict(data, origin="shop.yaml"))


@bounded(150)
@given(
    text=st.one_of(
        vocabularies.map(lambda v: _dump(v, ".yaml")), vocabularies.map(lambda v: _dump(v, ".json")), odd_text
    )
)
def test_any_vocabulary_text_is_a_vocabulary_or_an_error_naming_the_origin(text):
    # The text of POST /tag's `vocabulary` form field: YAML or JSON, written by whoever calls the API.
    usable_or_naming("form field 'vocabulary'", lambda: vocabulary_from_text(text, origin="form field 'vocabulary'"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("vocabularies")


vocabulary_texts = st.one_of(
    vocabularies.map(lambda v: _dump(v, ".yaml")), vocabularies.map(lambda v: _dump(v, ".json")),
    json_text(vocabularies), odd_text,
)


@bounded(150)
@given(suffix=st.sampled_from([".yaml", ".yml", ".json"]), raw=encoded(vocabulary_texts))
def test_any_vocabulary_file_loads_or_names_the_file(workdir, suffix, raw):
    path = workdir / f"colours{suffix}"
    path.write_bytes(raw)
    usable_or_naming("colours", lambda: load_vocabulary(path))


# ---- regressions: the exact inputs the properties found ------------------------------------------------------------
@pytest.mark.parametrize(
    "data, message",
    [
        # was: TypeError "'<' not supported between instances of 'NoneType' and 'bool'" (YAML keys null and false)
        ({"attributes": {None: {None: 0, False: 0}}}, r"shop.yaml: attribute 'None': unknown keys \[False, None\]"),
        # was: TypeError "'int' object is not iterable"
        (
            {"attributes": {None: {"templates": 1}}},
            r"shop.yaml: attribute 'None': templates must be a list of strings, got 1",
        ),
        # was: ValueError "Single '{' encountered in format string" (the string was split into one-character templates)
        (
            {"attributes": {None: {"templates": "{value}"}}},
            r"shop.yaml: attribute 'None': needs a list of at least two values",
        ),
        # was: OverflowError "int too large to convert to float"
        (
            {"attributes": {None: {"values": ["Red", "Blue"], "templates": [], "region_weight": 10**400}}},
            r"shop.yaml: attribute 'None': region_weight must be a number, got 1000",
        ),
        # was: accepted, a value named ''
        ({"colour": {"values": ["Red", {"name": ""}]}}, r"shop.yaml: attribute 'colour': empty value name"),
        # was: VocabularyError "attribute names repeat: ['1', '1']", naming no file
        ({1: ["Red", "Blue"], "1": ["Red", "Blue"]}, r"shop.yaml: attribute names repeat: \['1'\]"),
    ],
)
def test_finding_vocabulary_structures_raise_vocabulary_errors_naming_the_entry(data, message):
    with pytest.raises(VocabularyError, match=message):
        vocabulary_from_dict(data, origin="shop.yaml")


def test_finding_a_single_template_string_is_one_template():
    vocabulary = vocabulary_from_dict({"colour": {"values": ["Red", "Blue"], "templates": "a {value} shirt"}})
    assert vocabulary["colour"].values[0].prompts == ("a Red shirt",)


@pytest.mark.parametrize(
    "template",
    [
        "{",  # was: ValueError "Single '{' encountered in format string"
        "{value!x}",  # was: ValueError "Unknown conversion specifier x"
        "{} {value}",  # was: IndexError "Replacement index 0 out of range for positional args tuple"
        # would fill every prompt to a gigabyte (not found by the properties; refused with format specs)
        "{value:>1000000000}",
    ],
)
def test_finding_templates_that_cannot_fill_in_safely_are_refused(template):
    with pytest.raises(VocabularyError, match="must be a string using exactly one field"):
        vocabulary_from_dict({"colour": {"values": ["Red", "Blue"], "templates": [template]}}, origin="shop.yaml")


@pytest.mark.parametrize("temperature", [float("inf"), "nan", "inf", float("nan")])  # was: inf (found) and nan accepted
def test_finding_temperatures_must_be_finite(temperature):
    with pytest.raises(VocabularyError, match="temperature must be a finite number"):
        vocabulary_from_dict({"colour": {"values": ["Red", "Blue"], "temperature": temperature}}, origin="shop.yaml")


def test_finding_vocabulary_file_that_is_not_utf8_names_the_file(tmp_path):
    # was: UnicodeDecodeError "'utf-8' codec can't decode byte 0x80 in position 0"
    (tmp_path / "colours.yml").write_bytes(b"\x80")
    with pytest.raises(VocabularyError, match=r"colours.yml: not UTF-8 text"):
        load_vocabulary(tmp_path / "colours.yml")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "1" * 4400,
            "Exceeds the limit",
        ),  # was: ValueError out of yaml.safe_load (POST /tag answered it without naming the field)
        ("[" * 50_000, "maximum recursion depth"),  # was: RecursionError out of yaml.safe_load (POST /tag answered 500)
    ],
)
def test_finding_vocabulary_text_with_huge_number_or_deep_nesting_names_the_origin(text, message):
    with pytest.raises(VocabularyError, match=rf"form field 'vocabulary': not valid YAML: {message}"):
        vocabulary_from_text(text, origin="form field 'vocabulary'")
