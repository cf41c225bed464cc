"""`vitrine.errors`: one hierarchy whose every class has a code, a status and an exit code that fit together, whose
every code (class attributes and `code=` arguments alike) the README's error table lists, and nothing more."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from tests.support.modules import import_every_module

from vitrine.errors import (
    ENVIRONMENT_EXIT_CODE,
    USER_EXIT_CODE,
    Conflict,
    InvalidInput,
    NotFound,
    Unavailable,
    VitrineError,
    error_classes,
)
from vitrine.serve.errors import HTTP_CODES, INTERNAL_CODE

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "vitrine"


def all_error_classes() -> list[type[VitrineError]]:
    import_every_module()
    return [VitrineError, *error_classes()]


def codes_in_source() -> set[str]:
    """Every code the source gives: `code = "..."` (or `code, status = ...`) in a class, and `code="..."` (or
    `unknown_code`) in a call."""
    found = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):  # code = "x", or code, status = "x", 404
                for target in node.targets:
                    pairs = [(target, node.value)]
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        pairs = list(zip(target.elts, node.value.elts))
                    found |= {
                        value.value
                        for name, value in pairs
                        if getattr(name, "id", None) == "code" and isinstance(value, ast.Constant)
                    }
            elif isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg in ("code", "unknown_code") and isinstance(keyword.value, ast.Constant):
                        found.add(keyword.value.value)
                if getattr(node.func, "id", None) == "Registry" and len(node.args) >= 2:
                    found.add(node.args[1].value)
    return found


def readme_table_codes() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- errors:begin" in text, "the README has no error table (<!-- errors:begin --> ... end)"
    table = text.split("<!-- errors:begin", 1)[1].split("-->", 1)[1].split("<!-- errors:end -->", 1)[0]
    return set(re.findall(r"`([a-z][a-z0-9_]*)`", table))


def test_every_class_has_a_code_status_and_exit_code_that_fit():
    for cls in all_error_classes():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code), cls
        assert 400 <= cls.status <= 599, cls
        if cls.status < 500:
            assert cls.exit_code == USER_EXIT_CODE, f"{cls.__name__}: a 4xx is the user's to fix"
        else:
            assert cls.exit_code == ENVIRONMENT_EXIT_CODE, f"{cls.__name__}: a 5xx is the machine's"


@pytest.mark.parametrize(
    ("cls", "builtin"), [(InvalidInput, ValueError), (NotFound, LookupError), (Unavailable, RuntimeError)]
)
def test_library_callers_that_caught_builtins_still_catch_them(cls, builtin):
    with pytest.raises(builtin):
        raise cls("x")


def test_a_body_carries_the_code_and_a_prefix_keeps_it():
    error = Conflict("the index is locked", code="index_locked")
    assert error.body() == {"error": {"status": 409, "code": "index_locked", "message": "the index is locked"}}
    moved = error.prefixed("queries[2]: ")
    assert type(moved) is Conflict and moved.code == "index_locked" and str(moved) == "queries[2]: the index is locked"
    assert str(error) == "the index is locked"  # the original is untouched


def test_the_readme_error_table_lists_every_code_and_only_those():
    all_error_classes()
    given = codes_in_source() | set(HTTP_CODES.values()) | {INTERNAL_CODE}
    listed = readme_table_codes()
    assert not given - listed, f"codes missing from the README's error table: {sorted(given - listed)}"
    assert not listed - given, f"the README's error table lists codes nothing raises: {sorted(listed - given)}"
