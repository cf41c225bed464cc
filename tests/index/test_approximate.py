"""Above exact_max the store switches to HNSW (or IVF-PQ on a tight memory budget) and stays correct."""

import numpy as np
import pytest

from vitrine.index.faiss_store import FaissStore
from vitrine.index.plan import IndexOptions, bytes_per_vector, plan_index


def clustered(n, dim=16, seed=0, centres=40):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(vectors, ids, queries, k):
    order = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order]


def recall(hits, truth):
    return np.mean([len({h.id for h in got} & set(want)) / len(want) for got, want in zip(hits, truth)])


def fill(store, vectors, every=10):
    """Products p0..pn; `tag` = 'rare' for every `every`-th (or none), size cycles over three values."""
    ids = [f"p{i}" for i in range(len(vectors))]
    metas = [
        {"title": f"item {i}", "size": "SML"[i % 3], **({"tag": "rare"} if every and i % every == 0 else {})}
        for i in range(len(vectors))
    ]
    for start in range(0, len(ids), 1000):
        store.upsert(ids[start : start + 1000], vectors[start : start + 1000], metas[start : start + 1000])
    return ids


def test_plan_follows_size_and_memory_budget():
    roomy = IndexOptions(exact_max=1000, memory_budget=2**30)
    assert plan_index(500, 256, roomy).kind == "flat"
    assert plan_index(100_000, 256, roomy).kind == "hnsw"
    tight = IndexOptions(exact_max=1000, memory_budget=int(bytes_per_vector("hnsw", 256, roomy) * 100_000 * 0.9))
    plan = plan_index(100_000, 256, tight)
    assert plan.kind == "ivfpq" and plan.estimated_bytes <= tight.memory_budget and "over the" in plan.reason
    assert (
        plan_index(100_000, 256, IndexOptions(exact_max=1000, memory_budget=2**30, approximate="ivfpq")).kind == "ivfpq"
    )
    with pytest.raises(MemoryError, match="distributed engine"):
        plan_index(10**9, 256, roomy)
    with pytest.raises(ValueError, match="approximate"):
        IndexOptions(approximate="annoy")


def test_hnsw_store_recall_upsert_delete_persistence_and_compaction(tmp_path):
    vectors = clustered(3000)
    options = IndexOptions(exact_max=500, exact_subset_max=50, hnsw_ef_search=64)
    store = FaissStore(tmp_path / "idx", model="m", dim=16, options=options)
    ids = fill(store, vectors)
    assert store.stats()["index_kind"] == "hnsw" and store.stats()["vectors"] == 3000
    queries = clustered(50, seed=1)
    assert recall(store.search(queries, k=10), exact_top(vectors, ids, queries, 10)) >= 0.95

    # Replacing p7's vector: the old one must never come back, the new one is found.
    store.upsert(["p7"], vectors[8:9], [{"title": "moved"}])
    assert store.stats()["dead_vectors"] == 1 and store.stats()["vectors"] == store.stats()["products"] == 3000
    hits = store.search(vectors[7:8], k=3)[0]
    assert not any(h.id == "p7" and h.score > 0.9999 for h in hits)  # p7's old vector is dead
    assert {h.id for h in store.search(vectors[8:9], k=2)[0]} == {"p7", "p8"}
    assert store.delete(["p8", "p9", "nope"]) == 2
    top = [h.id for h in store.search(vectors[8:10], k=50)[0]] + [h.id for h in store.search(vectors[8:10], k=50)[1]]
    assert "p8" not in top and "p9" not in top
    store.close()

    again = FaissStore.open(tmp_path / "idx")
    assert again.stats()["index_kind"] == "hnsw" and again.stats()["dead_vectors"] == 3
    assert again.stats()["vectors"] == again.stats()["products"] == 2998
    # Delete over a quarter of the catalog: the graph is rebuilt without dead vectors.
    again.delete([f"p{i}" for i in range(1000, 1900)])
    assert again.stats()["dead_vectors"] == 0 and again.stats()["vectors"] == again.stats()["products"] == 2098
    gone = {f"p{i}" for i in range(1000, 1900)}
    assert not gone & {h.id for row in again.search(vectors[1000:1010], k=20) for h in row}
    again.close()


@pytest.mark.parametrize("approximate", ["hnsw", "ivfpq"])
def test_filter_keeping_a_tenth_of_a_percent_is_exact(tmp_path, approximate):
    n = 10_000
    vectors = clustered(n, seed=2)
    options = IndexOptions(
        exact_max=1000, approximate=approximate, exact_subset_max=200, hnsw_ef_search=32, ivf_nprobe=4
    )
    store = FaissStore(tmp_path / "idx", model="m", dim=16, options=options)
    ids = fill(store, vectors, every=n // 10)  # 10 products of 10,000 are 'rare': 0.1%
    assert store.stats()["index_kind"] == approximate
    queries = clustered(20, seed=3)
    rare = np.arange(0, n, n // 10)
    truth = exact_top(vectors[rare], [ids[i] for i in rare], queries, 10)
    hits = store.search(queries, k=10, filters={"tag": "rare"})
    if approximate == "hnsw":
        assert [[h.id for h in row] for row in hits] == truth  # exact vectors: identical ranking
    else:
        assert all({h.id for h in row} == set(want) for row, want in zip(hits, truth))  # all 10 of 10, PQ scores
    assert store.search(queries, k=10, filters={"tag": "nothing"}) == [[] for _ in queries]
    if approximate == "hnsw":  # the same filter through the post-filtering path (candidates from the graph, then kept)
        from dataclasses import replace

        store.vectors.options = replace(options, exact_subset_max=0)
        assert [[h.id for h in row] for row in store.search(queries, k=10, filters={"tag": "rare"})] == truth
        store.vectors.options = options
    # A third of the catalog: too many for brute force, searched through the index with the filter.
    small = np.arange(0, n, 3)
    hits = store.search(queries, k=10, filters={"size": "S"})
    assert all(h.metadata["size"] == "S" for row in hits for h in row)
    floor = 0.9 if approximate == "hnsw" else 0.5
    assert recall(hits, exact_top(vectors[small], [ids[i] for i in small], queries, 10)) >= floor
    store.close()


def test_ivfpq_removes_for_real(tmp_path):
    vectors = clustered(10_000, seed=4)
    store = FaissStore(tmp_path / "idx", model="m", dim=16, options=IndexOptions(exact_max=1000, approximate="ivfpq"))
    fill(store, vectors, every=0)
    assert store.stats()["index_kind"] == "ivfpq"
    store.delete([f"p{i}" for i in range(100)])
    store.upsert(["p200"], vectors[:1], [{"title": "moved"}])
    stats = store.stats()
    assert stats["vectors"] == stats["products"] == 9900 and stats["dead_vectors"] == 0
    assert store.search(vectors[:1], k=1)[0][0].id == "p200"
    assert not {f"p{i}" for i in range(100)} & {h.id for h in store.search(vectors[:100], k=5)[0]}
    store.close()
