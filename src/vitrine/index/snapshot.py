"""`vitrine index snapshot|restore`: a consistent copy of a live embedded index as one tar file, and back.

A snapshot takes the writers' lock (`write.lock`, `stores.writers_lock`), under which the service, `index build|add`
and `index delete` commit, so that it copies exactly one commit. Under the lock it copies the SQLite metadata through
SQLite's online backup API (what the WAL holds included; never a raw copy of a file SQLite may be writing), copies
every other file of the index directory whatever it is called (vector files, runtime records), leaving out only the
lock and temp files, and hard-links the stored product images (`<index>/images/`): every image write is a rename of a
new file, so a link keeps this commit's bytes while later writes replace the name (a copy where links fail). Then it
lets the writers go and writes the tar from those private copies: writers wait for the copy, never for the tar.

The tar holds `index/<path>` members and, last, `vitrine-snapshot.json`: generation, product count, model, time, and
every file's size and sha256. It is written to `<out>.<pid>.tmp` and renamed at the end, so a failed snapshot (a
full disk: `DiskFullError`) leaves the index and any earlier snapshot as they were. A restore extracts into a temp
folder beside the target, checks every file against the manifest, opens the store to check its generation and
product count, and only then renames it into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from tqdm import tqdm

import vitrine
from vitrine.disk import WRITE_LOCK, sweep_temp, temp_path, writing
from vitrine.errors import AlreadyExists, InvalidInput, MissingFile
from vitrine.failpoints import failpoint
from vitrine.index.faiss_store import DB_NAME
from vitrine.index.store import images_dir, is_milvus
from vitrine.index.stores import open_store, writers_lock

FORMAT = "vitrine-snapshot"
VERSION = 1
MANIFEST = "vitrine-snapshot.json"
PREFIX = "index/"
LEFT_OUT = {
    WRITE_LOCK,
    f"{DB_NAME}-wal",
    f"{DB_NAME}-shm",
    f"{DB_NAME}-journal",
}  # the database goes through the backup API
STAGING = ".snapshot-"  # <index>/.snapshot-<id>.<pid>.tmp: this snapshot's copies, removed when the tar is written
MILVUS_REFUSAL = (
    "{index} is a Milvus collection: vitrine snapshots cover the embedded FAISS + SQLite index only. Back up a Milvus "
    "collection with Milvus's own tool, milvus-backup (https://github.com/zilliztech/milvus-backup), together "
    "with its images folder ({images})"
)
CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 512 << 20  # a manifest lists every file: ~150 bytes each


@dataclass(frozen=True)
class SnapshotResult:
    path: str
    generation: int
    products: int
    files: int
    bytes: int  # the snapshot file's size
    seconds: float
    locked_seconds: float  # how long writers waited for the copy


@dataclass(frozen=True)
class RestoreResult:
    index: str
    generation: int
    products: int
    files: int
    seconds: float


def snapshot_index(index: str | os.PathLike, out: str | os.PathLike, progress: bool = True) -> SnapshotResult:
    """Write a consistent copy of the embedded index `index` (live: the service may keep serving and writing) to `out`,
    a tar (gzip-compressed when `out` ends in .tar.gz or .tgz)."""
    if is_milvus(index):
        raise InvalidInput(MILVUS_REFUSAL.format(index=index, images=images_dir(index)))
    directory = Path(index)
    if not (directory / DB_NAME).is_file():
        raise MissingFile(f"no vitrine index in {directory} (missing {DB_NAME})")
    out = Path(out)
    if out.resolve().is_relative_to(directory.resolve()):
        raise InvalidInput(f"write the snapshot outside the index directory, not to {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_temp(out.parent, prefix=f"{out.name}.")  # what an earlier snapshot to the same file left when it was killed
    t0 = time.perf_counter()
    staging = directory / f"{STAGING}{uuid.uuid4().hex[:8]}.{os.getpid()}.tmp"
    tmp = temp_path(out)
    try:
        with writers_lock(directory):
            locked_at = time.perf_counter()
            sweep_leftovers(directory)
            facts = _copy_commit(directory, staging)
            locked_seconds = time.perf_counter() - locked_at
        failpoint("snapshot.copied")  # the writers are free again; the tar is not written yet
        files = _write_tar(staging, tmp, out, facts, progress)
        os.replace(tmp, out)
        _sync_dir(out.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        tmp.unlink(missing_ok=True)
    return SnapshotResult(
        path=str(out), generation=facts["generation"], products=facts["products"], files=files,
        bytes=out.stat().st_size, seconds=round(time.perf_counter() - t0, 2), locked_seconds=round(locked_seconds, 3),
    )


def sweep_leftovers(index: str | os.PathLike) -> None:
    """Remove the copies a snapshot killed mid-way left in the index directory; hold the writers' lock."""
    sweep_temp(index, prefix=STAGING)


