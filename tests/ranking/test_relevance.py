"""The "no close match" judgement: calibrated on shopper-like queries from the catalog's own values (not its titles),
image queries judged against images, chips judged on what they hold, and the words a catalog knows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from vitrine.data.schema import CatalogSchema
from vitrine.index.build import SCHEMA_STATE
from vitrine.index.faiss_store import FaissStore
from vitrine.ranking import Calibration, Ranker
from vitrine.ranking.calibrate import calibrate
from vitrine.ranking.relevance import Evidence, judge

DIM = 16
TYPES = ["Tshirts", "Dresses", "Sweatshirts", "Jeans", "Casual Shoes"]
COLOURS = ["Red", "Black", "Navy Blue", "White"]
GENDERS = ["Men", "Women"]
SCHEMA = CatalogSchema(name="test", attributes=("articleType", "baseColour", "gender"))


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def in_catalog_space(v: np.ndarray) -> np.ndarray:
    """Products and texts leave the last axis empty: a picture along it is unlike all of them."""
    v = np.array(v, dtype=np.float32)
    v[..., -1] = 0.0
    return unit(v)


def text_vector(text: str) -> np.ndarray:
    """A stand-in text encoder: a fixed random direction per text."""
    seed = int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "little")
    return in_catalog_space(np.random.default_rng(seed).normal(size=DIM))


class Recording:
    """Encodes like `text_vector` and keeps what it was asked to encode."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts += list(texts)
        return np.stack([text_vector(t) for t in texts])


