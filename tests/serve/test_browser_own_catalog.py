"""The web UI on a shop's own catalog (`sku,name,photo,colour,category,sex,price`, no KAGL column), in real headless
Chromium at desktop and phone size: the chips are the catalog's own categorical columns (predicted tags marked as
such), the "no close match" page shows the notice alone until asked, and a phone reaches every chip."""

from __future__ import annotations

import pytest
from tests.conftest import make_rows, write_stranger_folder
from tests.serve.test_browser import result_ids, served
from tests.support.browser import DESKTOP, PHONE, require_browser

from vitrine.ranking import Calibration
from vitrine.serve.prepare import prepare_index
from vitrine.serve.settings import ServeSettings

require_browser()

ROWS = {f"SKU-{row['id']}": row for row in make_rows(12)}
OWN_FACETS = ["colour", "category", "sex"]  # the categorical columns, in the file's order; price is a number
SIZES = [DESKTOP, PHONE]


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """One server for the module over the shop's catalog, indexed with the small test model (its schema inferred)."""
    root = tmp_path_factory.mktemp("own-catalog")
    write_stranger_folder(root / "shop", make_rows(12))
    settings = ServeSettings(index=str(root / "index"), tag_model="vitrine:small", combiner="sum")
    prepare_index(str(root / "shop"), settings, "vitrine:small", progress=False)
    with served(settings) as url:
        yield url


@pytest.fixture(params=SIZES, ids=["desktop", "phone"])
def page(request, browser, own_server):
    width, height = request.param
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{own_server}/?k=5")
    page.wait_for_selector(".chip-group")
    yield page
    context.close()


def name_of(page) -> str:
    return "desktop" if page.viewport_size["width"] > 600 else "phone"


def groups(page, predicted: bool) -> list[str]:
    return page.locator(f".chip-group[data-predicted='{str(predicted).lower()}']").evaluate_all(
        "gs => gs.map(g => g.dataset.field)"
    )


def search(page, action) -> dict:
    """Run `action` and return the /search answer it triggers, once the page has shown it."""
    with page.expect_response(lambda r: r.url.endswith("/search") and r.request.method == "POST") as answer:
        action()
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function("!document.getElementById('status').textContent.startsWith('Searching')")
    return answer.value.json()


def visible_chips(page) -> int:
    return page.locator("#chips .chip").evaluate_all("cs => cs.filter(c => c.checkVisibility()).length")


def test_the_chips_are_the_catalogs_own_columns(page, shots):
    assert groups(page, predicted=False) == OWN_FACETS  # price (a number) is no chip group
    predicted = groups(page, predicted=True)
    assert "price" not in predicted and not set(predicted) & set(OWN_FACETS)
    schema = page.evaluate("fetch('/schema').then(r => r.json())")
    assert schema["source"] == "index" and schema["attributes"] == ["colour", "category", "sex", "price"]
    for facet in schema[
        "facets"
    ]:  # the tagger's stand-ins for missing columns, and its fill-ins of blank cells, say so
        label = page.locator(f".chip-group[data-field='{facet['field']}'] .label")
        if label.count():
            marker = "(predicted)" if facet["predicted"] else "(partly predicted)" if facet["filled"] else ""
            assert " ".join(label.text_content().split()) == f"{facet['field']} {marker}".strip(), facet
    fields = page.locator(".chip-group").evaluate_all("gs => gs.map(g => g.dataset.field)")
    assert fields[:3] == OWN_FACETS  # the catalog's own columns first
    sexes = page.locator(".chip[data-field='sex']").evaluate_all("cs => cs.map(c => c.dataset.value)")
    assert sexes == ["Men", "Women"]
    colours = page.locator(".chip[data-field='colour']").evaluate_all("cs => cs.map(c => c.dataset.value)")
    assert colours and "NA" not in colours and "" not in colours  # a blank or NA cell is no value to filter by
    page.screenshot(path=str(shots / f"own-{name_of(page)}-start.png"), full_page=True)

    # a chip of the shop's own column filters by it
    page.fill("#search-input", "tshirts")  # a catalog value: a close match whatever the random test model scores
    search(page, lambda: page.click("#search-button"))
    women = search(page, page.locator(".chip[data-field='sex'][data-value='Women']").click)
    assert women["query"]["filters"] == {"sex": ["Women"]} and women["total"] == 6
    assert all(ROWS[i]["gender"] == "Women" for i in result_ids(page))
    assert page.is_visible("#active-filters") and "sex: Women" in page.inner_text("#active-filters")

    # cards carry no raw ranking score; the details panel lists the shop's columns in its order, price included
    assert "score" not in page.inner_text("#results").lower()
    first = result_ids(page)[0]
    search(page, lambda: page.click(f"#results .card[data-id='{first}']"))
    page.wait_for_selector("#details:not([hidden]) #details-attributes dt")
    shown = page.locator("#details-attributes dt").all_inner_texts()
    assert [c for c in ["colour", "category", "sex", "price"] if c in shown] == shown and "price" in shown
    page.screenshot(path=str(shots / f"own-{name_of(page)}-details.png"), full_page=False)


