"""A filter no product can match is refused in the same words by HTTP (400), the CLI (`error:`, exit 2) and the Python
API."""

from __future__ import annotations

import pytest
from tests.conftest import built_index

import vitrine
from vitrine.cli import main
from vitrine.ranking import FilterError
from vitrine.ranking.filters import check_filters

REFUSED = [
    pytest.param(
        ["gender=women"], "no product has gender='women'; did you mean 'Women', 'Men'?", id="value-near-match"
    ),
    pytest.param(
        ["colour=Red"],
        "unknown filter field(s) ['colour']; this catalog has: articleType, baseColour, gender, "
        "masterCategory, season, subCategory, usage, year",
        id="unknown-field",
    ),
    pytest.param(
        ["gender=Men", "articleType=tshirts"],
        "no product has articleType='tshirts'; did you mean 'Tshirts'?",
        id="second-field-near-match",
    ),
]


@pytest.fixture(scope="module")
def index(tmp_path_factory, small_model) -> str:
    return built_index(tmp_path_factory.mktemp("filters"), small_model, 12)


def as_dict(specs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        out.setdefault(name, []).append(value)
    return out


def http_message(http, specs: list[str]) -> str:
    response = http.post("/search", json={"text": "shirt", "filters": as_dict(specs)})
    assert response.status_code == 400, response.text
    return response.json()["error"]["message"]


@pytest.mark.parametrize("specs, message", REFUSED)
def test_http_cli_and_python_refuse_a_filter_in_the_same_words(index, http, capsys, specs, message):
    assert http_message(http, specs) == message
    argv = ["search", "--index", index, "--text", "shirt"] + [arg for spec in specs for arg in ("--filter", spec)]
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    with vitrine.Index(index) as python, pytest.raises(FilterError) as refused:
        python.search(text="shirt", filters=as_dict(specs))
    assert str(refused.value) == message
    with vitrine.Index(index) as python, pytest.raises(FilterError) as by_image:  # image queries are checked too
        python.search(image=f"{index}/../catalog/images/1000.jpg", filters=as_dict(specs))
    assert str(by_image.value) == message


def test_a_value_with_no_near_match_names_the_commonest_in_the_same_words_everywhere(index, http, capsys):
    with (
        vitrine.Index(index) as python,
        pytest.raises(FilterError, match=r"^no product has gender='Nobody'; its commonest values: 'Men', 'Women'$"),
    ):
        python.search(text="shirt", filters={"gender": "Nobody"})
    assert (
        http_message(http, ["gender=Nobody"]) == "no product has gender='Nobody'; its commonest values: 'Men', 'Women'"
    )


def test_filters_that_products_match_pass_and_predicted_tags_are_filterable_but_not_listed():
    values = {"gender": [("Men", 3), ("Women", 2)], "predicted_colour": [("Red", 5)]}
    fields = {"gender", "predicted_colour", "predicted_fields"}
    check_filters({"gender": ["Men", "Women"], "predicted_colour": ["Red"]}, fields, values)
    check_filters({}, fields, values)
    with pytest.raises(FilterError, match=r"unknown filter field\(s\) \['size'\]; this catalog has: gender$"):
        check_filters({"size": ["M"]}, fields, values)
    assert issubclass(FilterError, ValueError)  # the CLI's exit 2, and what callers of the engine already catch
