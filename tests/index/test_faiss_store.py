"""FAISS-specific: a failed commit leaves the previous generation (the shared contract is in
test_store_conformance.py)."""

import numpy as np
import pytest

from vitrine.index.faiss_store import FaissStore


def unit(rng, n, dim=8):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def meta(i):
    return {
        "title": f"item {i}", "gender": ["Men", "Women"][i % 2], "articleType": ["Shirts", "Jeans", "Watches"][i % 3],
    }


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


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_reader_behind_another_writers_commit_answers_from_its_own_generation(tmp_path, kind):
    """Two processes on one index (serve workers): one commits while the other has not refreshed yet. Its searches,
    filtered or not, still answer (no 500), from the vectors it holds, leaving out products the metadata no longer
    has."""
    rng = np.random.default_rng(1)
    vectors = unit(rng, 40)
    writer = FaissStore(
        tmp_path / "idx", model="vitrine:test", dim=8, options={"exact_max": 10 if kind == "hnsw" else 100_000}
    )
    writer.upsert([f"p{i}" for i in range(30)], vectors[:30], [meta(i) for i in range(30)])
    reader = FaissStore.open(tmp_path / "idx")
    assert reader.vectors.kind == kind
    writer.upsert(
        [f"new{i}" for i in range(30, 40)], vectors[30:], [meta(i) for i in range(30, 40)]
    )  # keys the reader lacks
    writer.delete(["p0", "p3"])  # and products its vectors still hold
    writer.upsert(["p1"], vectors[39:40], [meta(1)])  # a replacement: a new key, the old one gone from the metadata
    for filters in ({"articleType": "Shirts"}, {"gender": ["Men", "Women"]}, None):
        hits = reader.search(vectors[:5], k=40, filters=filters)
        for row in hits:
            ids = [h.id for h in row]
            assert ids and not {"p0", "p3", "p1"} & set(ids) and not any(i.startswith("new") for i in ids)
            assert len(ids) == len(set(ids))
    assert reader.refresh()
    assert {"new30", "p1"} <= {h.id for h in reader.search(vectors[30:31], k=40)[0]}
    assert "p0" not in {h.id for h in reader.search(vectors[:1], k=40)[0]}


def test_a_reload_racing_a_commit_that_removes_its_file_reads_the_newer_generation(store, tmp_path, monkeypatch):
    s, vectors = store
    reader = FaissStore.open(tmp_path / "idx")
    import vitrine.index.faiss_store as module

    real_read, raced = module.VectorIndex.read, []

    def read_after_a_commit(path, *args):
        if not raced:  # between the reader's look at the generation and its read, two commits land and remove the file
            raced.append(path)
            s.upsert(["late1"], vectors[:1], [meta(0)])
            s.upsert(["late2"], vectors[1:2], [meta(1)])
        return real_read(path, *args)

    s.upsert(["first"], vectors[2:3], [meta(2)])
    monkeypatch.setattr(module.VectorIndex, "read", staticmethod(read_after_a_commit))
    assert reader.refresh()
    assert raced and not raced[0].exists() and reader.generation == s.generation
    assert reader.stats()["vectors"] == 33 and {"late1", "late2", "first"} <= {
        h.id for h in reader.search(vectors[:3], k=40)[0]
    }
