"""Pooled features of a locked image tower, computed once per (tower, resolution, view, catalog) and cached on disk.

With the tower locked, a training epoch then costs a pass of the small heads over these rows: seconds, not minutes.
Rows are written in chunks, so an interrupted caching run resumes at the first missing chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vitrine.data.transforms import to_input
from vitrine.errors import InvalidInput

VIEWS = ("plain", "flip")  # fixed augmented variants: colour-preserving by construction
CHUNK = 2048


def _key(model, ids: list[str], view: str) -> str:
    spec = {
        "image": model.config.image, "transform": model.config.transform, "view": view,
        "ids": hashlib.sha1("\n".join(ids).encode()).hexdigest(),
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _view(images: torch.Tensor, view: str) -> torch.Tensor:
    if view == "plain":
        return images
    if view == "flip":
        return images.flip(3)
    raise InvalidInput(f"unknown cached view {view!r}; vitrine caches {', '.join(VIEWS)}")


@torch.inference_mode()
def _encode_chunk(model, images: torch.Tensor, batch_size: int) -> np.ndarray:
    rows = []
    for start in range(0, len(images), batch_size):
        pixels = (
            to_input(images[start : start + batch_size], model.image_transform)
            .to(model.device)
            .contiguous(memory_format=torch.channels_last)
        )
        rows.append(model.visual(pixels)[1].to(torch.float16).cpu().numpy())
    return np.concatenate(rows)


def cached_image_features(
    model, images: torch.Tensor, ids: list[str], views: tuple[str, ...], cache_dir: str | os.PathLike,
    batch_size: int = 128, progress: bool = True,
) -> torch.Tensor:
    """(len(views), N, W) float16 pooled tower outputs for uint8 images (N, 3, S, S) at the model's eval geometry."""
    model.eval()
    visual = model.visual.to(memory_format=torch.channels_last)
    out = []
    for view in views:
        folder = Path(cache_dir) / "image" / _key(model, ids, view)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(
            json.dumps(
                {"image": model.config.image, "transform": model.config.transform, "view": view, "rows": len(ids)},
                indent=2,
            ),
            encoding="utf-8",
        )
        starts = range(0, len(ids), CHUNK)
        todo = [s for s in starts if not (folder / f"chunk-{s // CHUNK:05d}.npy").is_file()]
        bar = tqdm(
            total=len(ids),
            initial=len(ids) - sum(min(CHUNK, len(ids) - s) for s in todo),
            desc=f"cache image features ({view})",
            unit="img",
            disable=not progress,
            dynamic_ncols=True,
        )
        for start in todo:
            chunk = _encode_chunk(model, _view(images[start : start + CHUNK], view), batch_size)
            tmp = folder / f"chunk-{start // CHUNK:05d}.tmp.npy"
            np.save(tmp, chunk)
            os.replace(tmp, folder / f"chunk-{start // CHUNK:05d}.npy")
            bar.update(len(chunk))
        bar.close()
        out.append(np.concatenate([np.load(folder / f"chunk-{s // CHUNK:05d}.npy") for s in starts]))
    visual.to(memory_format=torch.contiguous_format)
    return torch.from_numpy(np.stack(out))
