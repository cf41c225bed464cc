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

from vitrine.train.data import to_input

VIEWS = ("plain", "flip")  # fixed augmented variants: colour-preserving by construction
CHUNK = 2048


def _key(model, ids: list[str], view: str, stop_block: int | None) -> str:
    spec = {"image": model.config.image, "transform": model.config.transform, "view": view,
            "ids": hashlib.sha1("\n".join(ids).encode()).hexdigest()}
    if stop_block is not None:
        spec["stop_block"] = stop_block
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _view(images: torch.Tensor, view: str) -> torch.Tensor:
    if view == "plain":
        return images
    if view == "flip":
        return images.flip(3)
    raise ValueError(f"unknown cached view {view!r}; vitrine caches {', '.join(VIEWS)}")


@torch.inference_mode()
def _encode_chunk(model, images: torch.Tensor, batch_size: int, stop_block: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled features; or, with `stop_block`, the feature maps after the lower blocks and the means of the pooled
    blocks among them (multi-level pooling with an unlocked top)."""
    rows, taps = [], []
    lower = model.visual.lower_taps(stop_block) if stop_block is not None and hasattr(model.visual, "lower_taps") else ()
    for start in range(0, len(images), batch_size):
        pixels = to_input(images[start : start + batch_size], model.image_transform).contiguous(memory_format=torch.channels_last)
        if stop_block is None:
            out = model.visual(pixels)[1]
        else:  # the locked lower stages only: the feature map the unlocked top starts from
            net = model.visual.net
            out, means = net.stem(pixels), []
            for index in range(stop_block):
                out = net._blocks[index](out)
                if index in lower:
                    means.append(out.mean(dim=(2, 3)))
            out = out.contiguous()
            if means:
                taps.append(torch.cat(means, dim=1).to(torch.float16).numpy())
        rows.append(out.to(torch.float16).numpy())
    return np.concatenate(rows), (np.concatenate(taps) if taps else None)


def cached_image_features(model, images: torch.Tensor, ids: list[str], views: tuple[str, ...], cache_dir: str | os.PathLike,
                          batch_size: int = 128, progress: bool = True, stop_block: int | None = None) -> torch.Tensor:
    """(len(views), N, W) float16 pooled tower outputs for uint8 images (N, 3, S, S) at the model's eval geometry;
    with `stop_block`, (len(views), N, C, h, w) feature maps after the tower's first `stop_block` blocks instead."""
    model.eval()
    visual = model.visual.to(memory_format=torch.channels_last)
    out = []
    for view in views:
        folder = Path(cache_dir) / "image" / _key(model, ids, view, stop_block)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(json.dumps({"image": model.config.image, "transform": model.config.transform, "view": view,
                                                      "stop_block": stop_block, "rows": len(ids)}, indent=2), encoding="utf-8")
        starts = range(0, len(ids), CHUNK)
        todo = [s for s in starts if not (folder / f"chunk-{s // CHUNK:05d}.npy").is_file()]
        bar = tqdm(total=len(ids), initial=len(ids) - sum(min(CHUNK, len(ids) - s) for s in todo),
                   desc=f"cache image {'features' if stop_block is None else f'maps after block {stop_block}'} ({view})", unit="img", disable=not progress, dynamic_ncols=True)
        for start in todo:
            chunk, taps = _encode_chunk(model, _view(images[start : start + CHUNK], view), batch_size, stop_block)
            if taps is not None:  # before the map chunk, which marks the pair as done
                np.save(folder / f"taps-{start // CHUNK:05d}.tmp.npy", taps)
                os.replace(folder / f"taps-{start // CHUNK:05d}.tmp.npy", folder / f"taps-{start // CHUNK:05d}.npy")
            tmp = folder / f"chunk-{start // CHUNK:05d}.tmp.npy"
            np.save(tmp, chunk)
            os.replace(tmp, folder / f"chunk-{start // CHUNK:05d}.npy")
            bar.update(len(chunk))
        bar.close()
        out.append(np.concatenate([np.load(folder / f"chunk-{s // CHUNK:05d}.npy") for s in starts]))
    visual.to(memory_format=torch.contiguous_format)
    return torch.from_numpy(np.stack(out))


def cached_lower_taps(model, ids: list[str], views: tuple[str, ...], cache_dir: str | os.PathLike, stop_block: int) -> torch.Tensor | None:
    """(len(views), N, sum of widths) float16 means of the pooled blocks below `stop_block`, written beside the maps by
    `cached_image_features(..., stop_block=...)`; None when no pooled block lies below it."""
    if not (hasattr(model.visual, "lower_taps") and model.visual.lower_taps(stop_block)):
        return None
    out = []
    for view in views:
        folder = Path(cache_dir) / "image" / _key(model, ids, view, stop_block)
        starts = range(0, len(ids), CHUNK)
        missing = [s for s in starts if not (folder / f"taps-{s // CHUNK:05d}.npy").is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: block means are missing (a cache written before they were kept); delete the folder to rebuild it")
        out.append(np.concatenate([np.load(folder / f"taps-{s // CHUNK:05d}.npy") for s in starts]))
    return torch.from_numpy(np.stack(out))
