"""Embedding of loose image files (the FashionIQ / CIRR protocols); whole catalogs go through `vitrine.embed.bank`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def embed_image_files(
    model, paths: Sequence[Path], batch_size: int = 64, progress: bool = True, desc: str = "embed images"
) -> tuple[list[int], torch.Tensor]:
    """Embed image files; returns (indices of the files that decoded, their embeddings). Unreadable files are
    skipped."""
    from tqdm import tqdm

    from vitrine.data.errors import DataError
    from vitrine.data.images import load_image_file

    kept, chunks, pending, pending_index = [], [], [], []

    def flush():
        with torch.inference_mode():
            chunks.append(model.encode_image(model.preprocess(pending)).float())
        kept.extend(pending_index)
        pending.clear()
        pending_index.clear()

    for index, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)):
        try:
            pending.append(load_image_file(str(path)))
            pending_index.append(index)
        except (DataError, OSError):
            continue
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return kept, (torch.cat(chunks) if chunks else torch.zeros(0, model.embed_dim))
