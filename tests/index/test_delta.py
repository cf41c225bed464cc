"""Writes in proportion to the batch: commits append to a delta log over the base index, merges (in the background,
once the delta passes its bound) fold it in.

Every search, filter and read must see base + delta minus tombstones, exactly as if the base had been rewritten.
"""

import sqlite3
import threading

import numpy as np
import pytest

from vitrine import failpoints
from vitrine.index.delta import DeltaLogError
from vitrine.index.faiss_store import FaissStore
from vitrine.index.plan import IndexOptions

DIM = 16
APPEND = {"delta_min_base": 0, "delta_max_fraction": 0.5, "delta_max_vectors": 100_000}  # small bases append too


def unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def meta(i):
    return {"title": f"item {i} colour{i % 7}", "size": "SML"[i % 3], **({"tag": "rare"} if i % 50 == 0 else {})}


class Ledger:
    """What the catalog must hold: id -> (vector, metadata), kept beside a store by the same writes."""

    def __init__(self, store):
        self.store, self.items = store, {}

    def upsert(self, ids, vectors, metas):
        self.store.upsert(ids, vectors, metas)
        self.items.update({i: (v, m) for i, v, m in zip(ids, vectors, metas)})

    def delete(self, ids):
        self.store.delete(ids)
        for i in ids:
            self.items.pop(i, None)

    def truth_vector(self, product_id):
        return self.items[product_id][0][None]

    def truth(self, queries, k, keep=lambda m: True):
        ids = [i for i, (_, m) in self.items.items() if keep(m)]
        matrix = np.stack([self.items[i][0] for i in ids])
        order = np.argsort(-(queries @ matrix.T), axis=1, kind="stable")[:, :k]
        return [[ids[j] for j in row] for row in order]


def files(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(("vectors-", "delta-")))


def filled(tmp_path, kind, n=2000, **options):
    defaults = {
        "exact_max": {"flat": 100_000, "hnsw": 200, "ivfpq": 200}[kind],
        "approximate": "ivfpq" if kind == "ivfpq" else "auto",
        "exact_subset_max": 300,
        "hnsw_ef_search": 128,
        "ivf_nprobe": 64,
    }
    opts = IndexOptions(**{**defaults, **APPEND, **options})
    store = FaissStore(tmp_path / "idx", model="m", dim=DIM, options=opts)
    ledger = Ledger(store)
    rng = np.random.default_rng(0)
    vectors = unit(rng, n)
    ledger.upsert([f"p{i}" for i in range(n)], vectors, [meta(i) for i in range(n)])  # one commit: the base
    return store, ledger, rng


