"""A process SIGKILLed inside a delta append or a merge leaves the commit before it or the one it made, never a mix;
one SIGKILLed inside a background merge loses none of the commits made before or during it.

The writer is a real subprocess killed at a failpoint (`vitrine.failpoints`); a reader handle opened before it, in
this process, refreshes across the kill, as another `vitrine serve` worker would; then the index is reopened.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from vitrine.index.faiss_store import FaissStore
from vitrine.index.plan import IndexOptions

DIM = 16
WRITE = """
import sys
import numpy as np
from vitrine.index.faiss_store import FaissStore

store = FaissStore.open(sys.argv[1])
if sys.argv[2] == "append":
    ids, vectors, metas = eval(sys.argv[3])
    store.upsert(ids, np.asarray(vectors, np.float32), metas)
else:
    assert store.merge()
print("finished")
"""


def unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def meta(name):
    return {"title": f"item {name}", "size": "SML"[len(name) % 3]}


def files(directory):
    return sorted(
        p.name for p in directory.iterdir() if p.name != "index.sqlite" and not p.name.startswith("index.sqlite-")
    )


def check(store, expected, gone):
    """Every expected product is there with its exact vector, found first by it; nothing else is."""
    stats = store.stats()
    assert stats["vectors"] == stats["products"] == len(expected)
    ids = sorted(expected)
    keys = store.meta.keys_for(ids)
    vectors = np.stack([expected[i] for i in ids])
    np.testing.assert_array_equal(store.vectors.reconstruct(np.array([keys[i] for i in ids])), vectors)
    for product, hits in zip(ids, store.search(vectors, k=3)):
        assert hits[0].id == product and hits[0].score == pytest.approx(1.0, abs=1e-5)
    for product, vector in gone.items():
        assert all(h.id != product or h.score < 0.9999 for h in store.search(vector[None], k=3)[0])


@pytest.mark.parametrize(
    "op, point, survivor",
    [
        ("append", "index.delta_partial", "old"),  # half a record written, nothing synced
        ("append", "index.delta_written", "old"),  # record synced, SQLite not committed
        ("append", "index.committed", "new"),
        ("merge", "index.base_synced", "old"),  # new base complete under its temp name
        ("merge", "index.vectors_written", "old"),  # new base renamed into place, SQLite not committed
        ("merge", "index.merged", "new"),  # committed, old base and log not yet removed
    ],
)
def test_a_writer_killed_mid_append_or_mid_merge_leaves_one_whole_commit(tmp_path, op, point, survivor):
    rng = np.random.default_rng(7)
    options = IndexOptions(exact_max=200, hnsw_ef_search=128, delta_min_base=0, delta_max_fraction=0.5)
    store = FaissStore(tmp_path / "idx", model="m", dim=DIM, options=options)
    base = unit(rng, 1500)
    expected = {f"p{i}": v for i, v in enumerate(base)}
    store.upsert(list(expected), base, [meta(i) for i in expected])
    delta = unit(rng, 20)  # committed appends: new products, a replaced base product, deletions in both layers
    store.upsert([f"d{i}" for i in range(20)], delta, [meta(f"d{i}") for i in range(20)])
    expected.update({f"d{i}": v for i, v in enumerate(delta)})
    gone = {"p5": expected["p5"], "p6": expected["p6"], "d3": expected["d3"]}
    store.upsert(["p5"], -delta[:1], [meta("p5")])
    expected["p5"] = -delta[0]
    store.delete(["p6", "d3"])
    del expected["p6"], expected["d3"]
    assert store.stats()["delta_rows"] == 20 + 2 + 2 and store.stats()["index_kind"] == "hnsw"
    committed = store.generation
    store.close()

    reader = FaissStore.open(tmp_path / "idx")  # another process's handle, open across the kill
    check(reader, expected, gone)
    new = unit(rng, 5)
    batch = (
        [f"n{i}" for i in range(4)] + ["d0"],
        new.tolist(),
        [meta(f"n{i}") for i in range(5)],
    )  # d0: a delta product replaced
    killed = subprocess.run(
        [sys.executable, "-c", WRITE, str(tmp_path / "idx"), op, repr(batch)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VITRINE_FAILPOINTS": f"{point}:1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr[-2000:]

    after = dict(expected)
    if op == "append" and survivor == "new":
        gone["d0"] = expected["d0"]
        after.update(dict(zip(batch[0], new)))
    assert reader.refresh() == (survivor == "new")
    assert reader.generation == committed + (survivor == "new")
    check(reader, after, gone)

    reopened = FaissStore.open(tmp_path / "idx")
    check(reopened, after, gone)
    merged = op == "merge" and survivor == "new"
    assert reopened.base_generation == (committed + 1 if merged else committed - 3)
    log = tmp_path / "idx" / f"delta-{reopened.base_generation:08d}.log"
    # nothing half-written is left: one base file, the log only up to its committed length, no temp files
    assert files(tmp_path / "idx") == sorted(
        [f"vectors-{reopened.base_generation:08d}.faiss"] + ([] if merged else [log.name])
    )
    if not merged:
        assert log.stat().st_size == reopened.delta_bytes
    # and the index takes the next write from here, seen by the old reader too
    reopened.upsert(["after"], unit(rng, 1), [meta("after")])
    assert reader.refresh() and reader.product("after") is not None and reader.stats()["vectors"] == len(after) + 1
    reopened.close()
    reader.close()


MERGE = """
import sys
import threading
import numpy as np
import vitrine.index.faiss_store as module
from vitrine.index.faiss_store import FaissStore

