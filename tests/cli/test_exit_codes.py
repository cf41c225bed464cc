"""The CLI's exit codes: a user's error is one line and exit 2, the machine's exit 1, and a bug in vitrine its
traceback, a line asking for a report, and exit 70; never a traceback for a user's error."""

from __future__ import annotations

import json

import pytest

import vitrine.models
from vitrine.cli import main
from vitrine.errors import INTERNAL_EXIT_CODE, ISSUES_URL
from vitrine.index.store import StoreUnavailable


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_an_internal_bug_prints_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    def broken(pattern=None):
        return 1 / 0

    monkeypatch.setattr(vitrine.models, "model_entries", broken)
    code, err = run(capsys, "models")
    assert code == INTERNAL_EXIT_CODE == 70
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
    assert "this is a bug" in err and ISSUES_URL in err and "vitrine models" in err


def test_an_unavailable_server_is_exit_1_without_a_traceback(monkeypatch, capsys):
    def down(pattern=None):
        raise StoreUnavailable("milvus:http://localhost:1: the server is down")

    monkeypatch.setattr(vitrine.models, "model_entries", down)
    code, err = run(capsys, "models")
    assert code == 1 and err.strip() == "error: milvus:http://localhost:1: the server is down"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["models", "--pattern", "no-such-*"], "no model or backend matches 'no-such-*'"),
        (["search", "--index", "{tmp}/no-index", "--text", "red dress"], "no-index"),
        (["schema", "infer", "{tmp}/no-catalog"], "no-catalog"),
        (["export", "onnx", "--model", "vitrine:no-such-model", "--out", "{tmp}/out"], "no-such-model"),
        (["train", "clip", "--config", "{tmp}/bad.json"], "epochz"),
    ],
)
def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys, argv, says):
    (tmp_path / "bad.json").write_text(json.dumps({"epochz": 1}))
    code, err = run(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2, err
    assert err.startswith("error: ") and says in err and "Traceback" not in err
