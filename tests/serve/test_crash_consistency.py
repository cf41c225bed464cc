"""Crash consistency under load: a `vitrine serve` process SIGKILLed mid-write loses no acknowledged write and shows
nothing half-written.

A few client threads upsert (new ids, replacements, re-creations after a delete), delete and search while the
server's whole process group is SIGKILLed at seeded moments: after a seeded number of writes, or at a store
failpoint (between the vector file and the metadata commit, or right after the commit), several times, each time
restarted on the same index. Each id is written by one thread only, so per id the client knows the order of its
writes; every write has a unique title and a unique image, so what the server shows names exactly one write.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image
from tests.support.http import AUTH, TOKEN

from vitrine.data.images import decode_image
from vitrine.index.stores import open_store
from vitrine.serve.images import ImageStore
from vitrine.serve.server import wait_until_ready

SEED = int(os.environ.get("VITRINE_CRASH_SEED", "15"))  # another seed explores other kill moments and op orders
KILLS = 5
WRITERS = 3
DEADLINE_S = 75.0  # the test stops starting new cycles after this; the final check follows
SAME_VECTOR = 0.99995  # a product's score for a search with its own upload: equal vectors give 1 (to float error)
KILL_POINTS = ["index.vectors_written", "index.committed"]  # failpoints in FaissStore's commit (see vitrine.failpoints)


@dataclass(frozen=True)
class Version:
    """One upsert as the client sent it, and the image bytes the server must store for it."""

    title: str
    attributes: dict
    stored: bytes  # see `stored_jpeg`
    upload: bytes | None = None  # None for the catalog's own products (indexed from files, not uploaded)


@dataclass
class Slot:
    """One product id: its acknowledged state, and the write that was in flight at a kill (its effect unknown)."""

    current: Version | None
    owner: int
    pending: tuple[str, Version | None] | None = None
    acked: str | None = None  # the last acknowledged write that made `current`: a version's title, or "delete <n>"
    history: list[Version] = field(default_factory=list)  # every version ever sent: what a concurrent read may see
    deleted_ever: bool = False
    touched: bool = False  # written since the last check: its vector is checked again


@dataclass
class Tally:
    kills: int = 0
    failpoint_kills: int = 0
    upserts_acked: int = 0
    deletes_acked: int = 0
    in_flight_present: int = 0
    in_flight_absent: int = 0
    checked: set[str] = field(default_factory=set)  # acknowledged writes seen intact after a restart (`Slot.acked`)
    searches: int = 0
    stale_vector_files: int = 0  # left by a kill, removed by the next start
    problems: list[str] = field(default_factory=list)


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def stored_jpeg(upload: bytes, scratch: ImageStore) -> bytes:
    """What the server stores for an upload: the service decodes it and saves it with `ImageStore.save`.

    JPEG encoding is deterministic for the same pixels, encoder settings and Pillow build (the server runs from
    this interpreter), so the bytes a GET returns must equal these exactly, with no tolerance. Each write
    reads back its image right after the acknowledgement and checks it against this too, so the assumption is
    tested rather than trusted, and the byte equality below names which write's image is stored.
    """
    scratch.save("probe", decode_image(upload))
    return scratch.path("probe").read_bytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`vitrine serve` in its own session, so that a kill reaches every process it started."""

    def __init__(self, index: Path, log: Path):
        self.index, self.log = index, log
        self.process: subprocess.Popen | None = None
        self.base = ""

    def start(self, failpoint: str | None = None) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "VITRINE_WRITE_TOKEN": TOKEN}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop("VITRINE_FAILPOINTS", None)
        if failpoint:
            env["VITRINE_FAILPOINTS"] = failpoint
        command = [
            sys.executable,
            "-m",
            "vitrine",
            "serve",
            "--index",
            str(self.index),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--tag-model",
            "vitrine:small",
            "--combiner",
            "sum",
            "--max-k",
            "1000",
            "--log-level",
            "warning",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_until_ready(self.base, self.process, timeout=60)
        except RuntimeError as exc:
            self.kill()
            raise RuntimeError(f"{exc}\n{self.log.read_text(errors='replace')[-3000:]}") from None

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # a failpoint killed it already and it had no children
            pass
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), for the final look at the files."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


