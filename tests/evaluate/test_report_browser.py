"""The four `vitrine eval ... --report DIR` pages in real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): each loads from a file:// URL, every image renders, every link leads to a file. Full-page screenshots go to
$VITRINE_SCREENSHOTS (default: the test's tmp dir)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from tests.conftest import colour_triplets, colourway_rows, make_rows, write_folder, write_shards
from tests.support.browser import require_browser

from vitrine.cli import main

require_browser()

KINDS = ("zero-shot", "retrieval", "composed", "attributes")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """One report of each kind, made by the CLI with a small random model on tiny catalogs."""
    root = tmp_path_factory.mktemp("reports")
    rows = make_rows(20)
    write_folder(root / "cat", rows)
    write_shards(root / "cir", colourway_rows(("Puma", "Nike"), id_prefix="p/"), per_shard=8)
    colour_triplets(str(root / "cir"), str(root / "t.jsonl"))
    common = ["--model", "vitrine:small", "--no-progress"]
    commands = {
        "zero-shot": ["eval", "zero-shot", "--data", str(root / "cat"), "--field", "articleType"],
        "retrieval": ["eval", "retrieval", "--data", str(root / "cat")],
        "composed": [
            "eval", "composed", "--data", str(root / "cir"), "--triplets", str(root / "t.jsonl"), "--combiner", "sum",
            "--cache-dir", str(root / "cache"),
        ],
        "attributes": [
            "eval", "attributes", "--data", str(root / "cat"), "--attributes", "gender,baseColour,articleType",
        ],
    }
    for kind, argv in commands.items():
        assert main([*argv, *common, "--report", str(root / kind)]) == 0, kind
    return {kind: root / kind for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_report_renders_in_a_real_browser(kind, reports, browser, shots):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    answer = page.goto((reports[kind] / "index.html").as_uri())
    assert answer is not None and answer.ok
    page.wait_for_load_state("load")
    assert page.title() == f"vitrine eval {kind} report"
    assert page.locator("header h1").inner_text() == f"vitrine eval {kind}"
    images = page.locator("img").evaluate_all(
        "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.alt])"
    )
    assert images, "a report without pictures"
    broken = [src for src, complete, width, alt in images if not (complete and width > 0 and alt)]
    assert broken == [] and failed == []
    if kind in ("retrieval", "composed"):
        assert any(src.startswith("thumbs/") for src, *_ in images)
    links = page.locator("a[href]").evaluate_all("links => links.map(a => a.href)")
    assert links
    for href in links:
        url = urlparse(href)
        assert url.scheme == "file" and Path(unquote(url.path)).is_file(), href
    page.screenshot(path=str(shots / f"report-{kind}.png"), full_page=True)
    page.close()
