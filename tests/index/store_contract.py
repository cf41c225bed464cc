"""One conformance suite for every vector store backend: FAISS (embedded), Milvus Lite and a Milvus server. Its test
files name the backends they run it on (test_store_conformance.py: the embedded ones; test_store_milvus_server.py: the
server, in a file of its own so that it runs beside the others).

The server is tests/support/milvus_server.py's, shared by the session; each test's stores are collections of its own
there.
Each test runs once per backend and holds every one to the same contract: writes visible to the next search,
exact attribute filters (however selective), values matched literally, missing values read back missing, persistence,
model-mismatch refusal, crash-resume of `vitrine index build`, and hybrid ranking that agrees with the embedded
store's wherever the backend has BM25 (a server before Milvus 2.5 runs it as vector and says so).
"""

import hashlib
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from tests.conftest import make_rows, require_scale, write_shards
from tests.support.milvus_server import drop_collections

from vitrine.index.store import IndexMismatchError
from vitrine.index.stores import open_store

MODEL, DIM = "vitrine:test", 8


def unit(rng, n, dim=DIM):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def meta(i):
    return {
        "title": f"item {i}", "gender": ["Men", "Women"][i % 2], "articleType": ["Shirts", "Jeans", "Watches"][i % 3],
    }


def backend_fixture(*names: str):
    """The `backend` fixture of a conformance file: the suite runs once per backend it names."""

    @pytest.fixture(params=names)
    def backend(request):
        if request.param.startswith("milvus"):
            require_scale("pymilvus")
        return request.param

    return backend


@pytest.fixture
def spec_for(backend, tmp_path, request):
    """`spec_for(name)`: the index spec of this test's store `name` (on the server: a collection of this test's own)."""
    if backend == "faiss":
        yield lambda name="idx": str(tmp_path / name)
    elif backend == "milvus":
        yield lambda name="idx": f"milvus:{tmp_path / name}.db"
    else:
        url = request.getfixturevalue("milvus_server")
        prefix = "vt_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
        drop_collections(url, prefix)  # left by an interrupted run on an external server
        yield lambda name="idx": f"milvus:{url}#{prefix}_{name}"
        drop_collections(url, prefix)


@pytest.fixture
def filled(spec_for):
    rng = np.random.default_rng(0)
    spec = spec_for()
    store = open_store(
        spec, model=MODEL, dim=DIM, create=True, attributes=["gender"]
    )  # articleType stays a dynamic field
    vectors = unit(rng, 30)
    store.upsert([f"p{i}" for i in range(30)], vectors, [meta(i) for i in range(30)])
    yield spec, store, vectors
    store.close()


def ids(hits):
    return [h.id for h in hits]


def has_bm25(store) -> bool:
    """Whether this store ranks by words: FAISS, Milvus Lite and Milvus 2.5+ do (the 2.3 server the tests start does
    not)."""
    return store.backend != "milvus" or store.full_text


def test_each_vector_finds_itself_first_with_its_metadata(filled):
    _, store, vectors = filled
    hits = store.search(vectors[:5], k=3)
    assert [row[0].id for row in hits] == ["p0", "p1", "p2", "p3", "p4"]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0][0].metadata == {"id": "p0", **meta(0)}
    assert store.product("p4") == {"id": "p4", **meta(4)} and store.product("nope") is None


def test_vectors_read_back_as_written_for_the_ids_held(filled):
    _, store, vectors = filled
    found, got = store.vectors_of(["p3", "nope", "p0"])
    assert found == ["p3", "p0"] and np.allclose(got, vectors[[3, 0]], atol=1e-6)
    assert store.vectors_of([])[0] == [] and store.vectors_of([])[1].shape == (0, DIM)


def test_upsert_replaces_and_delete_removes_visible_to_the_next_search(filled):
    spec, store, vectors = filled
    store.upsert(
        ["p3"], vectors[7:8], [{"title": "renamed", "gender": "Women", "articleType": "Jeans", "colour": "Red"}]
    )
    assert store.stats()["products"] == store.stats()["vectors"] == 30
    top = store.search(vectors[7:8], k=2)[0]
    assert set(ids(top)) == {"p3", "p7"}
    assert next(h for h in top if h.id == "p3").metadata["title"] == "renamed"
    assert "colour" in store.fields() and store.search(vectors[:1], k=5, filters={"colour": "Red"})[0][0].id == "p3"
    # A second client (another worker) sees the write as soon as it returned.
    other = open_store(spec, model=MODEL) if not spec.startswith("milvus:") else open_store(spec)
    try:
        other.refresh()
        assert other.product("p3")["title"] == "renamed"
        assert store.delete(["p3", "missing"]) == 1
        other.refresh()
        assert "p3" not in ids(other.search(vectors[7:8], k=30)[0]) and other.product("p3") is None
    finally:
        other.close()
    assert store.stats()["products"] == store.stats()["vectors"] == 29
    assert store.search(vectors[:1], k=5, filters={"title": "renamed"}) == [[]]
    assert store.delete(["p3"]) == 0


