"""FAISS-specific: a failed commit leaves the previous generation (the shared contract is in test_store_conformance.py)."""
import numpy as np
import pytest

from vitrine.index.faiss_store import FaissStore


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


