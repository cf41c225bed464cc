"""Faults on the Milvus server path: the service SIGKILLed under writes, and the Milvus server itself killed and
restarted.

Both run `vitrine serve` on a collection of a real Milvus standalone server of this module's own
(tests/support/milvus_server.py,
the `milvus` wheel's 2.3.5: it is killed here, so never the session's shared one), with the client ledger, the load and
the "acknowledged writes survive, nothing half-written" check of tests/serve/test_crash_consistency.py:
- the service is SIGKILLed at seeded moments (after a seeded number of acknowledged writes, or at the store failpoint
  between a write's rows and its state) and restarted on the same collection and images;
- the Milvus server is SIGKILLed during writes: while it is down every request that needs the store answers 503 with
  a JSON message that says so (never a 500, never a hang), and once it is back the service recovers by itself, without
  a restart, with every acknowledged write in place. The time from the server answering again to the first successful
  search is measured (Milvus 2.3 reloads its collections once the killed server's sessions expire: ~30 s).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import make_rows, prepared_index, require_scale
from tests.support import crash_load as crash
from tests.support.http import AUTH
from tests.support.milvus_server import own_server

require_scale("pymilvus")

SEED = int(os.environ.get("VITRINE_CRASH_SEED", "20"))  # 20: a delete among each cycle's first writes
RESTARTS = int(os.environ.get("VITRINE_MILVUS_RESTARTS", "1"))  # Milvus server restarts (each ~10 s up + ~30 s reload)
RECOVERY_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    with own_server(str(tmp_path_factory.mktemp("milvus-server"))) as server:
        yield server


def served(milvus, root: Path, collection: str) -> tuple[str, Path]:
    """The twelve-product test catalog indexed (vectors, tags, images) into `collection` on the server: (spec,
    images)."""
    spec, images = f"milvus:{milvus.url}#{collection}", root / "images"
    return prepared_index(root / "catalog", spec, make_rows(12), images=str(images)), images


def test_service_sigkilled_under_writes_to_a_milvus_server_loses_no_acknowledged_write(milvus, tmp_path, monkeypatch):
    started, phase = time.monotonic(), crash.Phases()
    spec, images = served(milvus, tmp_path, "vt_faults_service")
    phase("index")
    monkeypatch.setenv("VITRINE_IMAGES", str(images))  # the server's images (a Milvus server's default is under runs/)
    rng = random.Random(SEED)
    plan = ["timer", "index.vectors_written"]  # the failpoint: rows upserted and flushed, the write's state not saved
    tally = crash.Tally()
    with crash.Server(spec, tmp_path / "serve.log") as server:
        server.start()
        slots = crash.catalog_ledger(server.base)
        assert len(slots) == 12
        for cycle, how in enumerate(plan):
            if cycle:
                phase("load")
                server.start(failpoint=f"{how}:{rng.randint(2, 3)}" if how != "timer" else None)
                phase("start")
                crash.check(server.base, slots, tally, full=False)
                phase("check")
            load = crash.Load(server.base, slots, tally, SEED, cycle, tmp_path, deadline=time.monotonic() + 60)
            writes, delay = (rng.randint(2, 4), rng.uniform(0.0, 1.0)) if how == "timer" else (0, 0.0)
            # a flush takes ~0.5 s on Milvus 2.3
            crash.kill_under_load(server, tally, load, how, writes, delay, wait=45)
        phase("load")
        server.start()
        phase("start")
        count = crash.check(server.base, slots, tally, full=False)  # rows and images; vectors of those written since
        server.stop()
        unreferenced = crash.unreferenced_after(spec, images, slots, count)
        phase("check")

    seconds = time.monotonic() - started
    print(f"\nMilvus server, service SIGKILLed: {crash.summary(tally)}; {count} products; {seconds:.1f} s ({phase})")
    upserts, deletes = crash.assert_nothing_lost(tally, unreferenced)
    assert tally.kills == 2 and tally.failpoint_kills == 1 and upserts > 0 and tally.deletes_acked > 0


def assert_unavailable(response: httpx.Response, what: str) -> str:
    """A 503 in the error contract's JSON, with a message that says the Milvus server is the matter."""
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text[:300]}"
    error = response.json()["error"]
    assert error["status"] == 503 and "Milvus server" in error["message"] and "retry" in error["message"], error
    assert response.headers.get("retry-after"), what
    return error["message"]