class Load:
    """Client threads for one cycle: writers own disjoint ids; a reader searches and fetches what it finds."""

    def __init__(
        self,
        base: str,
        slots: dict[str, Slot],
        tally: Tally,
        seed: int,
        cycle: int,
        scratch_dir: Path,
        deadline: float,
        unavailable: tuple[int, ...] = (),
    ):
        self.base, self.slots, self.tally, self.deadline = base, slots, tally, deadline
        # statuses that say "not now" (a 503 while the store's server is down): like no answer, a write so refused is
        # unacknowledged with its effect unknown (resolved by `check`), and the thread stops
        self.unavailable = unavailable
        self.refusals: list[str] = []
        self.cycle, self.seed, self.scratch_dir = cycle, seed, scratch_dir
        self.lock = threading.Lock()
        self.acked = threading.Condition(self.lock)
        self.writes_acked = 0
        self.stop = threading.Event()
        self.seen_images = {v.stored for s in slots.values() for v in s.history}

    def run(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._guard, args=(self._writer, w), name=f"writer-{w}") for w in range(WRITERS)
        ]
        threads.append(threading.Thread(target=self._guard, args=(self._reader, 0), name="reader"))
        for thread in threads:
            thread.start()
        return threads

    def wait_for_writes(self, n: int, timeout: float) -> None:
        with self.acked:
            self.acked.wait_for(lambda: self.writes_acked >= n or self.stop.is_set(), timeout=timeout)

    def _guard(self, target, number: int) -> None:
        try:
            target(number)
        except Exception as exc:  # reported by the test, never lost in a thread
            with self.lock:
                self.tally.problems.append(f"{threading.current_thread().name}: {exc!r}")

    def _new_version(self, rng: random.Random, scratch: ImageStore, name: str, avoid: Version | None) -> Version:
        while True:  # a colour no write used before (and far from the one it replaces): its bytes name this write
            colour = tuple(rng.randrange(256) for _ in range(3))
            upload = png(colour)
            stored = stored_jpeg(upload, scratch)
            if avoid is not None and avoid.upload is not None:
                before = Image.open(io.BytesIO(avoid.upload)).getpixel((0, 0))
                if max(abs(a - b) for a, b in zip(before, colour)) < 80:
                    continue
            with self.lock:
                if stored not in self.seen_images:
                    self.seen_images.add(stored)
                    break
        return Version(
            title=f"{name} c{self.cycle} {colour}",
            attributes={"gender": rng.choice(["Men", "Women"]), "lot": name},
            stored=stored,
            upload=upload,
        )

    def _writer(self, w: int) -> None:
        rng = random.Random(f"{self.seed}-{self.cycle}-{w}")
        scratch = ImageStore(Path(tempfile.mkdtemp(dir=self.scratch_dir)))
        made = 0
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                with self.lock:
                    mine = sorted(i for i, s in self.slots.items() if s.owner == w)
                    present = [i for i in mine if self.slots[i].current is not None]
                    absent = [i for i in mine if self.slots[i].current is None]
                roll = rng.random()
                if present and roll < 0.2:
                    kind, product_id = "delete", rng.choice(present)
                elif present and roll < 0.5:
                    kind, product_id = "replace", rng.choice(present)
                elif absent and roll < 0.6:
                    kind, product_id = "recreate", rng.choice(absent)
                else:
                    kind, product_id = "create", f"w{w}-c{self.cycle}-{made}"
                    made += 1
                version = None
                if kind != "delete":
                    with self.lock:
                        slot = self.slots.get(product_id)
                        previous = slot.current if slot else None
                    version = self._new_version(rng, scratch, product_id, previous)
                with self.lock:
                    slot = self.slots.setdefault(product_id, Slot(current=None, owner=w))
                    slot.pending = ("delete", None) if version is None else ("upsert", version)
                    slot.touched = True
                    if version is None:
                        slot.deleted_ever = True
                    else:
                        slot.history.append(version)
                try:
                    if version is None:
                        response = client.delete(f"/products/{product_id}", headers=AUTH)
                    else:
                        response = client.post(
                            "/products",
                            headers=AUTH,
                            data={
                                "id": product_id,
                                "title": version.title,
                                "attributes": json.dumps(version.attributes),
                                "new_attributes": "true",
                            },  # "lot" is a field of its own
                            files={"image": ("p.png", version.upload, "image/png")},
                        )
                except httpx.TransportError:
                    return  # no answer: the kill; the slot keeps its pending write, resolved after the restart
                if response.status_code in self.unavailable:
                    with self.lock:
                        self.refusals.append(f"{kind} {product_id}: {response.status_code} {response.text[:300]}")
                    return
                expected = 204 if version is None else (201 if kind in ("create", "recreate") else 200)
                if response.status_code != expected:
                    with self.lock:
                        self.tally.problems.append(f"{kind} {product_id}: {response.status_code} {response.text[:200]}")
                    return
                with self.acked:
                    slot.current, slot.pending = version, None
                    if version is None:
                        self.tally.deletes_acked += 1
                        slot.acked = f"delete {self.tally.deletes_acked}"
                    else:
                        self.tally.upserts_acked += 1
                        slot.acked = version.title
                    self.writes_acked += 1
                    self.acked.notify_all()
                if version is not None:
                    try:
                        image = client.get(f"/products/{product_id}/image")
                    except httpx.TransportError:
                        return
                    if image.status_code in self.unavailable:
                        return
                    if image.status_code != 200 or image.content != version.stored:
                        with self.lock:
                            self.tally.problems.append(
                                f"{product_id}: image read right after its write differs "
                                f"({image.status_code}, {len(image.content)} bytes)"
                            )

    def _reader(self, _: int) -> None:
        """Under load, a search returns only ids some write made, and every image served is one some write sent,
        whole."""
        rng = random.Random(f"{self.seed}-{self.cycle}-reader")
        words = ["red shirt", "blue jeans", "black dress", "a watch", "green", "white top"]
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                try:
                    found = client.post("/search", data={"text": rng.choice(words), "k": "10"})
                    if found.status_code in self.unavailable:
                        with self.lock:
                            self.refusals.append(f"search: {found.status_code} {found.text[:300]}")
                        return
                    if found.status_code != 200:
                        with self.lock:
                            self.tally.problems.append(f"search under load: {found.status_code} {found.text[:200]}")
                        return
                    hits = [h["id"] for h in found.json()["results"]]
                    with self.lock:
                        self.tally.searches += 1
                        unknown = [i for i in hits if i not in self.slots]
                        if unknown:
                            self.tally.problems.append(f"search under load returned ids no write made: {unknown}")
                    hits = [i for i in hits if i not in unknown]
                    if not hits:
                        continue
                    product_id = rng.choice(hits)
                    row = client.get(f"/products/{product_id}")
                    image = client.get(f"/products/{product_id}/image")
                except httpx.TransportError:
                    return
                with self.lock:
                    slot = self.slots[product_id]
                    allowed = {v.stored for v in slot.history}
                    may_be_gone = slot.deleted_ever
                for name, response in (("product", row), ("image", image)):
                    if response.status_code == 404 and may_be_gone or response.status_code in self.unavailable:
                        continue
                    if response.status_code != 200:
                        with self.lock:
                            self.tally.problems.append(
                                f"GET {name} of {product_id} (found by a search) under load: "
                                f"{response.status_code} {response.text[:200]}"
                            )
                if image.status_code == 200 and image.content not in allowed:
                    with self.lock:
                        self.tally.problems.append(
                            f"GET image of {product_id} under load: bytes of no write ({len(image.content)} bytes)"
                        )


