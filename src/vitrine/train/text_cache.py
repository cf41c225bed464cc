"""Pooled features of a locked text tower, computed once per unique string and cached on disk."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


def _cache_key(tower_id: str, strings: list[str]) -> str:
    digest = hashlib.sha1(tower_id.encode("utf-8"))
    for text in strings:
        digest.update(b"\x1e" + text.encode("utf-8"))
    return digest.hexdigest()[:20]


def pooled_text_features(model, strings: list[str], cache_dir: str | os.PathLike | None, batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """(len(strings), W) pooled outputs of `model.text` (before the projection); cached by content."""
    tower_id = f"{type(model.text).__name__}:{model.config.text}"
    path = Path(cache_dir) / "text" / f"{_cache_key(tower_id, strings)}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return torch.from_numpy(np.load(path))
    chunks = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(strings), batch_size), desc="encode texts (cached once)", unit="batch", disable=not progress):
            batch = model.text.tokenize(strings[start : start + batch_size])
            chunks.append(model.text(batch)[2].float())
    features = torch.cat(chunks) if chunks else torch.zeros(0, model.text.width)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, features.numpy())
        os.replace(tmp, path)
    return features