def _copy_commit(directory: Path, staging: Path) -> dict:
    """Under the writers' lock: the index's files as of its last commit into `staging`; returns that commit's facts."""
    with writing(staging):
        staging.mkdir()
        source = sqlite3.connect(directory / DB_NAME)
        target = sqlite3.connect(staging / DB_NAME)
        try:
            source.backup(target)  # the committed database, WAL included, in one step (no writer commits meanwhile)
            facts = _facts(target)
        finally:
            target.close()
            source.close()
        failpoint("snapshot.db_copied")  # the metadata copied, the other files not yet: no writer may commit now
        images = images_dir(directory).resolve()
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if path.is_dir() or _left_out(relative):
                continue
            copy = staging / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            if path.resolve().is_relative_to(images):
                try:
                    os.link(path, copy)  # images are only ever replaced by a rename: the link keeps this commit's bytes
                    continue
                except FileNotFoundError:  # removed since the listing: a settle of a crashed writer's staged image
                    continue
                except OSError:  # another filesystem, or links not allowed: copy
                    pass
            try:
                shutil.copyfile(path, copy)
            except FileNotFoundError:
                continue
    return facts


def _left_out(relative: Path) -> bool:
    """The lock, SQLite's own files (the database goes through the backup API), and temp files and folders."""
    parts = relative.parts
    if len(parts) == 1 and (parts[0] in LEFT_OUT or parts[0] == DB_NAME):
        return True
    return any(part.endswith(".tmp") or ".tmp." in part for part in parts)


def _facts(db: sqlite3.Connection) -> dict:
    state = dict(db.execute("SELECT name, value FROM state WHERE name IN ('generation', 'model', 'dim')").fetchall())
    products = db.execute("SELECT count(*) FROM products").fetchone()[0]
    return {
        "generation": int(state.get("generation", 0)), "products": int(products), "model": state.get("model"),
        "dim": int(state["dim"]) if "dim" in state else None,
    }


class _Hashing:
    """A file read through: sha256 and a progress bar fed on the way to the tar."""

    def __init__(self, handle, bar):
        self.handle, self.bar, self.digest = handle, bar, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        self.bar.update(len(data))
        return data