def catalog_ledger(base: str) -> dict[str, Slot]:
    """The catalog as the server shows it, before any write: the ledger's start (its products shared among the
    writers)."""
    slots: dict[str, Slot] = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for hit in client.post("/search", data={"text": "anything", "k": "1000"}).json()["results"]:
            view = client.get(f"/products/{hit['id']}").json()
            stored = client.get(f"/products/{hit['id']}/image").content
            slots[hit["id"]] = Slot(
                current=Version(view["title"], view["attributes"], stored), owner=len(slots) % WRITERS
            )
            slots[hit["id"]].history.append(slots[hit["id"]].current)
    return slots


def committed_generation(index: Path) -> int:
    db = sqlite3.connect(f"file:{index / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT value FROM state WHERE name = 'generation'").fetchone()[0])
    finally:
        db.close()


def vector_files(index: Path) -> list[str]:
    return sorted(p.name for p in index.glob("vectors-*"))


def same(version: Version, row: dict, image: bytes) -> bool:
    return row["title"] == version.title and row["attributes"] == version.attributes and image == version.stored


def check(base: str, slots: dict[str, Slot], tally: Tally, full: bool) -> int:
    """After a restart, with no load: the catalog the client's ledger predicts, exactly; returns the product count.

    A write in flight at the kill may have happened or not, but wholly: its row, image and vector, or none of them.
    """
    problems = tally.problems
    with httpx.Client(base_url=base, timeout=30) as client:
        for product_id, slot in sorted(slots.items()):
            row = client.get(f"/products/{product_id}")
            image = client.get(f"/products/{product_id}/image")
            observed = None
            if row.status_code == 200:
                view = row.json()
                options = [slot.current] + ([slot.pending[1]] if slot.pending else [])
                matches = [
                    v
                    for v in options
                    if v is not None and same(v, view, image.content if image.status_code == 200 else b"")
                ]
                if not matches:
                    owner = next((v.title for v in slot.history if v.stored == image.content), None)
                    problems.append(
                        f"{product_id}: shows title {view['title']!r}, attributes {view['attributes']}, image "
                        f"{image.status_code} ({len(image.content)} bytes, the image of write {owner!r}): not one "
                        "write whole "
                        f"(acknowledged: {slot.current and slot.current.title!r}, in flight: "
                        f"{slot.pending and slot.pending[1] and slot.pending[1].title!r})"
                    )
                    slot.pending = None  # reported once
                    continue
                observed = matches[0]
            elif row.status_code == 404:
                if image.status_code != 404:
                    problems.append(f"{product_id}: no row, but its image answers {image.status_code}")
            else:
                problems.append(f"{product_id}: GET answered {row.status_code} {row.text[:200]}")
                continue
            if slot.pending is not None:
                kind, sent = slot.pending
                applied = observed is sent if kind == "upsert" else observed is None
                if not applied and observed is not slot.current:
                    problems.append(f"{product_id}: neither the acknowledged state nor the in-flight {kind}")
                if applied:  # the in-flight write took effect: the acknowledged one before it is superseded
                    tally.in_flight_present += 1
                    slot.acked, slot.touched = None, True
                else:
                    tally.in_flight_absent += 1
                slot.current, slot.pending = observed, None  # resolved: from here on the ledger is exact again
            elif observed is not slot.current:
                lost = "acknowledged upsert" if slot.current is not None else "acknowledged delete"
                problems.append(
                    f"{product_id}: LOST {lost}: shows {observed and observed.title!r}, expected "
                    f"{slot.current and slot.current.title!r}"
                )
                continue
            if slot.acked:
                tally.checked.add(slot.acked)

        present = {i for i, s in slots.items() if s.current is not None}
        count = client.get("/healthz").json()["products"]
        if count != len(present):
            problems.append(f"/healthz counts {count} products, the ledger {len(present)}")
        # every live vector, each with its row: a vector without a row, or a row without one, shows here
        everything = client.post("/search", data={"text": "anything", "k": str(max(count, 1))})
        found = [h["id"] for h in everything.json()["results"]] if everything.status_code == 200 else None
        if found is None or len(found) != len(set(found)) or set(found) != present:
            problems.append(
                f"a search for every product: {everything.status_code}, {None if found is None else len(found)} hits; "
                f"missing {sorted(present - set(found or []))[:5]}, extra {sorted(set(found or []) - present)[:5]}"
            )
        for product_id, slot in sorted(slots.items()):  # each product's vector is its current image's
            version = slot.current
            if version is None or version.upload is None or not (full or slot.touched):
                continue
            result = client.post(
                "/search",
                data={"k": str(max(count, 1)), "exclude_reference": "false"},
                files={"image": ("q.png", version.upload, "image/png")},
            )
            scores = (
                {h["id"]: h["score"] for h in result.json().get("results", [])} if result.status_code == 200 else {}
            )
            if scores.get(product_id, -1.0) < SAME_VECTOR:
                problems.append(
                    f"{product_id}: a search with its own image scores it {scores.get(product_id)}: its vector is not "
                    "this write's"
                )
            slot.touched = False
    return count


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
    server = Server(index, tmp_path / "server.log")
    try:
        server.start()
        slots = catalog_ledger(server.base)
        assert len(slots) == 12
        for cycle, how in enumerate(plan):
            if time.monotonic() > deadline:
                break
            if cycle:
                server.start(failpoint=f"{how}:{rng.randint(3, 20)}" if how != "timer" else None)
                after_start = vector_files(index)
                if after_start != [f"vectors-{committed_generation(index):08d}.faiss"]:
                    tally.problems.append(f"after a restart the index holds {after_start}")
                check(server.base, slots, tally, full=False)
            # warm the tagger, so that the kill lands among writes rather than in the first one's model set-up
            warm = httpx.post(f"{server.base}/tag", files={"image": ("t.png", png((1, 2, 3)), "image/png")}, timeout=60)
            assert warm.status_code == 200, warm.text
            load = Load(server.base, slots, tally, SEED, cycle, tmp_path, deadline)
            threads = load.run()
            target, delay = rng.randint(10, 30), rng.uniform(0.0, 0.08)
            if how == "timer":
                load.wait_for_writes(target, timeout=max(0.0, deadline - time.monotonic()))
                time.sleep(delay)  # the seeded kill moment: a little after the target-th acknowledged write
            else:  # the failpoint kills it at its n-th commit
                try:
                    server.process.wait(timeout=max(1.0, min(15.0, deadline - time.monotonic())))
                    tally.failpoint_kills += 1
                except subprocess.TimeoutExpired:
                    pass
            load.stop.set()
            server.kill()
            tally.kills += 1
            for thread in threads:
                thread.join(timeout=60)
            stale = [name for name in vector_files(index) if name != f"vectors-{committed_generation(index):08d}.faiss"]
            tally.stale_vector_files += len(stale)
        server.start()
        count = check(server.base, slots, tally, full=True)
        server.stop()

        # The index as a later process sees it: one vector file (the committed generation's), no temp files,
        # as many vectors as rows, and an image for every row.
        generation = committed_generation(index)
        assert vector_files(index) == [f"vectors-{generation:08d}.faiss"]
        assert not list(index.glob("*.tmp"))
        store = open_store(str(index))
        try:
            stats = store.stats()
            present = sorted(i for i, s in slots.items() if s.current is not None)
            assert stats["vectors"] == stats["products"] == count == len(present)
            assert all(store.product(i) is not None for i in present)
        finally:
            store.close()
        # and images/ holds exactly the present products' images: nothing staged, no temp file, no image of a deleted
        # product
        images = ImageStore(index / "images")
        assert all(images.has(i) for i in present)
        unreferenced = sorted(
            str(p.relative_to(images.directory))
            for p in images.directory.rglob("*")
            if p.is_file() and p.name not in {images.path(i).name for i in present}
        )
        seconds = time.monotonic() - started
    finally:
        if server.process is not None:
            server.kill()

    upserts_checked = sum(not name.startswith("delete ") for name in tally.checked)
    deletes_checked = len(tally.checked) - upserts_checked
    figures = (
        f"crash consistency: {tally.kills} kills ({tally.failpoint_kills} at a failpoint, plan {plan}), "
        f"{tally.upserts_acked} upserts and {tally.deletes_acked} deletes acknowledged, {tally.searches} searches "
        "under load; "
        f"checked intact after a restart: {upserts_checked} acknowledged upserts, {deletes_checked} acknowledged "
        "deletes "
        f"(the others were superseded by a later acknowledged write before any restart); "
        f"in-flight writes at kills: {tally.in_flight_present} present, {tally.in_flight_absent} absent; "
        f"{count} products at the end; stale vector files left by kills: {tally.stale_vector_files} (removed on "
        "restart); "
        f"files in images/ of no product: {len(unreferenced)}; problems: {len(tally.problems)}; lost = "
        f"{sum('LOST' in p for p in tally.problems)}; {seconds:.1f} s"
    )
    print("\n" + figures)
    assert not tally.problems, "\n".join(tally.problems[:20])
    assert sum("LOST" in p for p in tally.problems) == 0
    assert not unreferenced, unreferenced[:10]
    assert (
        tally.kills >= 3 and tally.failpoint_kills >= 1 and upserts_checked > 0 and deletes_checked > 0
    )  # 5 and 2 unless the deadline cut in


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
        ("replace", "index.vectors_written", "old"),
        ("replace", "index.committed", "new"),
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
        [sys.executable, "-c", WRITE_AND_DIE, settings.index, write],
        capture_output=True,
        text=True,
        timeout=120,
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