def test_no_close_match_shows_the_notice_alone_until_asked(page, monkeypatch, shots):
    # A calibration under which no catalog title scores below any query: nothing is a close match (unless every
    # word names a catalog value). The test model is random, so the judgement is forced; its measure is a benchmark's.
    monkeypatch.setattr(Calibration, "level", lambda self, *query, **how: 0.0)
    page.fill("#search-input", "zqxv blorp")
    body = search(page, lambda: page.click("#search-button"))
    assert body["relevance"]["close_match"] is False and body["total"] == 12
    assert "No close match" in page.inner_text("#notice") and page.is_visible("#show-anyway")
    assert page.is_hidden("#results") and page.is_hidden("#more-results") and page.is_hidden("#chips")
    assert visible_chips(page) == 0
    assert "results" not in page.inner_text("#status") and "12" not in page.inner_text("body")  # no stale count
    page.screenshot(path=str(shots / f"own-{name_of(page)}-no-close-match.png"), full_page=True)

    page.click("#show-anyway")
    assert page.is_hidden("#notice") and page.is_visible("#results") and len(result_ids(page)) == 5
    assert page.is_visible("#more-results") and page.is_visible("#chips") and visible_chips(page) > 0
    assert groups(page, predicted=False) == OWN_FACETS
    status = page.inner_text("#status")
    assert "5 of 12 results" in status and "none of them is a close match" in status
    counts = page.locator(".chip[data-field='sex'] .count").all_inner_texts()
    assert sum(int(c) for c in counts) == 12  # the counts are this answer's, over all 12 nearest products
    page.screenshot(path=str(shots / f"own-{name_of(page)}-shown-anyway.png"), full_page=True)

    # a query whose words name the catalog's values is a match again: the page shows everything at once
    page.fill("#search-input", "women")
    body = search(page, lambda: page.click("#search-button"))
    assert body["relevance"]["close_match"] is True
    assert page.is_hidden("#notice") and page.is_visible("#results") and page.is_visible("#chips")


def test_every_chip_is_reachable(page, shots):
    """A desktop wraps the chip rows; a phone scrolls each one sideways, faded at the cut edge until scrolled to its
    end."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways page scroll
    width = page.viewport_size["width"]
    overflowing = 0
    for field in page.locator(".chip-group").evaluate_all("gs => gs.map(g => g.dataset.field)"):
        row = page.locator(f".chip-group[data-field='{field}'] .chip-row")
        last = page.locator(f".chip-group[data-field='{field}'] [data-more]")
        cut = row.evaluate("r => r.scrollWidth > r.clientWidth + 1")
        assert (
            row.evaluate("r => r.classList.contains('more-right')") == cut
        )  # the fade is there exactly when chips are cut off
        overflowing += cut
        last.scroll_into_view_if_needed()
        box = last.bounding_box()
        assert 0 <= box["x"] and box["x"] + box["width"] <= width + 1, (field, box)
        if cut:
            page.wait_for_function(
                "r => !r.classList.contains('more-right') && r.classList.contains('more-left')",
                arg=row.element_handle(),
            )
    if width < 600:
        assert overflowing, "the phone test should see a cut-off chip row"
        page.evaluate("document.querySelectorAll('.chip-row').forEach(r => r.scrollLeft = 0)")
    page.screenshot(path=str(shots / f"own-{name_of(page)}-chips.png"), full_page=False)
    # the last chip of the last group opens its type-ahead
    field = page.locator(".chip-group").last.get_attribute("data-field")
    page.locator(f".chip-group[data-field='{field}'] [data-more]").click()
    page.wait_for_selector(f"input[data-typeahead='{field}']")
