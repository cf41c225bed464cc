"""The kill-under-load harness of the crash tests: a client ledger of every write, client threads that write and read
under load, a `vitrine serve` process in its own session to SIGKILL, and the check after a restart that every
acknowledged write is there whole and nothing is half-written (tests/serve/test_crash_consistency.py on FAISS,
tests/serve/test_milvus_faults.py on a Milvus server).

Each id is written by one thread only, so per id the client knows the order of its writes; every write has a unique
title and a unique image, so what the server shows names exactly one write.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image
from tests.support.http import AUTH, TOKEN, free_port

from vitrine.data.images import decode_image
from vitrine.disk import WRITE_LOCK
from vitrine.serve.images import ImageStore
from vitrine.serve.server import wait_until_ready

WRITERS = 3
SAME_VECTOR = 0.99995  # a product's score for a search with its own upload: equal vectors give 1 (to float error)


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
            sys.executable, "-m", "vitrine", "serve", "--index", str(self.index), "--host", "127.0.0.1", "--port",
            str(port), "--tag-model", "vitrine:small", "--combiner", "sum", "--max-k", "1000", "--log-level", "warning",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_until_ready(self.base, self.process, timeout=60)
        except RuntimeError as exc:
            self.kill()
            raise RuntimeError(f"{exc}\n{self.log.read_text(errors='replace')[-3000:]}") from None

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()  # whatever happened, nothing of it outlives the test

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
        self, base: str, slots: dict[str, Slot], tally: Tally, seed: int, cycle: int, scratch_dir: Path,
        deadline: float, unavailable: tuple[int, ...] = (),
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
                "/search", data={"k": str(max(count, 1)), "exclude_reference": "false"},
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


def warm(base: str) -> None:
    """The tagger set up, so that the kill lands among writes rather than in the first one's model loading."""
    answer = httpx.post(f"{base}/tag", files={"image": ("t.png", png((1, 2, 3)), "image/png")}, timeout=120)
    assert answer.status_code == 200, answer.text


def kill_under_load(server: Server, tally: Tally, load: Load, how: str, writes: int, delay: float, wait: float) -> None:
    """One cycle on the running server: `load` runs, then the server dies: SIGKILLed `delay` s after `writes`
    acknowledged writes (how == "timer"), or by the failpoint it was started with (within `wait` s, else
    SIGKILLed then)."""
    warm(server.base)
    threads = load.run()
    if how == "timer":
        load.wait_for_writes(writes, timeout=max(0.0, load.deadline - time.monotonic()))
        time.sleep(delay)
    else:
        try:
            server.process.wait(timeout=wait)
            tally.failpoint_kills += 1
        except subprocess.TimeoutExpired:
            pass
    load.stop.set()
    server.kill()
    tally.kills += 1
    for thread in threads:
        thread.join(timeout=60)


def unreferenced_after(index: str, images: Path, slots: dict, count: int) -> list[str]:
    """The store and images/ as a later process sees them: a row, a vector and an image for every present product;
    returns the files in images/ of no product (there should be none)."""
    from vitrine.index.stores import open_store

    present = sorted(i for i, s in slots.items() if s.current is not None)
    store = open_store(index)
    try:
        stats = store.stats()
        assert stats["vectors"] == stats["products"] == count == len(present)
        assert all(store.product(i) is not None for i in present)
    finally:
        store.close()
    stored = ImageStore(images)
    assert all(stored.has(i) for i in present) and not stored.has_staged()
    names = {stored.path(i).name for i in present}
    lock = images / WRITE_LOCK  # a Milvus index's writers lock lives in images/ (a FAISS index's, in its directory)
    return sorted(
        str(p.relative_to(images)) for p in images.rglob("*") if p.is_file() and p.name not in names and p != lock
    )


def summary(tally: Tally) -> str:
    """The figures every crash test prints."""
    upserts = sum(not name.startswith("delete ") for name in tally.checked)
    return (
        f"{tally.kills} kills ({tally.failpoint_kills} at a failpoint), {tally.upserts_acked} upserts and "
        f"{tally.deletes_acked} deletes acknowledged, {tally.searches} searches under load; checked intact after a "
        f"restart: {upserts} upserts, {len(tally.checked) - upserts} deletes; in-flight at kills: "
        f"{tally.in_flight_present} present, {tally.in_flight_absent} absent; problems {len(tally.problems)}, lost "
        f"{sum('LOST' in p for p in tally.problems)}"
    )


def assert_nothing_lost(tally: Tally, unreferenced: list[str]) -> tuple[int, int]:
    """No problem, no stray image; returns (acknowledged upserts, deletes) checked intact after a restart."""
    assert not tally.problems, "\n".join(tally.problems[:20])
    assert not unreferenced, unreferenced[:10]
    upserts = sum(not name.startswith("delete ") for name in tally.checked)
    return upserts, len(tally.checked) - upserts


class Phases:
    """Where a test's time went, for its figures line."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self.last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.spent[name] = self.spent.get(name, 0.0) + now - self.last
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.spent.items())
