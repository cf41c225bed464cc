"""`vitrine index snapshot|restore`: a copy of a live index taken while the service writes is exactly one commit, and
comes back whole (rows, vectors, images) and servable; damaged snapshots and occupied targets are refused."""

from __future__ import annotations

import io
import random
import tarfile
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from tests.conftest import copy_index, make_rows, prepared_index

from vitrine.cli import main
from vitrine.data.images import decode_image
from vitrine.index.snapshot import MANIFEST, read_manifest, restore_index, snapshot_index
from vitrine.index.stores import open_store
from vitrine.serve.images import ImageStore
from vitrine.serve.settings import ServeSettings

SETTINGS = dict(tag_model="vitrine:small", combiner="sum", runtime="torch")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Twelve catalog products indexed the way `vitrine serve --catalog` does (vectors, tags, images)."""
    root = tmp_path_factory.mktemp("snapshot")
    prepared_index(root / "catalog", str(root / "index"), make_rows(12), **SETTINGS)
    return root


@pytest.fixture
def index(served, tmp_path) -> Path:
    return copy_index(served / "index", tmp_path)


class Writer(threading.Thread):
    """Upserts (new ids and replacements) and deletes through the service, recording the catalog after each commit:
    `history[generation]` is every product's row, image bytes and source image as of that commit."""

    def __init__(self, service, catalog: Path):
        super().__init__(name="writer", daemon=True)
        self.service, self.stop, self.writes, self.error = service, threading.Event(), 0, None
        rows = service.page(0, 1000, {})[1]
        self.state = {
            row["id"]: (
                row,
                service.image_bytes(row["id"]),
                decode_image((catalog / "images" / f"{row['id']}.jpg").read_bytes()),
            )
            for row in rows
        }
        self.history = {service.store.generation: dict(self.state)}

    def run(self) -> None:
        rng = random.Random(27)
        try:
            while not self.stop.is_set():
                present = sorted(self.state)
                roll = rng.random()
                if roll < 0.2 and len(present) > 4:
                    product_id = rng.choice(present)
                    self.service.delete(product_id)
                    del self.state[product_id]
                else:
                    product_id = rng.choice(present) if roll < 0.6 else f"new-{self.writes}"
                    image = Image.new("RGB", (48, 48), tuple(rng.randrange(256) for _ in range(3)))
                    row, _ = self.service.upsert(
                        product_id, f"write {self.writes}", {"gender": rng.choice(["Men", "Women"])}, image
                    )
                    self.state[product_id] = (row, self.service.image_bytes(product_id), image)
                self.history[self.service.store.generation] = dict(self.state)
                self.writes += 1
        except Exception as exc:  # reported by the test
            self.error = exc

    def wait_for(self, writes: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.writes < writes and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.error is None and self.writes >= writes, self.error


def test_a_snapshot_of_an_index_under_writes_restores_exactly_one_commit(index, served, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    import vitrine.index.snapshot as snapshot_module
    from vitrine.serve.app import create_app
    from vitrine.serve.service import SearchService

    service = SearchService(ServeSettings(index=str(index), **SETTINGS))
    service.tag = lambda image, vocabulary=None: {}  # tags play no part here
    writer = Writer(service, served / "catalog")
    during, held = [], []

    def copied(name: str) -> None:
        if name == "snapshot.db_copied":  # mid-copy, the lock held: writers wait (the copy is one commit)
            at = writer.writes
            time.sleep(0.5)
            held.append(writer.writes - at)
        if (
            name == "snapshot.copied"
        ):  # the copy is done and the writers free: the index moves on while the tar is written
            at = writer.writes
            writer.wait_for(at + 3)
            during.append(at)

    monkeypatch.setattr(snapshot_module, "failpoint", copied)
    writer.start()
    try:
        writer.wait_for(5)
        result = snapshot_index(index, tmp_path / "live.tar", progress=False)
        writer.wait_for(writer.writes + 3)
    finally:
        writer.stop.set()
        writer.join(timeout=60)
        service.close()
    assert writer.error is None and during and held == [0], (writer.error, held)
    manifest = read_manifest(tmp_path / "live.tar")
    generation = manifest["generation"]
    assert result.generation == generation and generation in writer.history
    assert max(writer.history) > generation  # the live index went on committing after the copy
    expected = writer.history[generation]
    assert manifest["products"] == result.products == len(expected) and manifest["model"] == "vitrine:small"
    assert {"index.sqlite", *(f"images/{ImageStore(index / 'images').path(i).name}" for i in expected)} <= {
        f["path"] for f in manifest["files"]
    }
    assert not any(f["path"].endswith(("write.lock", ".tmp", "-wal", "-shm")) for f in manifest["files"])

    restored = tmp_path / "restored"
    assert (
        main(["index", "restore", "--snapshot", str(tmp_path / "live.tar"), "--index", str(restored), "--no-progress"])
        == 0
    )
    store = open_store(str(restored))
    try:
        stats = store.stats()
        assert (stats["generation"], stats["products"], stats["vectors"]) == (generation, len(expected), len(expected))
        total, rows = store.page(0, 1000)
        assert total == len(expected) and {row["id"]: row for row in rows} == {
            i: row for i, (row, _, _) in expected.items()
        }
        images = ImageStore(restored / "images")
        from vitrine.models import create_model

        model = create_model("vitrine:small")
        for product_id, (_, stored, source) in sorted(expected.items()):
            assert images.path(product_id).read_bytes() == stored, product_id  # this commit's image, not a later one's
            vector = model.encode_image(model.preprocess([source])).detach().float().numpy()
            [hits] = store.search(
                vector, k=len(expected)
            )  # catalog products of one colour share an image: ties allowed
            scores = {hit.id: hit.score for hit in hits}
            assert scores.get(product_id, -1) > 0.999 and scores[product_id] >= hits[0].score - 1e-5, (
                product_id, hits[:2],
            )
    finally:
        store.close()

    app = create_app(ServeSettings(index=str(restored), **SETTINGS))
    try:
        with TestClient(app) as client:
            found = client.post("/search", json={"text": "red shirt", "k": 5})
            assert found.status_code == 200 and len(found.json()["results"]) == min(5, len(expected))
            first = found.json()["results"][0]["id"]
            assert client.get(f"/products/{first}/image").content == expected[first][1]
    finally:
        app.state.service.close()


def test_restore_checks_the_manifest_and_the_target(index, tmp_path, capsys):
    out = tmp_path / "snap.tar.gz"
    assert main(["index", "snapshot", "--index", str(index), "--out", str(out), "--no-progress"]) == 0
    assert "generation 1, 12 products" in capsys.readouterr().err
    assert (
        out.read_bytes()[:2] == b"\x1f\x8b" and not list(tmp_path.glob("*.tmp")) and not list(index.glob(".snapshot*"))
    )

    # an occupied target is refused unless --force, and then replaced whole
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert main(["index", "restore", "--snapshot", str(out), "--index", str(occupied), "--no-progress"]) == 2
    assert "is not empty" in capsys.readouterr().err and (occupied / "keep.txt").exists()
    assert main(["index", "restore", "--snapshot", str(out), "--index", str(occupied), "--force", "--no-progress"]) == 0
    assert not (occupied / "keep.txt").exists() and (occupied / "index.sqlite").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # a member changed after the manifest was written, a member missing, a cut-short file: refused, nothing restored
    with tarfile.open(out) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]

    def rewrite(name: str, change) -> Path:
        path = tmp_path / f"{name}.tar"
        with tarfile.open(path, "w") as tar:
            for member, data in change(members):
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        return path

    def sqlite_first(ms):
        return [(m, (d[:-1] + bytes([d[-1] ^ 1])) if m.name == "index/index.sqlite" else d) for m, d in ms]

    for path, message in (
        (rewrite("flipped", sqlite_first), "differ from the manifest"),
        (rewrite("missing", lambda ms: [x for x in ms if not x[0].name.startswith("index/vectors-")]), "files missing"),
        (rewrite("no-manifest", lambda ms: [x for x in ms if x[0].name != MANIFEST]), f"has no {MANIFEST}"),
    ):
        with pytest.raises(ValueError, match=message):
            restore_index(path, tmp_path / f"from-{path.stem}", progress=False)
        assert not (tmp_path / f"from-{path.stem}").exists()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or not a snapshot|cut short"):
        restore_index(cut, tmp_path / "from-cut", progress=False)
    evil = rewrite("evil", lambda ms: [*ms[:1], (replace_name(ms[1][0], "index/../../escape"), b"x"), *ms[1:]])
    with pytest.raises(ValueError, match="unsafe name"):
        restore_index(evil, tmp_path / "from-evil", progress=False)
    assert (
        not (tmp_path.parent / "escape").exists()
        and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    )


def replace_name(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    copy = tarfile.TarInfo(name)
    copy.mode, copy.mtime = member.mode, member.mtime
    return copy


def test_milvus_indexes_are_refused_with_a_pointer_to_milvus_backup(tmp_path, capsys):
    assert main(["index", "snapshot", "--index", f"milvus:{tmp_path / 'c.db'}", "--out", str(tmp_path / "s.tar")]) == 2
    err = capsys.readouterr().err
    assert "Milvus collection" in err and "milvus-backup" in err and not (tmp_path / "s.tar").exists()
    assert main(["index", "snapshot", "--index", str(tmp_path / "nothing"), "--out", str(tmp_path / "s.tar")]) == 2
    assert "no vitrine index" in capsys.readouterr().err
