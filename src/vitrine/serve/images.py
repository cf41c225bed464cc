"""Product images kept beside the index, so the service can show any product, including uploaded ones."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image

MAX_SIDE = 1024  # stored images are downscaled to this longest side: enough for a results grid and a detail view


class ImageStore:
    """`<index>/images/<sha1 of id>.jpg`, written atomically (temp file, fsync, rename)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, product_id: str) -> Path:
        digest = hashlib.sha1(product_id.encode("utf-8")).hexdigest()
        return self.directory / f"{digest}.jpg"

    def has(self, product_id: str) -> bool:
        return self.path(product_id).is_file()

    def save(self, product_id: str, image: Image.Image) -> None:
        image = image.convert("RGB")
        if max(image.size) > MAX_SIDE:
            image = image.copy()
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        target = self.path(product_id)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            image.save(handle, format="JPEG", quality=90)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def remove(self, product_id: str) -> None:
        self.path(product_id).unlink(missing_ok=True)
