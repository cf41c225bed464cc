"""The embedded store keeps vectors and metadata consistent through upserts, deletes, filters, restarts and crashes."""
import numpy as np
import pytest

from vitrine.index.faiss_store import FaissStore, IndexMismatchError


def unit(rng, n, dim=8):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def meta(i):
    return {"title": f"item {i}", "gender": ["Men", "Women"][i % 2], "articleType": ["Shirts", "Jeans", "Watches"][i % 3]}


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    s = FaissStore(tmp_path / "idx", model="vitrine:test", dim=8)
    vectors = unit(rng, 30)
    s.upsert([f"p{i}" for i in range(30)], vectors, [meta(i) for i in range(30)])
    return s, vectors


def test_search_finds_each_vector_first(store):
    s, vectors = store
    hits = s.search(vectors[:5], k=3)
    assert [h[0].id for h in hits] == ["p0", "p1", "p2", "p3", "p4"]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-5) and hits[0][0].metadata["title"] == "item 0"


def test_upsert_replaces_vector_and_metadata_and_delete_removes_both(store):
    s, vectors = store
    s.upsert(["p3"], vectors[7:8], [{"title": "renamed", "gender": "Women", "articleType": "Jeans"}])
    assert s.stats()["vectors"] == s.stats()["products"] == 30
    top = s.search(vectors[7:8], k=2)[0]
    assert {h.id for h in top} == {"p3", "p7"}
    assert next(h for h in top if h.id == "p3").metadata["title"] == "renamed"
    assert s.delete(["p3", "missing"]) == 1
    assert s.stats()["vectors"] == s.stats()["products"] == 29
    assert "p3" not in {h.id for h in s.search(vectors[7:8], k=29)[0]}
    assert s.search(vectors[:1], k=5, filters={"title": "renamed"}) == [[]]


def test_filters_are_exact_even_when_very_selective(store):
    s, vectors = store
    # Men (even i) and Shirts (i % 3 == 0) keep i in {0, 6, 12, 18, 24}: 5 of 30.
    hits = s.search(vectors[1:2], k=10, filters={"gender": "Men", "articleType": "Shirts"})[0]
    assert sorted(h.id for h in hits) == sorted(f"p{i}" for i in (0, 6, 12, 18, 24))
    assert s.search(vectors[:1], k=10, filters={"gender": "Nobody"}) == [[]]
    either = s.search(vectors[:1], k=30, filters={"articleType": ["Jeans", "Watches"]})[0]
    assert len(either) == 20


def test_persistence_round_trip_and_model_mismatch(store, tmp_path):
    s, vectors = store
    before = s.search(vectors[:3], k=4)
    s.close()
    again = FaissStore.open(tmp_path / "idx", model="vitrine:test")
    assert again.search(vectors[:3], k=4) == before
    assert again.stats()["model"] == "vitrine:test"
    again.close()
    with pytest.raises(IndexMismatchError, match="built with vitrine:test"):
        FaissStore.open(tmp_path / "idx", model="vitrine:other")
    with pytest.raises(FileNotFoundError, match="no vitrine index"):
        FaissStore.open(tmp_path / "nothing")


def test_a_failed_commit_leaves_the_previous_state(store, tmp_path, monkeypatch):
    s, vectors = store
    import vitrine.index.faiss_store as module

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        s.upsert(["new"], vectors[:1], [meta(0)])
    with pytest.raises(OSError):
        s.delete(["p1"])
    monkeypatch.undo()
    assert s.stats()["vectors"] == s.stats()["products"] == 30
    s.close()
    reopened = FaissStore.open(tmp_path / "idx")
    assert reopened.stats()["vectors"] == reopened.stats()["products"] == 30
    assert "new" not in {h.id for h in reopened.search(vectors[:1], k=30)[0]}
    assert sorted(p.name for p in (tmp_path / "idx").glob("vectors-*")) == [f"vectors-{reopened.generation:08d}.faiss"]


def test_bad_inputs(store):
    s, vectors = store
    with pytest.raises(ValueError, match="shape"):
        s.upsert(["a"], vectors[:2])
    with pytest.raises(ValueError, match="duplicate ids"):
        s.upsert(["a", "a"], vectors[:2])
    with pytest.raises(ValueError, match="8-d"):
        s.search(np.zeros((1, 4), dtype=np.float32))
