"""Hybrid ranking over a real embedded store: BM25 candidates, soft filters, exclusion, paging, facets, relevance."""

from __future__ import annotations

import numpy as np
import pytest

from vitrine.data.words import stem, stems
from vitrine.index.faiss_store import FaissStore
from vitrine.index.metadata import MetadataStore
from vitrine.ranking import Calibration, FieldVocabulary, Ranker, RankOptions
from vitrine.ranking.fusion import reciprocal_rank, weighted
from vitrine.ranking.relevance import Evidence, judge

TYPES = ["Tshirts", "Dresses", "Sweatshirts", "Jeans", "Casual Shoes"]
COLOURS = ["Red", "Black", "Navy Blue", "White"]
GENDERS = ["Men", "Women"]


def catalog(n: int = 80, seed: int = 0):
    """Products whose vectors carry no information about their type (so only words can find a type)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        article, colour, gender = TYPES[i % 5], COLOURS[(i // 5) % 4], GENDERS[(i // 20) % 2]
        rows.append(
            {
                "title": f"Brand{i % 7} {gender} {colour} {article}", "articleType": article, "baseColour": colour,
                "gender": gender,
            }
        )
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [str(i) for i in range(n)], vectors, rows


@pytest.fixture
def store(tmp_path):
    ids, vectors, rows = catalog()
    store = FaissStore(tmp_path / "idx", "test", 16)
    store.upsert(ids, vectors, rows)
    yield store
    store.close()


def unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)[None]


def test_words_fold_plurals_possessives_and_hyphens():
    assert [stem(w) for w in ["Dresses", "T-shirts", "women's", "Watches", "Jeans", "Sweatshirts"]] == [
        "dress", "tshirt", "women", "watch", "jeans", "sweatshirt",
    ]
    assert stems("Navy-Blue ladies") == ["navyblue", "women"]


def test_query_words_name_catalog_values_longest_phrase_first():
    vocabulary = FieldVocabulary({"articleType": TYPES, "baseColour": COLOURS, "gender": GENDERS, "year": ["2012"]})
    match = vocabulary.match("navy blue casual shoe for women in 2012")
    assert match.values == {"baseColour": ["Navy Blue"], "articleType": ["Casual Shoes"], "gender": ["Women"]}
    assert match.words == ["navy blue", "casual shoe", "women"] and match.unmatched == [
        "2012"
    ]  # years are not soft filters
    assert match.satisfied(
        {"baseColour": "Navy Blue", "articleType": "Casual Shoes", "gender": "Men"}
    ) == pytest.approx(2 / 3)
    assert not vocabulary.match("watch") and vocabulary.match("watch").unmatched == ["watch"]


def test_lexical_search_ranks_by_bm25_and_takes_any_text_safely(store):
    hits = store.lexical(["sweatshirt"], 50)
    assert hits and all(h.metadata["articleType"] == "Sweatshirts" for h in hits) and len(hits) == 16
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    filtered = store.lexical(["sweatshirt"], 50, {"gender": ["Women"]})
    assert filtered and all(h.metadata["gender"] == "Women" for h in filtered)
    for text in ['"', "NEAR(a b)", "a* OR -b", "AND", "'; DROP TABLE products; --"]:
        store.lexical([text], 5)  # quoted: never FTS5 syntax, never an error
    vector = unit(np.ones(16))
    with_cosine = store.lexical(["jeans"], 3, vector=vector)
    assert all(h.similarity is not None and -1 <= h.similarity <= 1 for h in with_cosine)


def test_a_store_written_before_full_text_gets_it_on_open(tmp_path):
    ids, vectors, rows = catalog(20)
    store = FaissStore(tmp_path / "idx", "test", 16)
    store.upsert(ids, vectors, rows)
    store.close()
    meta = MetadataStore(tmp_path / "idx" / "metadata.sqlite")
    meta.db.execute("DROP TABLE products_text")  # as an index built by an earlier vitrine
    meta.close()
    store = FaissStore.open(tmp_path / "idx")
    assert len(store.lexical(["dress"], 50)) == 4
    store.delete(["1"])  # a delete removes the product's text too
    assert len(store.lexical(["dress"], 50)) == 3
    store.close()


def test_hybrid_and_soft_filters_find_what_the_words_name(store):
    ranker = Ranker(store)
    vector = unit(np.random.default_rng(5).normal(size=16))  # a query vector that knows nothing
    vector_only = ranker.rank(vector, "red dress for women", 10, options=RankOptions(mode="vector", soft_filters=False))
    assert vector_only.mode == "vector"
    plain = store.search(vector, 10)[0]
    assert [h.id for h in vector_only.hits] == [h.id for h in plain]  # vector without soft filters is the plain search
    hybrid = ranker.rank(vector, "red dress for women", 10, options=RankOptions(soft_filters=False))
    assert sum(h.metadata["articleType"] == "Dresses" for h in hybrid.hits) > sum(
        h.metadata["articleType"] == "Dresses" for h in vector_only.hits
    )
    soft = ranker.rank(vector, "red dress for women", 10)
    assert soft.matched.values == {"baseColour": ["Red"], "articleType": ["Dresses"], "gender": ["Women"]}
    exact = [
        h
        for h in soft.hits
        if (h.metadata["articleType"], h.metadata["baseColour"], h.metadata["gender"]) == ("Dresses", "Red", "Women")
    ]
    assert len(exact) == 2 and [h.id for h in soft.hits[:2]] == [
        h.id for h in exact
    ]  # the two red women's dresses lead
    assert len(soft.hits) == 10  # soft, not hard: the rest of the page is still filled
    boosted = [h.id for h in ranker.rank(vector, "red dress for women", 80, options=RankOptions(mode="vector")).hits]
    unboosted = [
        h.id
        for h in ranker.rank(
            vector, "red dress for women", 80, options=RankOptions(mode="vector", soft_filters=False)
        ).hits
    ]
    for hit in exact:  # a boost on the cosine's 0-1 scale: every exact match climbs, but stays a ranking, not a cut
        assert boosted.index(hit.id) < unboosted.index(hit.id)
    assert len(boosted) == 80


def test_exclusion_paging_min_score_and_facets(store):
    ranker = Ranker(store)
    vector = unit(np.random.default_rng(7).normal(size=16))
    full = ranker.rank(vector, "black jeans", 30)
    pages = [ranker.rank(vector, "black jeans", 10, options=RankOptions(offset=o)).hits for o in (0, 10, 20)]
    assert [h.id for page in pages for h in page] == [h.id for h in full.hits]
    first = full.hits[0].id
    assert first not in [
        h.id for h in ranker.rank(vector, "black jeans", 30, options=RankOptions(exclude=(first,))).hits
    ]
    floor = sorted(h.similarity for h in full.hits if h.similarity is not None)[len(full.hits) // 2]
    kept = ranker.rank(vector, "black jeans", 80, options=RankOptions(mode="vector", min_score=floor))
    assert kept.hits and all(h.similarity >= floor for h in kept.hits)
    assert dict(full.facets["articleType"])["Jeans"] == sum(1 for _ in range(80) if _ % 5 == 3) == 16
    assert sum(n for _, n in full.facets["gender"]) == full.total
    with pytest.raises(ValueError, match="mode"):
        RankOptions(mode="fuzzy")


def test_fusions():
    assert reciprocal_rank([["a", "b"], ["b", "c"]]) == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})
    assert weighted([{"a": 0.9, "b": 0.5}, {"b": 10.0, "c": 0.0}], [0.5, 0.5]) == pytest.approx(
        {"a": 0.5, "b": 0.5, "c": 0.0}
    )


def test_relevance_is_judged_against_the_catalogs_own_titles(store):
    calibration = Calibration(np.linspace(0.3, 0.7, 101, dtype=np.float32), 80)
    assert calibration.level(0.2) == 0 and calibration.level(0.8) == 1
    assert judge(calibration, Evidence(0.2))["close_match"] is False
    assert judge(calibration, Evidence(0.6))["close_match"] is True
    assert judge(calibration, Evidence(0.2, named_all=True)) == {
        "close_match": True, "level": 0.0, "top_similarity": 0.2, "basis": "words", "words_named": True,
    }
    assert judge(None, Evidence(0.5))["close_match"] is None
    # the titles method (the judgement before shopper queries) takes no word of the catalog's as a vouch, and no image
    assert judge(calibration, Evidence(0.2, catalog_words=True))["close_match"] is False
    assert judge(calibration, Evidence(0.2, image=True))["close_match"] is None
    assert not calibration.stale(90) and calibration.stale(200)
    # from the store: titles encoded by a stand-in encoder that returns each title's own product vector
    ids, vectors, rows = catalog()
    by_title = {row["title"]: vectors[i] for i, row in enumerate(rows)}
    built = Calibration.from_store(store, lambda titles: np.stack([by_title[t] for t in titles]))
    assert built.products == 80 and np.allclose(built.scores, 1.0, atol=1e-5)


def test_a_composed_change_keeps_the_references_other_values(store):
    """ "Like this, but in black": black first (the change), and among those the reference's own type and gender."""
    ranker = Ranker(store)
    vector = unit(np.random.default_rng(11).normal(size=16))
    reference = {"articleType": "Jeans", "baseColour": "Red", "gender": "Men"}
    ranked = ranker.rank(
        vector, None, 10, options=RankOptions(mode="vector"), soft_text="in black", reference=reference
    )
    assert all(h.metadata["baseColour"] == "Black" for h in ranked.hits)
    ignored = ranker.rank(
        vector, None, 10, options=RankOptions(mode="vector", reference_weight=0.0), soft_text="in black",
        reference=reference,
    )
    assert all(h.metadata["baseColour"] == "Black" for h in ignored.hits)  # the change still comes first

    def like_reference(hits):
        return [i for i, h in enumerate(hits) if (h.metadata["articleType"], h.metadata["gender"]) == ("Jeans", "Men")]

    full = ranker.rank(
        vector, None, 80, options=RankOptions(mode="vector"), soft_text="in black", reference=reference
    ).hits
    full_ignored = ranker.rank(
        vector, None, 80, options=RankOptions(mode="vector", reference_weight=0.0), soft_text="in black",
        reference=reference,
    ).hits
    assert len(like_reference(full)) == 8 and sum(like_reference(full)) < sum(
        like_reference(full_ignored)
    )  # they climb
