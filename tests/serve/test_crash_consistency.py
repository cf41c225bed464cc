"""Crash consistency under load: a `vitrine serve` process SIGKILLed mid-write loses no acknowledged write and shows
nothing half-written.

A few client threads upsert (new ids, replacements, re-creations after a delete), delete and search while the
server's whole process group is SIGKILLed at seeded moments: after a seeded number of writes, or at a store
failpoint (between the vector file and the metadata commit, or right after the commit), several times, each time
restarted on the same index (the harness: tests/support/crash_load.py).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from tests.support.crash_load import (
    Load,
    Server,
    Tally,
    assert_nothing_lost,
    catalog_ledger,
    check,
    kill_under_load,
    png,
    stored_jpeg,
    summary,
    unreferenced_after,
)

from vitrine.index.stores import open_store
from vitrine.serve.images import ImageStore

SEED = int(os.environ.get("VITRINE_CRASH_SEED", "15"))  # another seed explores other kill moments and op orders
KILLS = 5
DEADLINE_S = 75.0  # the test stops starting new cycles after this; the final check follows
KILL_POINTS = ["index.vectors_written", "index.committed"]  # failpoints in FaissStore's commit (see vitrine.failpoints)


def committed_generation(index: Path) -> int:
    db = sqlite3.connect(f"file:{index / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT value FROM state WHERE name = 'generation'").fetchone()[0])
    finally:
        db.close()


def vector_files(index: Path) -> list[str]:
    return sorted(p.name for p in index.glob("vectors-*"))


def test_sigkilled_server_under_load_loses_no_acknowledged_write_and_shows_nothing_half_written(served_index, tmp_path):
    started = time.monotonic()
    deadline = started + DEADLINE_S
    index = tmp_path / "index"
    shutil.copytree(served_index / "index", index)
    rng = random.Random(SEED)
    plan = ["timer"] * (KILLS - 1 - len(KILL_POINTS)) + KILL_POINTS
    rng.shuffle(plan)
    plan.insert(0, "timer")  # the first start has no failpoint
    tally = Tally()
    with Server(index, tmp_path / "server.log") as server:
        server.start()
        slots = catalog_ledger(server.base)
        assert len(slots) == 12
        for cycle, how in enumerate(plan):
            if time.monotonic() > deadline:
                break
            if cycle:  # a failpoint kills it at its n-th commit
                server.start(failpoint=f"{how}:{rng.randint(3, 20)}" if how != "timer" else None)
                after_start = vector_files(index)
                if after_start != [f"vectors-{committed_generation(index):08d}.faiss"]:
                    tally.problems.append(f"after a restart the index holds {after_start}")
                check(server.base, slots, tally, full=False)
            load = Load(server.base, slots, tally, SEED, cycle, tmp_path, deadline)
            writes, delay = rng.randint(10, 30), rng.uniform(0.0, 0.08)  # the seeded kill moment
            kill_under_load(server, tally, load, how, writes, delay, max(1.0, min(15.0, deadline - time.monotonic())))
            stale = [name for name in vector_files(index) if name != f"vectors-{committed_generation(index):08d}.faiss"]
            tally.stale_vector_files += len(stale)
        server.start()
        count = check(server.base, slots, tally, full=True)
        server.stop()
        # The index as a later process sees it: one vector file (the committed generation's), no temp files, as many
        # vectors as rows, and images/ holding exactly the present products' images.
        assert vector_files(index) == [f"vectors-{committed_generation(index):08d}.faiss"]
        assert not list(index.glob("*.tmp"))
        unreferenced = unreferenced_after(str(index), index / "images", slots, count)

    print(
        f"\ncrash consistency (plan {plan}): {summary(tally)}; {count} products at the end; stale vector files left by "
        f"kills: {tally.stale_vector_files} (removed on restart); {time.monotonic() - started:.1f} s"
    )
    upserts, deletes = assert_nothing_lost(tally, unreferenced)
    assert tally.kills >= 3 and tally.failpoint_kills >= 1 and upserts > 0 and deletes > 0  # 5 and 2 unless cut short


# ---- regressions: a product's image changes with its row, never before or after it ---------------------------------
WRITE_AND_DIE = """
import sys
import torch
from PIL import Image
from vitrine.serve.service import SearchService
from vitrine.serve.settings import ServeSettings

torch.set_num_threads(1)
service = SearchService(ServeSettings(index=sys.argv[1], tag_model="vitrine:small", combiner="sum"))
service.tag = lambda image, vocabulary=None: {}  # tags play no part here; this skips the tagger's set-up
if sys.argv[2] == "replace":
    service.upsert("1001", "replaced", {"gender": "Men"}, Image.new("RGB", (32, 32), (1, 200, 3)))
else:
    service.delete("1001")
"""


@pytest.mark.parametrize(
    "write, point, survivor",
    [
        ("replace", "index.vectors_written", "old"), ("replace", "index.committed", "new"),
        ("delete", "index.committed", None),
    ],
)
def test_a_write_killed_mid_commit_leaves_row_and_image_together(settings, write, point, survivor):
    """Killed before its metadata commit, a write leaves the old product whole; killed after it, the new state, image
    included."""
    from vitrine.serve.service import SearchService

    images = ImageStore(Path(settings.index) / "images")
    store = open_store(settings.index)
    old_title, old_image = store.product("1001")["title"], images.path("1001").read_bytes()
    store.close()
    killed = subprocess.run(
        [sys.executable, "-c", WRITE_AND_DIE, settings.index, write], capture_output=True, text=True, timeout=120,
        env={**os.environ, "VITRINE_FAILPOINTS": f"{point}:1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    service = SearchService(settings)  # what a restarted server shows
    try:
        if survivor is None:  # deleted: no row, and no image file left behind either
            assert service.store.product("1001") is None and not images.has("1001")
        else:
            new_image = stored_jpeg(png((1, 200, 3)), ImageStore(Path(settings.index).parent / "scratch"))
            shown = (service.product("1001")["title"], service.image_path("1001").read_bytes())
            assert shown == ((old_title, old_image) if survivor == "old" else ("replaced", new_image))
        assert service.stats()["products"] == service.stats()["vectors"] == (11 if survivor is None else 12)
        assert not images.has_staged()
    finally:
        service.close()


def test_a_replacement_whose_commit_fails_keeps_the_old_image(settings, monkeypatch):
    """A commit that raises (disk full, say) rolls the row back; the image must not have moved on without it."""
    import vitrine.index.faiss_store as faiss_store
    from vitrine.serve.service import SearchService

    service = SearchService(settings)
    service.tag = lambda image, vocabulary=None: {}
    try:
        old_title, old_image = service.product("1001")["title"], service.image_path("1001").read_bytes()

        def disk_full(name: str) -> None:
            if name == "index.vectors_written":
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(faiss_store, "failpoint", disk_full)
        with pytest.raises(OSError, match="[Nn]o space left"):
            service.upsert("1001", "replaced", {}, Image.new("RGB", (32, 32), (1, 200, 3)))
        assert service.product("1001")["title"] == old_title
        assert service.image_path("1001").read_bytes() == old_image
        assert not service.images.has_staged()
    finally:
        service.close()