store = FaissStore.open(sys.argv[1])
crossing, *during = eval(sys.argv[2])
real, reached, written = module.failpoint, threading.Event(), threading.Event()

def hold(name):  # the merge, its snapshot taken, waits for the commits made during it: its tail is never empty
    if name == "index.merge_built":
        reached.set()
        written.wait(60)
    real(name)

module.failpoint = hold
store.upsert(crossing[0], np.asarray(crossing[1], np.float32), crossing[2])
assert reached.wait(60)
for op in during:
    store.upsert(op[0], np.asarray(op[1], np.float32), op[2]) if len(op) == 3 else store.delete(op[0])
written.set()
store.wait_for_merge()
print("finished")
"""


@pytest.mark.parametrize(
    "point, merged",
    [
        ("index.merge_built", False),  # the new base complete under its temp name, nothing renamed or committed
        (
            "index.merge_tail_copied",
            False,
        ),  # and the records committed during the merge copied to the new log's temp file
        ("index.merge_renamed", False),  # both renamed into place under the write lock, SQLite not committed
        ("index.merge_committed", True),  # committed; the old base and log not yet removed
    ],
)
def test_a_writer_killed_mid_background_merge_keeps_every_commit(tmp_path, point, merged):
    rng = np.random.default_rng(11)
    options = IndexOptions(
        exact_max=200, hnsw_ef_search=128, delta_min_base=0, delta_max_fraction=0.02
    )  # 30 rows of delta at most
    store = FaissStore(tmp_path / "idx", model="m", dim=DIM, options=options)
    base = unit(rng, 1500)
    expected = {f"p{i}": v for i, v in enumerate(base)}
    store.upsert(list(expected), base, [meta(i) for i in expected])
    delta = unit(rng, 20)
    store.upsert([f"d{i}" for i in range(20)], delta, [meta(f"d{i}") for i in range(20)])
    expected.update({f"d{i}": v for i, v in enumerate(delta)})
    first, old_base = store.generation, store.base_generation
    store.close()

    reader = FaissStore.open(tmp_path / "idx")  # another process's handle, open across the kill
    crossing, during = unit(rng, 15), unit(rng, 3)
    ops = [
        ([f"c{i}" for i in range(15)], crossing.tolist(), [meta(f"c{i}") for i in range(15)]),  # 35 rows > 30: merge
        (
            ["n0", "p5", "d0"],
            during.tolist(),
            [meta(i) for i in ("n0", "p5", "d0")],
        ),  # during it: a new product, two replaced
        (["p6", "d1"],),
    ]  # and two deleted, one of each layer
    killed = subprocess.run(
        [sys.executable, "-c", MERGE, str(tmp_path / "idx"), repr(ops)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VITRINE_FAILPOINTS": f"{point}:1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr[-2000:]

    gone = {name: expected[name] for name in ("p5", "d0", "p6", "d1")}
    after = {**expected, **{f"c{i}": v for i, v in enumerate(crossing)}, **dict(zip(["n0", "p5", "d0"], during))}
    del after["p6"], after["d1"]
    assert reader.refresh() and reader.generation == first + 3 + merged
    check(reader, after, gone)

    reopened = FaissStore.open(tmp_path / "idx")
    check(reopened, after, gone)
    new_base = first + 4 if merged else old_base
    assert reopened.base_generation == new_base and reopened.stats()["delta_rows"] == (
        5 + 2 if merged else 20 + 15 + 5 + 2
    )
    # nothing half-done is left: the committed base and its log, no temp files
    log = tmp_path / "idx" / f"delta-{new_base:08d}.log"
    assert [name for name in files(tmp_path / "idx") if name != "write.lock"] == [
        log.name, f"vectors-{new_base:08d}.faiss",
    ]
    assert log.stat().st_size == reopened.delta_bytes
    # the next commit past the bound merges again (the process merging that base is gone); after a merge it appends
    reopened.upsert(["after"], -crossing[:1], [meta("after")])
    assert reopened.wait_for_merge() == (not merged)
    after["after"] = -crossing[0]
    check(reopened, after, gone)
    assert reader.refresh() and reader.product("after") is not None and reader.stats()["vectors"] == len(after)
    reopened.close()
    reader.close()
