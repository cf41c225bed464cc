"""One query path: the same 20 queries through HTTP (`POST /search`), `/search/batch`, the CLI (`vitrine search --json`)
and the Python API (`vitrine.Index.rank`) get the same ids, the same relevance judgement, the same exclusions and the
same errors."""

from __future__ import annotations

import base64
import json

import pytest
from tests.conftest import built_index

import vitrine
from vitrine.cli import main

# text, image (a catalog product's photo), modification, filters, k and ranking options: plain, filtered, paged, by
# mode, image and composed queries, refused filters, refused combinations and queries nothing in the catalog matches
QUERIES = [
    {"text": "red t-shirt"},
    {"text": "blue jeans for men", "k": 5},
    {"text": "a dress", "filters": {"gender": ["Women"]}},
    {"text": "shirt", "filters": {"gender": ["Men"], "baseColour": ["Red", "Blue"]}},
    {"text": "jeans", "mode": "lexical"},
    {"text": "green casual shirt", "mode": "vector", "k": 4},
    {"text": "red t-shirt", "k": 3, "offset": 2},
    {"image": "1000"},
    {"image": "1003", "filters": {"gender": ["Men"]}, "k": 4},
    {"image": "1005", "exclude_reference": False, "k": 3},
    {"image": "1000", "modification": "in blue"},
    {"image": "1002", "modification": "for women", "filters": {"articleType": ["Tshirts", "Jeans"]}, "k": 3},
    {"text": "shirt", "filters": {"gender": ["women"]}},
    {"text": "shirt", "filters": {"colour": ["Red"]}},
    {"image": "1001", "filters": {"articleType": ["tshirts"]}},
    {"text": "quantum physics lecture notes"},
    {"text": "zzqx vvkw"},
    {"text": "red", "modification": "in blue"},
    {"text": "   "},
    {"text": "red t-shirt", "filters": {"gender": ["Men"]}, "offset": 30},
]
OPTIONS = ("mode", "offset", "exclude_reference")


@pytest.fixture(scope="module")
def index(tmp_path_factory, small_model) -> str:
    return built_index(tmp_path_factory.mktemp("one-path"), small_model, 24)


def image_path(index: str, product: str) -> str:
    return f"{index}/../catalog/images/{product}.jpg"


def outcome(answer: dict) -> dict:
    """What every surface must agree on."""
    return {
        "ids": [r["id"] for r in answer["results"]], "relevance": answer["relevance"],
        "excluded": answer["query"]["excluded"], "mode": answer["query"]["mode"], "total": answer["total"],
    }


def refused(message: str) -> dict:
    return {"error": message}


def http_body(index: str, query: dict) -> dict:
    body = {
        "k": query.get("k", 10),
        "filters": query.get("filters", {}),
        **{o: query[o] for o in OPTIONS if o in query},
    }
    for name in ("text", "modification"):
        if name in query:
            body[name] = query[name]
    if "image" in query:
        with open(image_path(index, query["image"]), "rb") as handle:
            body["image"] = base64.b64encode(handle.read()).decode()
    return body


def by_http(http, index: str, query: dict) -> dict:
    response = http.post("/search", json=http_body(index, query))
    if response.status_code != 200:
        assert response.status_code == 400, response.text
        return refused(response.json()["error"]["message"])
    return outcome(response.json())


def by_cli(capsys, index: str, query: dict) -> dict:
    argv = ["search", "--index", index, "-k", str(query.get("k", 10)), "--combiner", "sum", "--json"]
    if "text" in query:
        argv += ["--text", query["text"]]
    if "image" in query:
        argv += ["--image", image_path(index, query["image"])]
    if "modification" in query:
        argv += ["--modify", query["modification"]]
    for name, values in query.get("filters", {}).items():
        argv += [arg for value in values for arg in ("--filter", f"{name}={value}")]
    if "mode" in query:
        argv += ["--mode", query["mode"]]
    if "offset" in query:
        argv += ["--offset", str(query["offset"])]
    if query.get("exclude_reference") is False:
        argv += ["--keep-reference"]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a choice it does not know before vitrine sees it
        code = exc.code
    out, err = capsys.readouterr()
    if code != 0:
        assert code == 2, err
        return refused(err.strip().splitlines()[-1].removeprefix("error: "))
    return outcome(json.loads(out.strip().splitlines()[-1]))


def by_python(engine, index: str, query: dict) -> dict:
    from vitrine.search.answer import answer

    options = {o: query[o] for o in OPTIONS if o in query}
    image = image_path(index, query["image"]) if "image" in query else None
    try:
        ranked = engine.rank(
            query.get("text"), image, query.get("modification"), query.get("filters"), query.get("k", 10), **options
        )
    except ValueError as exc:
        return refused(str(exc))
    from vitrine.search import Query

    echo = Query(
        text=query.get("text"),
        image=None if image is None else vitrine.api.load_image(image),
        modification=query.get("modification"),
        k=query.get("k", 10),
        filters=query.get("filters", {}),
        **options,
    )
    return outcome(answer(echo, ranked))


def by_batch(http, index: str) -> list[dict]:
    response = http.post(
        "/search/batch", json={"queries": [http_body(index, q) for q in QUERIES], "on_error": "report"}
    )
    assert response.status_code == 200, response.text
    out = []
    for i, item in enumerate(response.json()["results"]):
        if "error" in item:  # the same message, after the query's place in the batch
            place, _, message = item["error"]["message"].partition(": ")
            assert place == f"queries[{i}]", item
            out.append(refused(message))
        else:
            out.append(outcome(item))
    return out


def test_every_surface_gives_the_same_answer_to_the_same_20_queries(index, http, capsys):
    assert len(QUERIES) == 20
    with vitrine.Index(index) as python:
        python.engine.combiner = "sum"
        answers = {
            "http": [by_http(http, index, q) for q in QUERIES], "cli": [by_cli(capsys, index, q) for q in QUERIES],
            "python": [by_python(python, index, q) for q in QUERIES], "batch": by_batch(http, index),
        }
    for i, query in enumerate(QUERIES):
        seen = {surface: answers[surface][i] for surface in answers}
        http_answer = seen["http"]
        if "modification" in query and "image" not in query:
            # the CLI's own flag names aside, the message is the one Query gives everywhere
            assert http_answer == refused("a modification changes an image query: give an image too")
        assert all(answer == http_answer for answer in seen.values()), (
            f"query {i} {query}: {json.dumps(seen, indent=1)}"
        )


def test_the_20_queries_cover_what_they_claim(index, http):
    answers = [by_http(http, index, q) for q in QUERIES]
    errors = [a for a in answers if "error" in a]
    assert len(errors) == 5  # three refused filters, text + modification, blank text
    assert answers[19]["ids"] == [] and answers[19]["total"] > 0  # paged past the end
    assert answers[7]["excluded"] == ["1000"] and "1000" not in answers[7]["ids"]  # its own photo, sent as an upload
    assert answers[9]["excluded"] == [] and "1005" in answers[9]["ids"]  # exclude_reference=false keeps it
    assert answers[10]["excluded"] == ["1000"]  # a composed query's reference is found the same way
    # words the catalog lacks are judged on similarity alone (the tiny random model cannot tell them apart: the point
    # here is that every surface judges them alike; tests/ranking/test_relevance.py checks the judgement itself)
    assert all(a["relevance"]["words_named"] is False and a["relevance"]["level"] is not None for a in answers[15:17])
    assert answers[0]["relevance"]["words_named"] is True and answers[0]["relevance"]["close_match"] is True