def test_milvus_server_killed_under_writes_answers_503_then_recovers_without_losing_a_write(
    milvus, tmp_path, monkeypatch
):
    started, phase = time.monotonic(), crash.Phases()
    spec, images = served(milvus, tmp_path, "vt_faults_restart")
    phase("index")
    monkeypatch.setenv("VITRINE_IMAGES", str(images))
    rng = random.Random(SEED + 1)
    tally = crash.Tally()
    recoveries, refusals, probes = [], 0, []
    with crash.Server(spec, tmp_path / "serve.log") as server:
        server.start()
        slots = crash.catalog_ledger(server.base)
        crash.warm(server.base)
        phase("start")
        with httpx.Client(base_url=server.base, timeout=60) as client:
            for restart in range(RESTARTS):
                load = crash.Load(
                    server.base, slots, tally, SEED, restart, tmp_path, deadline=time.monotonic() + 90,
                    unavailable=(503,),
                )
                threads = load.run()
                load.wait_for_writes(rng.randint(2, 4), timeout=45)
                time.sleep(rng.uniform(0.0, 1.0))
                phase("load")
                milvus.kill()  # mid-write, most likely: each write holds the writers' lock for its flush's ~2.5 s
                for thread in threads:  # each stops at its first 503: writes in flight then are resolved by `check`
                    thread.join(timeout=60)
                assert not any(thread.is_alive() for thread in threads), (
                    "a request hung while the Milvus server was down"
                )
                refusals += len(load.refusals)
                assert not tally.problems, "\n".join(tally.problems[:20])

                # Down: every request that needs the store is a 503 that says why; nothing is written.
                standing = next(i for i, s in sorted(slots.items()) if s.current is not None and s.pending is None)
                probe = f"probe-{restart}"
                probes.append(probe)
                message = assert_unavailable(client.post("/search", data={"text": "a red shirt", "k": "5"}), "search")
                assert "not reachable" in message, message
                assert_unavailable(client.get(f"/products/{standing}"), "GET a product")
                assert_unavailable(client.get("/healthz"), "healthz")
                assert_unavailable(
                    client.post(
                        "/products", headers=AUTH, data={"id": probe, "title": "never"},
                        files={"image": ("p.png", crash.png((9, 9, 9)), "image/png")},
                    ),
                    "upsert",
                )
                assert_unavailable(client.delete(f"/products/{standing}", headers=AUTH), "delete")
                time.sleep(rng.uniform(0.5, 2.0))  # down a little longer
                phase("down")

                # Back: the service recovers by itself; until then, 503s (the server still loading the collection).
                milvus.relaunch()
                phase("relaunch")
                up = time.monotonic()
                while True:
                    answer = client.post("/search", data={"text": "a red shirt", "k": "5"})
                    if answer.status_code == 200:
                        break
                    assert_unavailable(answer, "search while the Milvus server recovers")
                    assert time.monotonic() - up < RECOVERY_TIMEOUT_S, (
                        f"no recovery within {RECOVERY_TIMEOUT_S:.0f} s: {answer.text}"
                    )
                    time.sleep(0.25)
                recoveries.append(time.monotonic() - up)
                phase("recovery")
                count = crash.check(
                    server.base, slots, tally, full=True
                )  # every product's row, image and vector, as acknowledged
                assert not tally.problems, "\n".join(tally.problems[:20])
                for name in probes:  # refused while the server was down: no row, no image
                    assert client.get(f"/products/{name}").status_code == 404
                    assert client.get(f"/products/{name}/image").status_code == 404

            # And writes work again, through the same service process.
            after = client.post(
                "/products", headers=AUTH, data={"id": "after-restart", "title": "after"},
                files={"image": ("p.png", crash.png((250, 5, 5)), "image/png")},
            )
            assert after.status_code == 201, after.text
            assert client.delete("/products/after-restart", headers=AUTH).status_code == 204
        server.stop()
        unreferenced = crash.unreferenced_after(spec, images, slots, count)
        phase("check")

    print(
        f"\nMilvus server killed and restarted {len(recoveries)} time(s) under writes: {crash.summary(tally)}; "
        f"requests refused with 503 under load: {refusals}; recovery (server up -> first search answered): "
        f"{', '.join(f'{s:.1f} s' for s in recoveries)}; {time.monotonic() - started:.1f} s ({phase})"
    )
    upserts, _ = crash.assert_nothing_lost(tally, unreferenced)
    assert len(recoveries) == RESTARTS and upserts > 0
