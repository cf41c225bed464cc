"""The web UI in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): search, upload, click,
modify, filter, and a phone-sized screen. Screenshots go to $VITRINE_SCREENSHOTS (default: the test's tmp dir)."""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import COLOURS, jpeg_bytes, make_rows

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists() and not os.environ.get("VITRINE_REQUIRE_BROWSER"):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it and sets VITRINE_REQUIRE_BROWSER)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")

ROWS = {row["id"]: row for row in make_rows(12)}


@pytest.fixture
def live_server(settings):
    import uvicorn

    from vitrine.serve.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # poll readiness; no fixed sleep
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    app.state.service.close()


@pytest.fixture
def page(live_server):
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(live_server)
        yield page
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("VITRINE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def result_ids(page) -> list[str]:
    return page.locator("#results .card").evaluate_all("cards => cards.map(c => c.dataset.id)")


def wait_for_search(page, action, kind: str | None = None) -> None:
    """Run `action` and wait for the /search answer it triggers (and, with `kind`, the query kind it reports)."""
    with page.expect_response(lambda r: r.url.endswith("/search") and r.request.method == "POST") as answer:
        action()
    assert answer.value.status == 200, answer.value.text()
    if kind:
        page.wait_for_function(f"document.body.dataset.queryKind === '{kind}'")
    page.wait_for_function("!document.getElementById('status').textContent.startsWith('Searching')")


def test_search_upload_click_modify_and_filter_in_a_real_browser(page, tmp_path, shots):
    page.wait_for_selector(".chip[data-field='gender'][data-value='Women']")
    # 1. a text query fills the grid with product cards
    page.fill("#search-input", "a red t-shirt")
    wait_for_search(page, lambda: page.click("#search-button"), "text")
    text_ids = result_ids(page)
    assert len(text_ids) == 12 and set(text_ids) == set(ROWS)
    page.wait_for_function("[...document.querySelectorAll('#results .card img')].slice(0, 4).every(i => i.complete && i.naturalWidth > 0)")
    assert "results for \"a red t-shirt\"" in page.inner_text("#status")

    # 2. uploading an image ranks the products with that exact picture first
    upload = tmp_path / "green.jpg"
    upload.write_bytes(jpeg_bytes(COLOURS["Green"]))
    wait_for_search(page, lambda: page.set_input_files("#file-input", str(upload)), "image")
    image_ids = result_ids(page)
    assert {ROWS[i]["baseColour"] for i in image_ids[:2]} == {"Green"}  # two green products share the picture
    assert page.is_visible("#reference")

    # 3. clicking a result makes it the reference ("more like this") and shows its predicted tags
    clicked = next(i for i in image_ids if ROWS[i]["baseColour"] == "Blue")
    wait_for_search(page, lambda: page.click(f"#results .card[data-id='{clicked}']"), "image")
    similar = result_ids(page)
    assert ROWS[similar[0]]["baseColour"] == "Blue" and similar != image_ids
    assert "More like" in page.inner_text("#reference-label")
    page.wait_for_selector("#details:not([hidden]) #details-tags dt")
    assert page.inner_text("#details-id") == f"id {clicked}"
    assert "gender" in page.inner_text("#details-tags")
    page.screenshot(path=str(shots / "desktop-more-like-this.png"), full_page=True)
    page.click("#close-details")

    # 4. a modification turns it into a composed query with a different ranking
    scores_before = page.locator("#results .card .score").all_inner_texts()
    page.fill("#modification-input", "in black")
    wait_for_search(page, lambda: page.click("#apply-button"), "composed")
    assert 'image + "in black"' in page.inner_text("#status")
    assert page.locator("#results .card .score").all_inner_texts() != scores_before

    # 5. a filter chip keeps only matching products, and toggling it off brings the rest back
    chip = page.locator(".chip[data-field='gender'][data-value='Women']")
    wait_for_search(page, chip.click, "composed")
    women = result_ids(page)
    assert chip.get_attribute("aria-pressed") == "true"
    assert women and len(women) == 6 and all(ROWS[i]["gender"] == "Women" for i in women)
    page.screenshot(path=str(shots / "desktop-composed-filtered.png"), full_page=True)
    wait_for_search(page, chip.click, "composed")
    assert len(result_ids(page)) == 12

    # 6. errors from the API reach the page as text, not as a broken grid
    page.fill("#modification-input", "x" * 101)  # the test server allows 100 characters
    page.evaluate("document.getElementById('modification-input').removeAttribute('maxlength')")
    page.fill("#modification-input", "x" * 101)
    page.click("#apply-button")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "the limit is 100" in page.inner_text("#status")


def test_the_page_is_usable_on_a_phone_sized_screen(page, shots):
    page.set_viewport_size({"width": 375, "height": 740})
    page.wait_for_selector(".chip")
    page.fill("#search-input", "a blue dress")
    wait_for_search(page, lambda: page.click("#search-button"), "text")
    first = result_ids(page)[0]
    wait_for_search(page, lambda: page.click(f"#results .card[data-id='{first}']"), "image")
    page.click("#close-details")
    assert page.is_visible("#modification-input")
    page.screenshot(path=str(shots / "phone-more-like-this.png"), full_page=True)
    wide = page.evaluate("[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName + '#' + e.id + '.' + e.className)")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), wide  # no sideways scrolling
    boxes = [page.locator("#results .card").nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["width"] < 200  # two columns side by side
    assert page.locator("#apply-button").bounding_box()["x"] + 10 < 375


def test_the_api_docs_render_with_no_network_but_the_app(page, live_server):
    page.goto(f"{live_server}/docs")
    title = page.wait_for_selector(".swagger-ui .info .title")
    assert "vitrine" in title.inner_text()
    page.wait_for_selector("text=/search")