def _write_tar(staging: Path, tmp: Path, out: Path, facts: dict, progress: bool) -> int:
    paths = sorted(
        (p for p in staging.rglob("*") if p.is_file()), key=lambda p: (p.name != DB_NAME, str(p.relative_to(staging)))
    )
    sizes = {p: p.stat().st_size for p in paths}
    listed = []
    compressed = out.name.endswith((".tar.gz", ".tgz"))
    with (
        writing(out),
        tqdm(
            total=sum(sizes.values()), unit="B", unit_scale=True, unit_divisor=1024, desc="snapshot",
            disable=not progress, dynamic_ncols=True,
        ) as bar,
    ):
        with open(tmp, "wb") as raw:
            with tarfile.open(
                fileobj=raw, mode="w:gz" if compressed else "w", **({"compresslevel": 6} if compressed else {})
            ) as tar:
                for path in paths:
                    name = path.relative_to(staging).as_posix()
                    info = tarfile.TarInfo(PREFIX + name)
                    info.size, info.mtime, info.mode = sizes[path], int(path.stat().st_mtime), 0o644
                    with open(path, "rb") as handle:
                        reader = _Hashing(handle, bar)
                        tar.addfile(info, reader)
                    listed.append({"path": name, "size": sizes[path], "sha256": reader.digest.hexdigest()})
                    failpoint("snapshot.write")
                manifest = {
                    "format": FORMAT,
                    "version": VERSION,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "vitrine": vitrine.__version__,
                    "source": str(staging.parent.resolve()),
                    "backend": "faiss",
                    **facts,
                    "files": listed,
                }
                data = json.dumps(manifest, indent=1).encode("utf-8")
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
    return len(listed)


def read_manifest(snapshot: str | os.PathLike) -> dict:
    """The manifest of a snapshot file (it is the last member: this reads the whole file)."""
    with tarfile.open(snapshot, "r|*") as tar:
        for member in tar:
            if member.name == MANIFEST and member.isfile():
                return json.loads(tar.extractfile(member).read().decode("utf-8"))
    raise InvalidInput(f"{snapshot} has no {MANIFEST}: not a vitrine snapshot")


