"""Property tests for serve settings: any JSON text, file or environment gives typed settings or a ValueError naming the
field."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.strategies import bounded, dumps, encoded, json_text, json_values, odd_text

from vitrine.serve.settings import ENV_PREFIX, ServeSettings, load_settings

FIELDS = {f.name: f.type for f in fields(ServeSettings)}
CHECKS = {
    "int": lambda v: type(v) is int, "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
}
field_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            0, 1, -1, 2, 8, 10**30, 1.5, float("nan"), float("inf"), True, "5", "milvus:x.db", "milvus:http://h:19530",
            "long-enough-token", "short",
        ]
    ),
)
documents = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(sorted(FIELDS)), odd_text), field_values, max_size=4), json_values
)


def assert_typed(settings: ServeSettings) -> None:
    for name, kind in FIELDS.items():
        if kind in CHECKS:
            assert CHECKS[kind](getattr(settings, name)), (name, getattr(settings, name))


def names_a_field(message: str) -> bool:
    return any(name in message for name in FIELDS) or "Milvus Lite" in message


@bounded(250)
@given(text=json_text(documents))
def test_any_settings_json_gives_typed_settings_or_names_the_field(text):
    # VITRINE_SERVE_SETTINGS hands settings to the workers as this JSON; a config file holds the same.
    try:
        settings = ServeSettings.from_json(text)
    except ValueError as exc:
        assert names_a_field(str(exc)) or "serve settings" in str(exc), str(exc)
        return
    assert_typed(settings)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("settings")


environments = st.dictionaries(
    st.one_of(st.sampled_from([ENV_PREFIX + name.upper() for name in FIELDS]), st.just("VITRINE_OTHER")),
    st.one_of(
        odd_text,
        st.sampled_from(["0", "3", "-2", " 7 ", "1_000", "１２", "9" * 5000, "milvus:x.db", "long-enough-token"]),
    ),
    max_size=4,
)


@bounded(200)
@given(
    raw=st.one_of(st.none(), encoded(json_text(documents)), st.builds(lambda d: dumps(d).encode(), documents)),
    environ=environments,
)
def test_any_settings_file_and_environment_give_typed_settings_or_name_the_source(workdir, raw, environ):
    path = None
    if raw is not None:
        path = workdir / "serve.json"
        path.write_bytes(raw)
    try:
        settings = load_settings(str(path) if path else None, environ=environ)
    except ValueError as exc:
        message = str(exc)
        assert "serve.json" in message or names_a_field(message) or any(name in message for name in environ), message
        return
    assert_typed(settings)


# ---- regressions: the exact inputs the properties found ------------------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        ("NaN", "serve settings: expected a JSON object, got float"),  # was: TypeError "'float' object is not iterable"
        (
            '""',
            "serve settings: expected a JSON object, got str",
        ),  # was: TypeError "argument after ** must be a mapping, not str"
        ("'", "serve settings: not valid JSON (Expecting value"),  # was: a bare JSONDecodeError naming nothing
        ("[" * 50_000 + "]" * 50_000, "serve settings: not valid JSON (nested too deeply"),  # was: RecursionError
        # was: accepted, combiner None
        ('{"combiner": null}', "serve settings: field 'combiner' must be a string, got None"),
        # The same type check, inputs checked by hand: were TypeError ('<' between str and int), accepted True,
        # AttributeError.
        ('{"max_k": "5"}', "serve settings: field 'max_k' must be a whole number, got '5'"),
        ('{"workers": true}', "serve settings: field 'workers' must be a whole number, got True"),
        ('{"index": 5, "workers": 2}', "serve settings: field 'index' must be a string, got 5"),
    ],
)
def test_finding_bad_settings_json_names_the_setting(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ServeSettings.from_json(text)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "serve.json: not valid JSON (Expecting value"),  # was: a bare JSONDecodeError
        # was: UnicodeDecodeError naming no file
        (b"\xff", "serve.json: not UTF-8 text ('utf-8' codec can't decode byte 0xff"),
    ],
)
def test_finding_bad_settings_file_names_the_file(tmp_path, raw, message):
    (tmp_path / "serve.json").write_bytes(raw)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_settings(str(tmp_path / "serve.json"), environ={})
