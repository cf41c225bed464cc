"""Product images kept beside the index, so the service can show any product, including uploaded ones."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from PIL import Image

from vitrine.disk import locked, sweep_temp, temp_path, writing
from vitrine.failpoints import failpoint
from vitrine.index.store import is_milvus

MAX_SIDE = 1024  # stored images are downscaled to this longest side: enough for a results grid and a detail view
STAGED = (
    "staged"  # image changes waiting for their write's commit: <token>.json (what for) and <token>.jpg (the new image)
)


def lock_dir(index: str | os.PathLike, images: str | os.PathLike) -> Path:
    """Whose writers' lock guards an index's images: the index directory's (FAISS), else the images directory's
    (Milvus)."""
    return Path(images) if is_milvus(index) else Path(index)


def sweep_images(index: str | os.PathLike, images: "ImageStore") -> list[Path]:
    """`images.sweep()` under the writers' lock of `index` (a live writer's temp files are kept either way)."""
    with locked(lock_dir(index, images.directory)):
        return images.sweep()


class ImageStore:
    """`<index>/images/<sha1 of id>.jpg`, written atomically (temp file, fsync, rename).

    A service write stages its image change (`stage`) and settles it after the store's commit (`settle`), so that
    a crash in between never shows a product's new row with its old image, or the reverse.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, product_id: str) -> Path:
        digest = hashlib.sha1(product_id.encode("utf-8")).hexdigest()
        return self.directory / f"{digest}.jpg"

    def has(self, product_id: str) -> bool:
        return self.path(product_id).is_file()

    def save(self, product_id: str, image: Image.Image) -> None:
        _write_jpeg(self.path(product_id), image)

    def remove(self, product_id: str) -> None:
        self.path(product_id).unlink(missing_ok=True)

    def stage(self, product_id: str, image: Image.Image | None, note: Mapping | None = None) -> str:
        """Prepare a new image for `product_id` (None: its removal) without showing it; returns the change's token.

        `note` (JSON) is kept with it for `settle`'s decision. Call it, and `settle`, holding the writers' lock.
        """
        token = uuid.uuid4().hex
        staged = self.directory / STAGED
        staged.mkdir(exist_ok=True)
        if image is not None:
            _write_jpeg(staged / f"{token}.jpg", image)
        entry = {**(note or {}), "id": product_id, "image": image is not None}
        _write_bytes(
            staged / f"{token}.json", json.dumps(entry).encode("utf-8")
        )  # last: a change exists once this does
        return token

    def staged_image(self, product_id: str, committed: Callable[[str, dict], bool]) -> Path | None:
        """The staged image of a committed upsert of `product_id` not yet settled (`committed` as for `settle`), or
        None.

        A reader in another process may see a row between its commit and the settle: this is its image then (the
        file may be moved into place a moment later; read it, and fall back to `path` when it is gone).
        """
        staged = self.directory / STAGED
        if not staged.is_dir():
            return None
        for journal in sorted(staged.glob("*.json")):
            try:
                entry = json.loads(journal.read_text(encoding="utf-8"))
            except (
                FileNotFoundError,
                ValueError,
            ):  # settled meanwhile, or being written (a change exists once it is whole)
                continue
            if entry.get("id") == product_id and entry.get("image") and committed(journal.stem, entry):
                return staged / f"{journal.stem}.jpg"
        return None

    def is_staged(self, path: Path) -> bool:
        return path.parent == self.directory / STAGED

    def sweep(self) -> list[Path]:
        """Remove temp files that writers which died mid-write left (see `vitrine.disk.sweep_temp`); hold the writers'
        lock."""
        return sweep_temp(self.directory) + sweep_temp(self.directory / STAGED)

    def has_staged(self) -> bool:
        staged = self.directory / STAGED
        return staged.is_dir() and any(staged.iterdir())

    def settle(self, committed: Callable[[str, dict], bool]) -> None:
        """Apply each staged change whose write committed (`committed(token, entry)`), drop the others, and clear the
        rest.

        Safe to repeat after a crash part-way: a change already applied has lost its image file and is skipped.
        """
        staged = self.directory / STAGED
        if not staged.is_dir():
            return
        for journal in sorted(staged.glob("*.json")):
            entry = json.loads(journal.read_text(encoding="utf-8"))
            picture = staged / f"{journal.stem}.jpg"
            if committed(journal.stem, entry):
                if not entry["image"]:
                    self.remove(entry["id"])
                elif picture.exists():
                    os.replace(picture, self.path(entry["id"]))
            journal.unlink()
            picture.unlink(missing_ok=True)
        for leftover in staged.iterdir():  # temp files, and images of a `stage` cut short before its journal
            leftover.unlink()


def _write_jpeg(target: Path, image: Image.Image) -> None:
    image = image.convert("RGB")
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    _write_atomic(target, lambda handle: image.save(handle, format="JPEG", quality=90))


def _write_bytes(target: Path, data: bytes) -> None:
    _write_atomic(target, lambda handle: handle.write(data))


def _write_atomic(target: Path, write: Callable) -> None:
    """Temp file, fsync, rename; on any failure (a full disk: `DiskFullError`) the temp file goes and the target is as
    before."""
    tmp = temp_path(target)
    try:
        with writing(target), open(tmp, "wb") as handle:
            write(handle)
            failpoint("images.write")  # the bytes are written, not yet synced: where a full disk shows
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
