"""Debian's Chromium driven by Playwright, one way for every browser test: a module skips without it, or fails under
VITRINE_REQUIRE_BROWSER (set by `.ci/run`, which installs it)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

CHROMIUM = "/usr/bin/chromium"
REQUIRE_BROWSER = "VITRINE_REQUIRE_BROWSER"
DESKTOP = (1280, 900)
PHONE = (390, 844)


def require_browser() -> ModuleType:
    """`playwright.sync_api`, at a browser test module's top; the module skips when Chromium or Playwright is
    missing."""
    if os.environ.get(REQUIRE_BROWSER):
        return importlib.import_module("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it and sets {REQUIRE_BROWSER})",
            allow_module_level=True,
        )
    return pytest.importorskip("playwright.sync_api")


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


def screenshot_folder(tmp_path: Path) -> Path:
    """$VITRINE_SCREENSHOTS, or the test's own tmp dir."""
    folder = Path(os.environ.get("VITRINE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
