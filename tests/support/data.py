"""Where the shared data lies, and the one mark for tests that read it.

Without `../shared/data` a marked test skips; with `VITRINE_REQUIRE_DATA=1` (set by `.ci/run`) it fails instead, so a
check of the shipped model cannot "pass" by skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
KAGL = SHARED_DATA / "kagl"
HIRES = SHARED_DATA / "kagl-hires"
REQUIRE_DATA = "VITRINE_REQUIRE_DATA"


def needs_data(*relative: str) -> pytest.MarkDecorator:
    """Mark a test (or, as `pytestmark`, a module) as reading these paths under ../shared/data."""
    return pytest.mark.needs_data(*relative)


def missing_data(item: pytest.Item) -> list[str]:
    """The paths an item's `needs_data` marks name that do not exist."""
    return [path for mark in item.iter_markers("needs_data") for path in mark.args if not (SHARED_DATA / path).exists()]


def check_data(item: pytest.Item) -> None:
    """Skip (or, under VITRINE_REQUIRE_DATA, fail) an item whose data is missing."""
    missing = missing_data(item)
    if not missing:
        return
    reason = f"needs ../shared/data/{', '.join(missing)}"
    if os.environ.get(REQUIRE_DATA):
        pytest.fail(f"{REQUIRE_DATA} is set, but {reason} is missing", pytrace=False)
    pytest.skip(reason)