def make_store(path, schema: CatalogSchema | None = SCHEMA, n: int = 80) -> tuple[FaissStore, np.ndarray, list[dict]]:
    """Products whose vectors carry no information about their values; the schema saved as `index build` saves it."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "title": f"Brand{i % 7} {GENDERS[(i // 20) % 2]} {COLOURS[(i // 5) % 4]} {TYPES[i % 5]}",
            "articleType": TYPES[i % 5],
            "baseColour": COLOURS[(i // 5) % 4],
            "gender": GENDERS[(i // 20) % 2],
        }
        for i in range(n)
    ]
    vectors = in_catalog_space(rng.normal(size=(n, DIM)))
    store = FaissStore(path, "test", DIM)
    store.upsert(
        [str(i) for i in range(n)],
        vectors,
        rows,
        state={SCHEMA_STATE: json.dumps(schema.to_dict())} if schema else None,
    )
    return store, vectors, rows


@pytest.fixture
def store(tmp_path):
    store, vectors, rows = make_store(tmp_path / "idx")
    yield store
    store.close()


def test_calibration_is_made_of_shopper_queries_from_the_catalogs_values_never_its_titles(store):
    encode = Recording()
    calibration = calibrate(store, encode)
    titles = {row["title"] for row in store.sample(1000)}
    assert calibration.method == calibration.calibrated_on == "shopper"
    assert (
        "red tshirts for men" in encode.texts and "navy blue casual shoes" in encode.texts and "jeans" in encode.texts
    )
    assert not titles & set(encode.texts) and len(encode.texts) == len(calibration.scores) == len(set(encode.texts))
    expected = np.sort([hits[0].score for hits in store.search(encode(sorted(set(encode.texts))), 1)])
    assert np.allclose(calibration.scores, expected)
    assert {"brand3", "tshirt", "navy", "women"} <= calibration.words and "surfboard" not in calibration.words
    assert calibration.kind_fields == {"articleType"}  # colour and gender say how a product is, not what


def test_image_calibration_is_each_products_best_cosine_to_another_product(tmp_path):
    store, vectors, _ = make_store(tmp_path / "idx")
    calibration = calibrate(store, Recording())
    others = vectors @ vectors.T
    np.fill_diagonal(others, -2)
    assert np.allclose(calibration.images, np.sort(others.max(axis=1)), atol=1e-5)
    assert np.allclose(calibration.image_texts, np.sort((vectors @ calibration.queries.T).max(axis=1)), atol=1e-5)
    store.close()


def test_the_titles_method_is_the_judgement_before_and_a_catalog_without_roles_falls_back_to_titles(tmp_path):
    store, _, rows = make_store(tmp_path / "idx")
    encode = Recording()
    before = calibrate(store, encode, "titles")
    assert before.method == "titles" and before.images is None and set(encode.texts) <= {row["title"] for row in rows}
    with pytest.raises(ValueError, match="relevance calibration must be one of shopper, titles"):
        calibrate(store, encode, "guess")
    store.close()
    plain, _, rows = make_store(tmp_path / "plain", CatalogSchema(name="plain", attributes=("articleType",), facets=()))
    encode = Recording()
    fallback = calibrate(
        plain, encode
    )  # no categorical column says what it is: titles are what the catalog calls things
    assert (
        fallback.method == "shopper"
        and fallback.calibrated_on == "titles"
        and set(encode.texts) <= {row["title"] for row in rows}
    )
    plain.close()


def strict(store) -> Calibration:
    """The shopper calibration with scores no query here reaches: only words can make a close match."""
    return replace(calibrate(store, Recording()), scores=np.full(64, 2.0, dtype=np.float32))


@pytest.mark.parametrize(
    "text, close",
    [
        ("red tshirt for men", True),  # every word names a value some product has
        ("brand3 sweatshirt", True),  # a title word beside a type
        ("brand3 casual shoes for women", True),
        ("surfboard", False),
        ("red surfboard", False),  # "surfboard" is nowhere in the catalog
        ("brand3", False),  # a title word alone: nothing says what the product is
        ("brand3 red", False),  # a colour says how, not what: a catalog without heels has "heel" in some title
    ],
)
def test_words_vouch_for_a_query_only_when_the_catalog_has_them(store, text, close):
    relevance = Ranker(store).rank(text_vector(text)[None], text, 10, calibration=strict(store)).relevance
    assert relevance["close_match"] is close and relevance["basis"] == ("words" if close else "similarity")


def test_a_chip_judges_the_query_on_what_the_chip_holds(store):
    """The issue's "red t-shirt for men" under the Women chip: the chip overrides the gender, women's red T-shirts
    exist."""
    ranker, query = Ranker(store), "red tshirt for men"
    under_chip = ranker.rank(
        text_vector(query)[None], query, 10, {"gender": ["Women"]}, calibration=strict(store)
    ).relevance
    assert under_chip["close_match"] is True and under_chip["words_named"] is True
    titles = replace(strict(store), method="titles")  # before: the chip's women's T-shirts were "no close match"
    assert (
        ranker.rank(text_vector(query)[None], query, 10, {"gender": ["Women"]}, calibration=titles).relevance[
            "close_match"
        ]
        is False
    )
    absent = ranker.rank(
        text_vector("surfboard")[None], "surfboard", 10, {"gender": ["Women"]}, calibration=strict(store)
    ).relevance
    assert absent["close_match"] is False


def test_image_queries_are_judged_against_images(tmp_path):
    store, vectors, _ = make_store(tmp_path / "idx")
    calibration, ranker = calibrate(store, Recording()), Ranker(store)
    near = ranker.rank(unit(vectors[3] + 0.05 * vectors[4])[None], None, 5, calibration=calibration).relevance
    assert near["close_match"] is True and near["level"] > 0.5
    away = np.eye(DIM, dtype=np.float32)[-1]  # a picture unlike every product and every calibration query
    far = ranker.rank(away[None], None, 5, calibration=calibration).relevance
    assert far["close_match"] is False and far["basis"] == "similarity"
    assert (
        ranker.rank(
            vectors[3][None], None, 5, calibration=replace(calibration, method="titles", images=None)
        ).relevance["close_match"]
        is None
    )
    composed = ranker.rank(vectors[3][None], None, 5, calibration=calibration, soft_text="in black").relevance
    assert composed["level"] is None  # no scale says what an image changed by words scores (its words may still vouch)
    store.close()


def test_judge_reads_the_evidence():
    calibration = Calibration(
        np.linspace(0.3, 0.7, 101, dtype=np.float32), 80, method="shopper", quiet_above=0.05,
        images=np.linspace(0.5, 0.9, 101, dtype=np.float32), image_texts=np.linspace(0.2, 0.4, 101, dtype=np.float32),
        queries=np.eye(4, dtype=np.float32),
    )
    assert (
        judge(calibration, Evidence(0.31))["close_match"] is False
        and judge(calibration, Evidence(0.33))["close_match"] is True
    )
    assert judge(calibration, Evidence(0.2, catalog_words=True))["basis"] == "words"
    assert calibration.image_level(0.7, 0.3) == pytest.approx(0.5, abs=0.01)
    assert judge(calibration, Evidence(0.505, image=True, text_similarity=0.201))["close_match"] is False
    assert judge(calibration, Evidence(0.6, image=True, text_similarity=0.3))["close_match"] is True
    assert calibration.text_similarity(np.array([0.0, 0.6, 0.8, 0.0])) == pytest.approx(0.8)