def test_filters_are_exact_from_one_in_a_thousand_to_none(spec_for):
    rng = np.random.default_rng(1)
    store = open_store(spec_for("big"), model=MODEL, dim=DIM, create=True, attributes=["gender", "rare"])
    try:
        n = 1000
        vectors = unit(rng, n)
        metas = [{**meta(i), "rare": "yes" if i == 617 else "no", "batch": str(i % 10)} for i in range(n)]
        store.upsert([f"p{i}" for i in range(n)], vectors, metas)
        queries = unit(rng, 5)
        for filters in (
            {"rare": "yes"}, {"batch": "3", "gender": "Women"},
            {"articleType": ["Jeans", "Watches"], "batch": ["1", "2"]},
        ):
            allowed = [
                i
                for i, m in enumerate(metas)
                if all(m[f] in ([v] if isinstance(v, str) else v) for f, v in filters.items())
            ]
            expected = [
                [f"p{allowed[j]}" for j in np.argsort(-(vectors[allowed] @ q), kind="stable")[:10]] for q in queries
            ]
            got = [ids(row) for row in store.search(queries, k=10, filters=filters)]
            assert got == expected, filters
        assert ids(store.search(queries[:1], k=10, filters={"rare": "yes"})[0]) == ["p617"]  # keeps 0.1%
        assert store.search(queries, k=10, filters={"gender": "Nobody"}) == [[]] * 5  # matches nothing
        assert store.search(queries[:1], k=10, filters={"no_such_field": "x"}) == [[]]
        assert store.search(queries[:1], k=10, filters={"gender": []}) == [[]]
        values = dict(store.field_values()["gender"])
        assert values == {"Men": 500, "Women": 500}
    finally:
        store.close()


HOSTILE = ['x" or "1" == "1', "a\\b", "it's", "line\nbreak", 'Men") or (gender == "Women', '\\"', "%_*", "tab\there"]


def test_filter_values_with_quotes_and_operators_match_literally(spec_for):
    rng = np.random.default_rng(2)
    store = open_store(spec_for("hostile"), model=MODEL, dim=DIM, create=True, attributes=["gender"])
    try:
        rows = [{"title": "plain", "gender": "Men", "articleType": "Shirts", "size (EU)": "42"} for _ in range(6)]
        rows += [{"title": value, "gender": value, "articleType": value, "size (EU)": value} for value in HOSTILE]
        names = [f"p{i}" for i in range(len(rows))]
        store.upsert(names, unit(rng, len(rows)), rows)
        query = unit(rng, 1)
        for position, value in enumerate(HOSTILE, start=6):
            for field in (
                "gender",
                "articleType",
                "size (EU)",
            ):  # a declared field, a dynamic one, a non-identifier name
                assert ids(store.search(query, k=50, filters={field: value})[0]) == [names[position]], (field, value)
        assert len(store.search(query, k=50, filters={"gender": ["Men", HOSTILE[0]]})[0]) == 7
        assert store.search(query, k=50, filters={"gender": 'Men" or "1" == "1'}) == [[]]
    finally:
        store.close()


def test_a_missing_title_or_attribute_reads_back_missing_and_matches_no_filter(spec_for):
    """Before Milvus 2.5 a field cannot be null: the store writes "" there, which must never show as a value."""
    rng = np.random.default_rng(3)
    store = open_store(spec_for("sparse"), model=MODEL, dim=DIM, create=True, attributes=["gender"])
    try:
        store.upsert(
            ["a", "b", "c"],
            unit(rng, 3),
            [{"title": None, "gender": "Men"}, {"title": "B"}, {"gender": "Women", "colour": "Red"}],
        )
        assert [store.product(i) for i in "abc"] == [
            {"id": "a", "title": None, "gender": "Men"},
            {"id": "b", "title": "B"},
            {"id": "c", "title": None, "gender": "Women", "colour": "Red"},
        ]
        query = unit(rng, 1)
        assert sorted(ids(store.search(query, k=3, filters={"gender": ["Men", "Women"]})[0])) == [
            "a",
            "c",
        ]  # b has no gender
        assert store.search(query, k=3, filters={"gender": ""}) == [[]]
        assert dict(store.field_values()["gender"]) == {"Men": 1, "Women": 1} and dict(
            store.field_values()["colour"]
        ) == {"Red": 1}
        assert store.page(0, 10, {"gender": ["", "Men"]})[0] == 1
        assert {p["id"]: p for p in store.page(0, 10)[1]}["b"] == {"id": "b", "title": "B"}
    finally:
        store.close()