def test_a_small_write_appends_its_own_bytes_and_leaves_the_base_file_alone(tmp_path):
    store, ledger, rng = filled(tmp_path, "hnsw")
    base = tmp_path / "idx" / f"vectors-{store.generation:08d}.faiss"
    before, generation = base.stat(), store.generation
    assert store.stats()["index_kind"] == "hnsw" and files(tmp_path / "idx") == [base.name]

    new = unit(rng, 10)
    ledger.upsert([f"n{i}" for i in range(10)], new, [meta(i) for i in range(10)])
    log = tmp_path / "idx" / f"delta-{generation:08d}.log"
    assert files(tmp_path / "idx") == sorted([base.name, log.name])
    assert base.stat().st_mtime_ns == before.st_mtime_ns and base.stat().st_size == before.st_size
    assert log.stat().st_size == 20 + 10 * 8 + 10 * DIM * 4  # header, keys, vectors: nothing else
    stats = store.stats()
    assert (stats["generation"], stats["base_generation"], stats["delta_vectors"], stats["delta_bytes"]) == (
        generation + 1, generation, 10, log.stat().st_size,
    )
    assert stats["vectors"] == stats["products"] == 2010
    for i, hits in enumerate(store.search(new, k=1)):
        assert hits[0].id == f"n{i}" and hits[0].score == pytest.approx(1.0, abs=1e-5)

    ledger.upsert(["p3"], new[:1] * -1, [meta(3)])  # a replacement: a base key's tombstone and a new vector
    ledger.delete(["p4", "n5"])  # a base key and a delta key
    assert base.stat().st_mtime_ns == before.st_mtime_ns
    assert log.stat().st_size == 20 + 10 * 8 + 10 * DIM * 4 + (20 + 8 + DIM * 4 + 8) + (20 + 2 * 8)
    assert store.stats()["vectors"] == store.stats()["products"] == 2008 and store.stats()["dead_vectors"] == 2


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_searches_filters_and_reads_see_base_plus_delta_minus_tombstones(tmp_path, kind):
    store, ledger, rng = filled(tmp_path, kind, n=10_000 if kind == "ivfpq" else 2000)  # IVF-PQ trains on 9,984
    n = len(ledger.items)
    assert store.stats()["index_kind"] == kind
    generation = store.generation
    # Appends: new products, replacements of base products and of delta products, deletions of both.
    new = unit(rng, 60)
    ledger.upsert([f"n{i}" for i in range(60)], new, [meta(i) for i in range(60)])
    moved = unit(rng, 20)
    ledger.upsert([f"p{i}" for i in range(0, 200, 10)], moved, [{**meta(i), "tag": "rare"} for i in range(0, 200, 10)])
    ledger.upsert(["n1", "n2"], unit(rng, 2), [meta(1), meta(2)])
    ledger.delete(["p1", "p2", "n3", "n4", "nothing"])
    assert store.stats()["base_generation"] == generation  # all appended
    assert store.stats()["vectors"] == store.stats()["products"] == len(ledger.items) == n + 60 - 4

    queries = np.concatenate([new[:10], moved[:10], unit(rng, 10)])
    hits = store.search(queries, k=10)
    truth = ledger.truth(queries, 10)
    gone = {"p1", "p2", "n3", "n4"}
    for query, row in zip(queries, hits):
        assert not gone & {h.id for h in row}
        for h in row:  # every score is the product's current vector's: an old vector is never returned
            assert h.score == pytest.approx(float(ledger.items[h.id][0] @ query), abs=0.15 if kind == "ivfpq" else 1e-5)
    for i in range(10):  # products in the delta, and replaced products, are found exactly (delta vectors are exact)
        if i not in (1, 2, 3, 4):  # replaced or deleted since
            assert hits[i][0].id == f"n{i}" and hits[i][0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[10 + i][0].id == f"p{10 * i}" and hits[10 + i][0].score == pytest.approx(1.0, abs=1e-5)
    if kind == "flat":
        assert [[h.id for h in row] for row in hits] == truth
    else:
        recall = np.mean([len({h.id for h in row} & set(want)) / 10 for row, want in zip(hits, truth)])
        assert recall >= (0.9 if kind == "hnsw" else 0.6)

    # A selective filter (exact over its keys: base and delta split) and a wide one.
    rare = store.search(queries, k=10, filters={"tag": "rare"})
    rare_truth = ledger.truth(queries, 10, lambda m: m.get("tag") == "rare")
    assert all(h.metadata["tag"] == "rare" for row in rare for h in row)
    if kind == "ivfpq":  # scores of base vectors are PQ-decoded
        assert np.mean([len({h.id for h in row} & set(want)) / 10 for row, want in zip(rare, rare_truth)]) >= 0.8
    else:
        assert [[h.id for h in row] for row in rare] == rare_truth
    wide = store.search(queries, k=10, filters={"size": "S"})
    assert all(h.metadata["size"] == "S" and h.id not in gone for row in wide for h in row)

    # Reads: reconstruct (lexical's cosine) gives each product's current vector, base or delta.
    query = moved[0]
    for hit in store.lexical(["colour0", "colour1"], k=200, vector=query):
        assert hit.similarity == pytest.approx(
            float(ledger.items[hit.id][0] @ query), abs=0.15 if kind == "ivfpq" else 1e-5
        )

    # Reopened: the same state from the base file plus the log.
    store.close()
    again = FaissStore.open(tmp_path / "idx")
    assert again.stats()["delta_vectors"] == 60 + 20 + 2 - 4 and again.stats()["vectors"] == len(
        ledger.items
    )  # n1-n4 replaced or deleted
    assert [[h.id for h in row] for row in again.search(queries, k=10, filters={"tag": "rare"})] == [
        [h.id for h in row] for row in rare
    ]
    assert [[h.id for h in row] for row in again.search(queries, k=10)] == [[h.id for h in row] for row in hits]

    # Merged: one base file again, same answers for exact kinds, the dead gone where the kind can drop them.
    assert again.merge()
    assert files(tmp_path / "idx") == [f"vectors-{again.generation:08d}.faiss"]
    assert again.stats()["delta_vectors"] == 0 and again.stats()["vectors"] == again.stats()["products"] == len(
        ledger.items
    )
    assert again.stats()["dead_vectors"] == (
        22 if kind == "hnsw" else 0
    )  # HNSW keeps 20 replaced + 2 deleted base vectors dead
    merged = again.search(queries, k=10)
    if kind == "flat":
        assert [[h.id for h in row] for row in merged] == truth
    assert all(not gone & {h.id for h in row} for row in merged)
    if kind != "ivfpq":  # merged into IVF-PQ, the delta's exact vectors become PQ codes
        assert [[h.id for h in row] for row in again.search(queries, k=10, filters={"tag": "rare"})] == rare_truth
    again.close()


def test_the_delta_merges_past_its_bound_and_on_demand(tmp_path):
    store, ledger, rng = filled(tmp_path, "hnsw", n=1000, delta_max_fraction=0.05)  # 50 rows of delta at most
    first = store.generation
    for batch in range(4):  # 4 x 10 rows: appended
        ledger.upsert([f"a{batch}-{i}" for i in range(10)], unit(rng, 10), [meta(i) for i in range(10)])
    assert store.stats()["base_generation"] == first and store.stats()["delta_rows"] == 40
    ledger.upsert(
        [f"b{i}" for i in range(11)], unit(rng, 11), [meta(i) for i in range(11)]
    )  # 51 > 50: merged in the background
    assert store.wait_for_merge()
    assert store.stats()["base_generation"] == store.generation == first + 6 and store.stats()["delta_rows"] == 0
    assert files(tmp_path / "idx") == [f"vectors-{store.generation:08d}.faiss"]
    assert store.stats()["vectors"] == store.stats()["products"] == 1051

    assert not store.merge()  # nothing to merge: no commit
    generation = store.generation
    assert store.generation == generation
    ledger.delete(["p7"])
    assert store.stats()["delta_rows"] == 1 and store.merge() and store.generation == generation + 2
    assert store.stats()["dead_vectors"] == 1 and store.stats()["vectors"] == 1050

    # delta_max_vectors=0: the old path, every commit rewrites the base.
    store.close()
    store = FaissStore(tmp_path / "idx", model="m", dim=DIM, options={"delta_max_vectors": 0})
    for i in range(3):
        store.upsert([f"c{i}"], unit(rng, 1), [meta(i)])
        assert store.stats()["base_generation"] == store.generation and files(tmp_path / "idx") == [
            f"vectors-{store.generation:08d}.faiss"
        ]
    store.close()


@pytest.fixture
def pause(monkeypatch):
    """`reached, go = pause(point)`: the background merge sets `reached` at that failpoint and waits there for `go`."""
    import vitrine.index.faiss_store as module

    stops, real = {}, module.failpoint

    def hook(name):
        if name in stops:
            stops[name][0].set()
            assert stops[name][1].wait(60), f"the background merge waited at {name} for a minute"
        real(name)

    monkeypatch.setattr(module, "failpoint", hook)
    yield lambda point: stops.setdefault(point, (threading.Event(), threading.Event()))
    for _, go in stops.values():  # never leave a merge thread waiting
        go.set()


def hit_ids(store, queries, k=10):
    return [[h.id for h in row] for row in store.search(queries, k=k)]


def recall(store, ledger, queries, k=10):
    return np.mean(
        [len(set(got) & set(want)) / k for got, want in zip(hit_ids(store, queries, k), ledger.truth(queries, k))]
    )


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_commit_past_the_bound_appends_and_a_background_merge_moves_the_base(tmp_path, pause, kind):
    store, ledger, _ = filled(
        tmp_path / "background", kind, n=1000, delta_max_fraction=0.05
    )  # 50 rows of delta at most
    inline, _, _ = filled(tmp_path / "inline", kind, n=1000, delta_max_vectors=0)  # the same writes, each merged inline
    directory, first = tmp_path / "background" / "idx", store.generation
    reader = FaissStore.open(directory)  # another worker's handle
    base, before = directory / f"vectors-{first:08d}.faiss", (directory / f"vectors-{first:08d}.faiss").stat()
    rng = np.random.default_rng(5)
    batches = [([f"n{b}-{i}" for i in range(10)], unit(rng, 10)) for b in range(5)]  # 50 rows: appended
    batches.append(([f"p{i}" for i in range(0, 30, 3)], unit(rng, 10)))  # 10 replacements, 20 rows: 70 > 50
    reached, go = pause("index.merge_built")
    for ids, vectors in batches:
        for target in (ledger, inline):
            target.upsert(ids, vectors, [meta(i) for i in range(len(ids))])
    assert reached.wait(60)  # the commit past the bound has returned; its merge is under way, held here
    assert store.get_state("base") == str(first) and store.get_state("generation") == str(first + 6)
    assert files(directory) == sorted(
        [base.name, f"delta-{first:08d}.log"]
    )  # no new base file: the merge's is a temp file
    assert base.stat().st_mtime_ns == before.st_mtime_ns and store.stats()["delta_rows"] == 70
    queries = np.concatenate([batches[0][1], batches[-1][1], unit(rng, 20)])
    during = hit_ids(store, queries)  # searches during the merge read base + delta
    assert [row[0] for row in during[:20]] == batches[0][0] + batches[-1][0]
    go.set()
    assert store.wait_for_merge()
    assert store.base_generation == store.generation == first + 7 and store.stats()["delta_rows"] == 0
    assert files(directory) == [f"vectors-{first + 7:08d}.faiss"]  # no tail: nothing was committed during the merge
    assert store.stats()["vectors"] == store.stats()["products"] == inline.stats()["vectors"] == 1050
    assert store.stats()["dead_vectors"] == inline.stats()["dead_vectors"] == (10 if kind == "hnsw" else 0)
    for product, hits in zip(
        sorted(ledger.items), store.search(np.stack([ledger.items[i][0] for i in sorted(ledger.items)]), k=1)
    ):
        assert hits[0].id == product and hits[0].score == pytest.approx(1.0, abs=1e-5)
    if kind == "flat":  # exact: the same answers as the store that merged inline, as before the merge
        assert hit_ids(store, queries) == hit_ids(inline, queries) == during == ledger.truth(queries, 10)
    else:
        assert min(recall(store, ledger, queries), recall(inline, ledger, queries)) >= 0.9
    assert (
        reader.refresh() and reader.base_generation == first + 7 and hit_ids(reader, queries) == hit_ids(store, queries)
    )
    for handle in (reader, store, inline):
        handle.close()


def test_writes_committed_during_a_background_merge_survive_it(tmp_path, pause):
    store, ledger, rng = filled(tmp_path, "flat", n=1000, delta_max_fraction=0.05)
    first = store.generation
    built, copied = pause("index.merge_built"), pause("index.merge_tail_copied")
    ledger.upsert(
        [f"a{i}" for i in range(60)], unit(rng, 60), [meta(i) for i in range(60)]
    )  # 60 > 50: a background merge
    assert built[0].wait(60)
    # while it builds: new products, a base product and a delta product replaced, one of each deleted
    ledger.upsert(["b0", "b1", "p1", "a1"], unit(rng, 4), [meta(i) for i in range(4)])
    ledger.delete(["p2", "a2"])
    built[1].set()
    assert copied[0].wait(60)
    # after its first copy of those records, before its commit: copied again under the lock
    ledger.upsert(["c0", "p3", "b0"], unit(rng, 3), [meta(i) for i in range(3)])
    ledger.delete(["a3"])
    copied[1].set()
    assert store.wait_for_merge()
    assert store.base_generation == store.generation == first + 6
    assert (
        store.stats()["delta_rows"] == (4 + 2) + 2 + (3 + 2) + 1
    )  # the records committed during the merge: the new log
    assert files(tmp_path / "idx") == [f"delta-{first + 6:08d}.log", f"vectors-{first + 6:08d}.faiss"]
    assert not [p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("merge-")]
    queries = unit(rng, 30)
    assert store.stats()["vectors"] == store.stats()["products"] == len(ledger.items) == 1000 + 60 + 3 - 3
    assert hit_ids(store, queries) == ledger.truth(queries, 10)
    for product, (vector, _) in ledger.items.items():
        assert store.search(vector[None], k=1)[0][0].id == product
    reopened = FaissStore.open(tmp_path / "idx")
    assert hit_ids(reopened, queries) == ledger.truth(queries, 10) and reopened.stats()["delta_rows"] == 14
    ledger.upsert(["d0"], unit(rng, 1), [meta(0)])  # and the new log takes the next append
    assert (
        store.stats()["delta_rows"] == 15
        and reopened.refresh()
        and hit_ids(reopened, queries) == ledger.truth(queries, 10)
    )
    reopened.close()
    store.close()


def test_past_the_hard_bound_a_commit_merges_inline_and_the_background_merge_gives_way(tmp_path, pause):
    store, ledger, rng = filled(tmp_path, "flat", n=1000, delta_max_fraction=0.05)  # bound 50 rows, hard bound 4x: 200
    first = store.generation
    reached, go = pause("index.merge_tail_copied")
    ledger.upsert([f"a{i}" for i in range(60)], unit(rng, 60), [meta(i) for i in range(60)])
    assert reached.wait(60)
    ledger.upsert([f"b{i}" for i in range(100)], unit(rng, 100), [meta(i) for i in range(100)])  # 160 rows: appended
    assert store.base_generation == first and store.stats()["delta_rows"] == 160
    ledger.upsert(
        [f"c{i}" for i in range(50)], unit(rng, 50), [meta(i) for i in range(50)]
    )  # 210 > 200: merged in the commit
    assert store.base_generation == store.generation == first + 3 and store.stats()["delta_rows"] == 0
    go.set()
    assert not store.wait_for_merge()  # another merge committed first: it gave up, and removed its files
    assert sorted(p.name for p in (tmp_path / "idx").iterdir() if not p.name.startswith("index.sqlite")) == [
        "vectors-%08d.faiss" % (first + 3), "write.lock",
    ]
    queries = unit(rng, 20)
    assert store.generation == first + 3 and hit_ids(store, queries) == ledger.truth(queries, 10)
    store.close()


def test_a_failed_background_merge_keeps_the_delta_and_leaves_the_next_merge_to_the_hard_bound(
    tmp_path, monkeypatch, caplog
):
    store, ledger, rng = filled(tmp_path, "flat", n=1000, delta_max_fraction=0.05)
    first = store.generation
    failpoints.reset()
    monkeypatch.setenv("VITRINE_FAILPOINTS", "index.merge_built:1:enospc")
    ledger.upsert([f"a{i}" for i in range(60)], unit(rng, 60), [meta(i) for i in range(60)])
    with pytest.raises(OSError, match="No space left"):
        store.wait_for_merge()
    monkeypatch.delenv("VITRINE_FAILPOINTS")
    assert "background merge of" in caplog.text
    assert files(tmp_path / "idx") == [f"delta-{first:08d}.log", f"vectors-{first:08d}.faiss"]
    assert not [p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("merge-")]
    ledger.upsert(
        [f"b{i}" for i in range(10)], unit(rng, 10), [meta(i) for i in range(10)]
    )  # past the bound: not retried
    assert not store.wait_for_merge() and store.base_generation == first and store.stats()["delta_rows"] == 70
    queries = unit(rng, 20)
    assert hit_ids(store, queries) == ledger.truth(queries, 10)
    ledger.upsert([f"c{i}" for i in range(140)], unit(rng, 140), [meta(i) for i in range(140)])  # 210 > 200: inline
    assert store.base_generation == store.generation and hit_ids(store, queries) == ledger.truth(queries, 10)
    store.close()


def test_one_background_merge_per_base_across_handles(tmp_path, pause):
    writer, ledger, rng = filled(tmp_path, "flat", n=1000, delta_max_fraction=0.05)
    other = FaissStore.open(
        tmp_path / "idx"
    )  # another worker: `state.merging` names this process, alive, merging this base
    reached, go = pause("index.merge_built")
    ledger.upsert([f"a{i}" for i in range(60)], unit(rng, 60), [meta(i) for i in range(60)])
    assert reached.wait(60)
    other.upsert(["o1"], unit(rng, 1), [meta(1)])  # past the bound too, but no second merge
    assert not other.wait_for_merge()
    go.set()
    assert writer.wait_for_merge() and writer.stats()["delta_rows"] == 1  # o1, committed during the merge
    assert other.refresh() and other.base_generation == writer.base_generation and other.stats()["vectors"] == 1061
    other.close()
    writer.close()


def test_small_bases_are_rewritten_by_every_commit_by_default(tmp_path):
    store = FaissStore(tmp_path / "idx", model="m", dim=DIM)
    assert store.options.delta_min_base == IndexOptions().delta_min_base > 0
    rng = np.random.default_rng(1)
    for i in range(3):
        store.upsert([f"p{i}"], unit(rng, 1), [meta(i)])
    assert files(tmp_path / "idx") == [f"vectors-{store.generation:08d}.faiss"] and store.stats()["delta_rows"] == 0
    store.close()


def test_a_conversion_or_a_compaction_the_catalog_calls_for_happens_in_a_merge(tmp_path):
    store, ledger, rng = filled(tmp_path, "flat", n=500, exact_max=520)
    ledger.upsert([f"n{i}" for i in range(10)], unit(rng, 10), [meta(i) for i in range(10)])
    assert store.stats()["index_kind"] == "flat" and store.stats()["delta_rows"] == 10  # 510 <= exact_max: appended
    ledger.upsert(
        [f"m{i}" for i in range(20)], unit(rng, 20), [meta(i) for i in range(20)]
    )  # 530 > 520: HNSW, in the background
    assert store.wait_for_merge() and store.stats()["index_kind"] == "hnsw" and store.stats()["delta_rows"] == 0
    # Deleting over compact_dead_fraction (a quarter) of the graph rebuilds it without the dead, in the merge it starts.
    ledger.delete([f"p{i}" for i in range(140)])
    assert store.wait_for_merge()
    assert store.stats()["delta_rows"] == 0 and store.stats()["dead_vectors"] == 0 and store.stats()["vectors"] == 390
    store.close()


def test_another_handle_sees_appends_after_refresh_reading_only_the_new_bytes_and_sees_merges(tmp_path, monkeypatch):
    """Two handles on one directory, as two `vitrine serve` workers hold it."""
    writer, ledger, rng = filled(tmp_path, "hnsw")
    reader = FaissStore.open(tmp_path / "idx")
    import vitrine.index.faiss_store as module

    new = unit(rng, 5)
    ledger.upsert([f"n{i}" for i in range(5)], new, [meta(i) for i in range(5)])
    p0 = ledger.truth_vector("p0")
    ledger.delete(["p0"])
    assert "n0" not in {h.id for h in reader.search(new[:1], k=5)[0]}  # not refreshed: its own generation,
    assert "p0" not in {h.id for h in reader.search(p0, k=5)[0]}  # less what the metadata lost

    def no_base_reads(*args, **kwargs):
        raise AssertionError("an append must not make a reader reread the base")

    monkeypatch.setattr(module.VectorIndex, "read", staticmethod(no_base_reads))
    assert reader.refresh() and reader.generation == writer.generation and not reader.refresh()
    assert [row[0].id for row in reader.search(new, k=1)] == [f"n{i}" for i in range(5)]
    assert reader.stats()["vectors"] == writer.stats()["vectors"] == 2004
    monkeypatch.undo()

    old_base = writer.base_generation
    assert writer.merge()
    assert reader.refresh() and reader.base_generation == writer.base_generation != old_base
    assert [row[0].id for row in reader.search(new, k=1)] == [f"n{i}" for i in range(5)]
    assert reader.stats()["delta_rows"] == 0 and reader.stats()["vectors"] == 2004
    # and the reader writes next, from its own handle: the writer's handle catches up in its own next commit
    reader.upsert(["r1"], new[:1] * -1, [meta(1)])
    writer.upsert(["w1"], new[1:2] * -1, [meta(1)])
    assert reader.refresh()
    assert {"r1", "w1"} <= {h.id for h in reader.search(-new[:2], k=2)[0] + reader.search(-new[:2], k=2)[1]}
    assert reader.stats()["vectors"] == writer.stats()["vectors"] == reader.stats()["products"] == 2006
    reader.close()
    writer.close()


def test_a_failed_append_changes_nothing_and_its_tail_is_cut_by_the_next_writer(tmp_path, monkeypatch):
    store, ledger, rng = filled(tmp_path, "hnsw")
    ledger.upsert(["n0"], unit(rng, 1), [meta(0)])
    log = tmp_path / "idx" / f"delta-{store.base_generation:08d}.log"
    committed = log.stat().st_size
    import vitrine.index.faiss_store as module

    def disk_full(name):
        if name == "index.delta_written":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "failpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.upsert(["lost"], unit(rng, 1), [meta(1)])
    monkeypatch.undo()
    assert store.product("lost") is None and store.stats()["vectors"] == store.stats()["products"] == 2001
    assert log.stat().st_size == committed  # the sweep after the failure cut the record that never committed
    with open(log, "ab") as handle:  # a torn tail as a killed writer leaves it
        handle.write(b"VDR1 half a record")
    again = FaissStore.open(tmp_path / "idx")  # never read past the committed length; cut on open
    assert log.stat().st_size == committed and again.stats()["vectors"] == 2001
    with open(log, "ab") as handle:
        handle.write(b"garbage")
    ledger.store = again
    ledger.upsert(["n1"], unit(rng, 1), [meta(1)])  # the next writer cuts it before appending
    assert FaissStore.open(tmp_path / "idx").stats()["vectors"] == 2002
    store.close()
    again.close()


def test_a_damaged_log_is_an_error_that_names_it(tmp_path):
    store, ledger, rng = filled(tmp_path, "hnsw")
    ledger.upsert(["n0", "n1"], unit(rng, 2), [meta(0), meta(1)])
    log = tmp_path / "idx" / f"delta-{store.base_generation:08d}.log"
    store.close()
    data = bytearray(log.read_bytes())
    data[40] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(DeltaLogError, match=f"{log.name} is damaged at byte 0"):
        FaissStore.open(tmp_path / "idx")
    log.write_bytes(bytes(data[:30]))
    with pytest.raises(DeltaLogError, match="shorter than its committed"):
        FaissStore.open(tmp_path / "idx")


def test_an_index_written_before_the_delta_appends_and_reopens(tmp_path):
    """Indexes from before the delta have no `base` state: their base file is `vectors-<generation>.faiss`."""
    rng = np.random.default_rng(3)
    store = FaissStore(tmp_path / "idx", model="m", dim=DIM, options={"delta_max_vectors": 0})
    vectors = unit(rng, 100)
    store.upsert([f"p{i}" for i in range(100)], vectors, [meta(i) for i in range(100)])
    store.upsert(["p0"], vectors[1:2], [meta(0)])
    store.close()
    db = sqlite3.connect(tmp_path / "idx" / "index.sqlite")
    db.execute("DELETE FROM state WHERE name IN ('base', 'delta_bytes')")
    db.commit()
    db.close()
    old = FaissStore(tmp_path / "idx", model="m", dim=DIM, options=APPEND)
    assert old.base_generation == old.generation == 2
    old.upsert(["new"], vectors[2:3] * -1, [meta(2)])
    assert old.stats()["delta_rows"] == 1
    old.close()
    again = FaissStore.open(tmp_path / "idx")
    assert again.base_generation == 2 and again.generation == 3 and again.stats()["vectors"] == 101
    assert again.search(vectors[2:3] * -1, k=1)[0][0].id == "new"
    again.close()


def test_cli_index_merge_folds_the_delta(tmp_path, capsys):
    import numpy as np

    from vitrine.cli import main
    from vitrine.index.stores import open_store

    store = open_store(str(tmp_path / "idx"), model="vitrine:test", dim=8, create=True, options={"delta_min_base": 0})
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.upsert([f"p{i}" for i in range(20)], vectors[:20], [{"title": f"t{i}"} for i in range(20)])
    store.upsert([f"p{i}" for i in range(20, 22)], vectors[20:22], [{"title": f"t{i}"} for i in range(20, 22)])
    appended = store.stats()["delta_vectors"]
    store.close()
    assert main(["index", "merge", "--index", str(tmp_path / "idx")]) == 0
    assert appended == 2 and "merged the delta" in capsys.readouterr().err
    store = open_store(str(tmp_path / "idx"))
    try:
        assert store.stats()["delta_vectors"] == 0 and store.stats()["vectors"] == 22
        assert store.search(vectors[21:22], k=1)[0][0].id == "p21"
    finally:
        store.close()
    assert main(["index", "merge", "--index", str(tmp_path / "idx")]) == 0
    assert "nothing to merge" in capsys.readouterr().err