def restore_index(
    snapshot: str | os.PathLike, index: str | os.PathLike, force: bool = False, progress: bool = True
) -> RestoreResult:
    """Bring back the index of `snapshot` into the directory `index` (new or empty; with `force`, replacing what it
    holds).

    Every file is checked against the manifest and the store opened before the directory is put in place: a bad or
    truncated snapshot (or a full disk) leaves `index` as it was.
    """
    if is_milvus(index):
        raise InvalidInput(
            f"{index}: a snapshot restores into an embedded index directory; restore a Milvus collection with "
            "milvus-backup"
        )
    snapshot, target = Path(snapshot), Path(index).absolute()
    if not snapshot.is_file():
        raise MissingFile(f"no snapshot file {snapshot}")
    if target.exists() and not target.is_dir():
        raise AlreadyExists(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise AlreadyExists(
            f"{target} is not empty: restore into a new or empty directory, or pass --force to replace "
            f"what it holds (stop any service using it first)"
        )
    t0 = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_temp(target.parent, prefix=f".{target.name}.restore.")  # restores into the same place that were killed
    staging = target.parent / f".{target.name}.restore.{os.getpid()}.tmp"
    aside = target.parent / f".{target.name}.replaced.{os.getpid()}.tmp"
    try:
        with writing(staging):
            staging.mkdir()
            manifest, extracted = _extract(snapshot, staging, progress)
        _verify(snapshot, manifest, extracted)
        store = open_store(str(staging))
        try:
            stats = store.stats()
        finally:
            store.close()
        if (stats["generation"], stats["products"]) != (manifest["generation"], manifest["products"]) or stats[
            "vectors"
        ] != stats["products"]:
            raise InvalidInput(
                f"{snapshot}: the restored index holds generation {stats['generation']} with {stats['products']} "
                "products and "
                f"{stats['vectors']} vectors; its manifest says generation {manifest['generation']} with "
                f"{manifest['products']} products. Nothing was restored"
            )
        if target.is_dir():
            if any(target.iterdir()):
                os.rename(target, aside)
            else:
                target.rmdir()
        os.rename(staging, target)
        _sync_dir(target.parent)
    except BaseException:
        if aside.exists() and not target.exists():
            os.rename(aside, target)  # the index that was there stays
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
    return RestoreResult(
        index=str(target), generation=manifest["generation"], products=manifest["products"], files=len(extracted),
        seconds=round(time.perf_counter() - t0, 2),
    )


def _extract(snapshot: Path, staging: Path, progress: bool) -> tuple[dict | None, dict[str, tuple[int, str]]]:
    """Every `index/...` member into `staging` with its size and sha256; the manifest. Only plain files with safe
    names."""
    manifest, extracted = None, {}
    with (
        tqdm(
            total=snapshot.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc="restore",
            disable=not progress, dynamic_ncols=True,
        ) as bar,
        open(snapshot, "rb") as raw,
    ):
        try:
            with tarfile.open(fileobj=raw, mode="r|*") as tar:
                for member in tar:
                    tar.members = []  # stream mode keeps every header otherwise
                    if member.name == MANIFEST and member.isfile() and manifest is None:
                        if member.size > MAX_MANIFEST_BYTES:
                            raise InvalidInput(
                                f"{snapshot}: {MANIFEST} declares {member.size} bytes; not a vitrine snapshot"
                            )
                        manifest = _manifest(snapshot, tar.extractfile(member).read())
                        continue
                    name = _member_name(snapshot, member)
                    if name in extracted:
                        raise InvalidInput(f"{snapshot}: member {member.name!r} appears twice; nothing was restored")
                    path = staging / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    digest, size, source = hashlib.sha256(), 0, tar.extractfile(member)
                    with open(path, "wb") as handle:
                        while chunk := source.read(CHUNK):
                            digest.update(chunk)
                            size += len(chunk)
                            handle.write(chunk)
                        handle.flush()
                        os.fsync(handle.fileno())
                    extracted[name] = (size, digest.hexdigest())
                    bar.update(raw.tell() - bar.n)
        except (tarfile.TarError, EOFError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{snapshot} is truncated or not a snapshot tar ({exc}); nothing was restored") from None
        bar.update(raw.tell() - bar.n)
    return manifest, extracted


def _manifest(snapshot: Path, data: bytes) -> dict:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise InvalidInput(f"{snapshot}: {MANIFEST} is not valid JSON ({exc}); nothing was restored") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput(f"{snapshot}: {MANIFEST} is not a vitrine snapshot manifest; nothing was restored")
    if manifest.get("version") != VERSION:
        raise InvalidInput(
            f"{snapshot}: snapshot format version {manifest.get('version')!r}; this vitrine reads version {VERSION}"
        )
    return manifest


def _member_name(snapshot: Path, member: tarfile.TarInfo) -> str:
    """The path inside the index of an `index/...` member; anything else (links, devices, names climbing out) is
    refused."""
    if not member.name.startswith(PREFIX) or not member.isfile():
        raise InvalidInput(
            f"{snapshot}: member {member.name!r} is not a file of a vitrine snapshot; nothing was restored"
        )
    name = member.name[len(PREFIX) :]
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"{snapshot}: member {member.name!r} has an unsafe name; nothing was restored")
    return "/".join(parts)


def _verify(snapshot: Path, manifest: dict | None, extracted: dict[str, tuple[int, str]]) -> None:
    if manifest is None:
        raise InvalidInput(f"{snapshot} has no {MANIFEST} (cut short, or not a vitrine snapshot); nothing was restored")
    listed = {entry["path"]: (entry["size"], entry["sha256"]) for entry in manifest.get("files", [])}
    missing, extra = sorted(set(listed) - set(extracted)), sorted(set(extracted) - set(listed))
    if missing or extra:
        raise InvalidInput(
            f"{snapshot}: files missing {missing[:5]} / not in the manifest {extra[:5]}; nothing was restored"
        )
    changed = sorted(name for name, facts in extracted.items() if facts != listed[name])
    if changed:
        raise InvalidInput(
            f"{snapshot}: {len(changed)} file(s) differ from the manifest (size or sha256), e.g. {changed[0]}; "
            "nothing was restored"
        )
    if DB_NAME not in extracted:
        raise InvalidInput(f"{snapshot} holds no {DB_NAME}; nothing was restored")


def _sync_dir(directory: Path) -> None:
    """fsync a directory, so that a rename in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