def test_persistence_round_trip_and_model_mismatch(filled):
    spec, store, vectors = filled
    before = [[(h.id, round(h.score, 5)) for h in row] for row in store.search(vectors[:3], k=4)]
    store.close()
    again = open_store(spec, model=MODEL)
    try:
        assert [[(h.id, round(h.score, 5)) for h in row] for row in again.search(vectors[:3], k=4)] == before
        assert again.stats()["model"] == MODEL and again.stats()["products"] == 30
    finally:
        again.close()
    with pytest.raises(IndexMismatchError, match="built with vitrine:test"):
        open_store(spec, model="vitrine:other")
    with pytest.raises(IndexMismatchError, match="built with vitrine:test"):
        open_store(spec, model=MODEL, dim=16, create=True)


def test_missing_index_and_bad_inputs(filled, spec_for):
    _, store, vectors = filled
    with pytest.raises(FileNotFoundError, match="no vitrine index"):
        open_store(spec_for("nothing"))
    with pytest.raises(ValueError, match="shape"):
        store.upsert(["a"], vectors[:2])
    with pytest.raises(ValueError, match="duplicate ids"):
        store.upsert(["a", "a"], vectors[:2])
    with pytest.raises(ValueError, match="NaN"):
        store.upsert(["a"], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(ValueError, match=f"{DIM}-d"):
        store.search(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="k must be"):
        store.search(vectors[:1], k=0)
    assert store.stats()["products"] == 30


@pytest.mark.parametrize("point", ["index.vectors_written:3", "index.committed:2"])
def test_sigkilled_build_resumes_exactly(backend, spec_for, tmp_path, point):
    """A real `vitrine index build` process is SIGKILLed mid-commit or between commits, then rerun."""
    write_shards(tmp_path / "shards", make_rows(60), per_shard=16)
    spec = spec_for()
    command = [
        sys.executable, "-m", "vitrine", "index", "build", "--data", str(tmp_path / "shards"), "--index", spec,
        "--model", "vitrine:small", "--batch-size", "4", "--commit-every", "8", "--no-progress", "-v",
    ]
    killed = subprocess.run(
        command, env={**os.environ, "VITRINE_FAILPOINTS": point}, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = open_store(spec)
    # FAISS commits rows and position together: two commits of 8 survive. Milvus writes the rows first, so a kill
    # before the position is saved leaves the third commit's rows too; the rerun upserts them again (same ids).
    survived = 24 if (backend != "faiss" and point.startswith("index.vectors_written")) else 16
    assert partial.stats()["products"] == partial.stats()["vectors"] == survived
    partial.close()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "60 products; added 44" in rerun.stderr
    store = open_store(spec)
    try:
        found = [h.id for h in store.search(np.eye(store.dim, dtype=np.float32)[:1], k=100)[0]]
        assert len(found) == len(set(found)) == store.stats()["vectors"] == 60
        assert sorted(found) == sorted(row["id"] for row in make_rows(60))
        if backend == "faiss":  # the killed run's uncommitted vector file is gone
            assert [p.name for p in (tmp_path / "idx").glob("vectors-*")] == [f"vectors-{store.generation:08d}.faiss"]
    finally:
        store.close()


def test_ranking_runs_on_every_backend_and_hybrid_says_when_it_fell_back_to_vector(filled, backend):
    from vitrine.index.store import LexicalUnsupported
    from vitrine.ranking import Ranker, RankOptions

    _, store, vectors = filled
    ranker = Ranker(store)
    soft = ranker.rank(vectors[:1], "watches for women", 10)
    assert soft.matched.values == {"articleType": ["Watches"], "gender": ["Women"]}
    women_watches = {f"p{i}" for i in range(30) if i % 2 and i % 3 == 2}
    plain = ranker.rank(vectors[:1], "watches for women", 30, options=RankOptions(soft_filters=False))
    boosted = ranker.rank(vectors[:1], "watches for women", 30)
    rank_of = lambda ranked: sum(ids(ranked.hits).index(i) for i in women_watches)  # noqa: E731
    assert (
        rank_of(boosted) < rank_of(plain) and ids(boosted.hits)[0] in women_watches
    )  # soft filters work on either store
    assert len(store.sample(7)) == 7
    assert has_bm25(store) == (backend != "milvus-server" or store.version >= (2, 5))
    if has_bm25(store):
        assert (
            soft.mode == "hybrid" and ranker.rank(vectors[:1], "watches", 10, options=RankOptions(mode="lexical")).hits
        )
    # a server without full-text search (before Milvus 2.5): hybrid says it ran as vector; lexical is refused by name
    else:
        assert soft.mode == "vector"
        with pytest.raises(LexicalUnsupported, match="embedded store"):
            ranker.rank(vectors[:1], "watches", 10, options=RankOptions(mode="lexical"))


KINDS = {"Running Shoes": "Sports Shoes", "T-shirt": "Tshirts", "Watch": "Watches", "Jeans": "Jeans"}
COLOURS = {"Black": "Men", "Red": "Women", "Blue": "Men"}
# (query, its type and colour as the vector sees them, words the best product's title holds): the vector knows the type
# and colour, not the brand, which the words name
SHOPPER_QUERIES = [
    ("puma red watch", "Watch", "Red", "Puma Women Red Watch"),
    ("nike running shoes", "Running Shoes", None, "Nike"),
    ("black jeans for men", "Jeans", "Black", "Men Black Jeans"),
    ("titan watches", "Watch", None, "Titan"),
    ("levis blue t-shirt", "T-shirt", "Blue", "Levis Men Blue T-shirt"),
]


def looks(kind: str, colour: str | None, rng) -> np.ndarray:
    """A unit vector that sees a type and a colour (dimensions 0-3 and 4-6), and a little noise."""
    x = 0.05 * rng.standard_normal(DIM).astype(np.float32)
    x[list(KINDS).index(kind)] += 1.0
    if colour:
        x[4 + list(COLOURS).index(colour)] += 0.6
    return x / np.linalg.norm(x)


def test_hybrid_ranking_agrees_with_the_embedded_store_built_from_the_same_rows(spec_for, tmp_path):
    """Both stores match the same words (Milvus's text is cut by FTS5's tokenizer); their BM25 scores differ (Milvus's
    IDF is Lucene's), so the rankings are held to the same best product, the one the query's words and vector
    describe, and most of the same top 3."""
    from vitrine.ranking import Ranker, RankOptions

    rng = np.random.default_rng(5)
    products = [
        (brand, kind, colour) for brand in ("Nike", "Puma", "Titan", "Levis") for kind in KINDS for colour in COLOURS
    ]
    rows = [
        {
            "title": f"{brand} {COLOURS[colour]} {colour} {kind}", "gender": COLOURS[colour],
            "articleType": KINDS[kind], "baseColour": colour,
        }
        for brand, kind, colour in products
    ]
    names, vectors = (
        [f"p{i}" for i in range(len(rows))],
        np.stack([looks(kind, colour, rng) for _, kind, colour in products]),
    )
    reference = open_store(tmp_path / "reference", model=MODEL, dim=DIM, create=True)
    store = open_store(spec_for("shop"), model=MODEL, dim=DIM, create=True, attributes=["gender"])
    try:
        for each in (reference, store):
            each.upsert(names, vectors, rows)
        expected, got = Ranker(reference), Ranker(store)
        for text, kind, colour, best in SHOPPER_QUERIES:
            vector = looks(kind, colour, rng)[None]
            if not has_bm25(store):
                assert got.rank(vector, text, 10).mode == "vector"
                continue
            lexical = RankOptions(mode="lexical", soft_filters=False)
            matched = [
                {h.id for h in ranker.rank(vector, text, 48, options=lexical).hits} for ranker in (got, expected)
            ]
            assert matched[0] == matched[1], text  # the same products hold the words
            for options in (RankOptions(soft_filters=False), RankOptions()):
                mine, theirs = (
                    got.rank(vector, text, 3, options=options), expected.rank(vector, text, 3, options=options),
                )
                assert mine.mode == theirs.mode == "hybrid"
                title = mine.hits[0].metadata["title"]
                assert ids(mine.hits)[0] == ids(theirs.hits)[0] and best in title and kind in title, (text, options)
                assert len(set(ids(mine.hits)) & set(ids(theirs.hits))) >= 2, (text, options)
    finally:
        reference.close()
        store.close()


def test_pages_through_products_in_a_stable_order_with_filters(filled, backend):
    _, store, _ = filled
    total, first = store.page(0, 7)
    assert total == 30 and len(first) == 7 and first[0] == {"id": first[0]["id"], **meta(int(first[0]["id"][1:]))}
    seen = []
    for offset in range(0, 30, 7):
        seen += [p["id"] for p in store.page(offset, 7)[1]]
    assert sorted(seen) == sorted(f"p{i}" for i in range(30))  # no product twice, none missed
    if backend == "faiss":  # the embedded store pages in id order; Milvus in its scan order
        assert seen == sorted(seen)
    total, rows = store.page(0, 100, {"gender": "Women"})
    assert total == 15 and sorted(p["id"] for p in rows) == sorted(f"p{i}" for i in range(30) if i % 2)
    assert store.page(2, 100, {"gender": "Women"})[1] == rows[2:]
    assert store.page(0, 5, {"gender": "Women", "articleType": ["Jeans", "Watches"]})[0] == sum(
        1 for i in range(30) if i % 2 and i % 3
    )
    assert store.page(40, 5) == (30, []) and store.page(0, 5, {"gender": "Nobody"}) == (0, [])
