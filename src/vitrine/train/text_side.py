"""The text side of a training run on cached features: what turns caption rows and strings into embeddings.

- `PooledTexts`: the MiniLM tower is locked; its pooled output per unique string is cached once and only the text
  projection can train.
- `TokenTexts`: the top `layers` MiniLM layers (and a learned pooling, when the model has one) train, on cached token
  states of the layers below, computed once per unique string. Validation runs the whole tower, which gives the same
  numbers (`MiniLMTower.forward_from` continues exactly where `hidden_after` stopped).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vitrine.train.text_cache import pooled_text_features


class PooledTexts:
    """Cached pooled features of a locked text tower; only the projection trains."""

    def __init__(self, model, strings: list[str], cache_dir, progress: bool = True):
        self.cache_dir = cache_dir
        self.features = pooled_text_features(model, strings, cache_dir, progress=progress)

    def trainable(self, model) -> list[torch.nn.Parameter]:
        return []

    def pooled(self, rows: torch.Tensor) -> torch.Tensor:
        """Pooled MiniLM features of caption rows (text-similarity smoothing reads them)."""
        return self.features[rows]

    def embed_rows(self, model, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(model.text_proj(self.features[rows].to(model.device)), dim=-1)

    def embed_strings(self, model, strings: list[str]) -> torch.Tensor:
        features = pooled_text_features(model, strings, self.cache_dir, progress=False)
        return F.normalize(model.text_proj(features.to(model.device)), dim=-1)


def cached_token_states(model, strings: list[str], start: int, cache_dir, batch_size: int = 256,
                        progress: bool = True) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(T, W) float16 token states after the first `start` MiniLM layers of every string, concatenated, with each
    string's offset and length. Cached on disk per (tower config, start, strings)."""
    spec = json.dumps({"text": model.config.text, "start": start, "strings": hashlib.sha1("\n".join(strings).encode()).hexdigest()}, sort_keys=True)
    folder = Path(cache_dir) / "text-tokens" / hashlib.sha1(spec.encode()).hexdigest()[:16] if cache_dir is not None else None
    if folder is not None and (folder / "lengths.npy").is_file():
        return torch.from_numpy(np.load(folder / "states.npy")), np.load(folder / "offsets.npy"), np.load(folder / "lengths.npy")
    chunks, lengths = [], []
    with torch.inference_mode():
        for begin in tqdm(range(0, len(strings), batch_size), desc=f"cache text token states after layer {start}", unit="batch",
                          disable=not progress, dynamic_ncols=True):
            batch = model.text.tokenize(strings[begin : begin + batch_size])
            hidden = model.text.hidden_after(batch, start)
            for row, length in enumerate(batch["attention_mask"].sum(1).tolist()):
                chunks.append(hidden[row, :length].to(torch.float16).numpy())
                lengths.append(length)
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    states = np.concatenate(chunks) if chunks else np.zeros((0, model.text.width), dtype=np.float16)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in (("states", states), ("offsets", offsets), ("lengths", lengths)):  # lengths last: the commit marker
            np.save(folder / f"{name}.tmp.npy", array)
            os.replace(folder / f"{name}.tmp.npy", folder / f"{name}.npy")
    return torch.from_numpy(states), offsets, lengths


class LiveTexts:
    """The whole text tower runs on every string (a tower that trains end to end)."""

    def __init__(self, strings: list[str]):
        self.strings = strings

    def embed_rows(self, model, rows: torch.Tensor) -> torch.Tensor:
        return self.embed_strings(model, [self.strings[int(r)] for r in rows])

    def embed_strings(self, model, strings: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for begin in range(0, len(strings), batch_size):
            out.append(model.text_features_from_tokens(model.tokenize(strings[begin : begin + batch_size])).embeds.float())
        return torch.cat(out) if out else torch.zeros(0, model.embed_dim)


class TokenTexts(LiveTexts):
    """The top `layers` MiniLM layers and the pooling train, on cached token states of the layers below; strings
    outside the cache (validation prompts) go through the whole tower, which gives the same numbers."""

    def __init__(self, model, strings: list[str], layers: int, cache_dir, progress: bool = True):
        super().__init__(strings)
        if not 0 <= layers <= model.text.layers:
            raise ValueError(f"locked.text_layers must be in [0, {model.text.layers}], got {layers}")
        self.start = model.text.layers - layers
        self.states, self.offsets, self.lengths = cached_token_states(model, strings, self.start, cache_dir, progress=progress)

    def trainable(self, model) -> list[torch.nn.Parameter]:
        """The unlocked layers and the learned pooling (if any)."""
        params = [p for layer in model.text.bert.encoder.layer[self.start :] for p in layer.parameters()]
        if hasattr(model.text, "pool_score"):
            params += list(model.text.pool_score.parameters())
        return params

    def pooled(self, rows: torch.Tensor) -> torch.Tensor:
        raise ValueError("text-similarity smoothing reads locked pooled features; it does not combine with locked.text_layers")

    def embed_rows(self, model, rows: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(rows, return_inverse=True)
        lengths = self.lengths[unique.numpy()]
        width = int(lengths.max())
        hidden = torch.zeros(len(unique), width, self.states.shape[1])
        mask = torch.zeros(len(unique), width, dtype=torch.long)
        for row, (offset, length) in enumerate(zip(self.offsets[unique.numpy()], lengths)):
            hidden[row, :length] = self.states[offset : offset + length].float()
            mask[row, :length] = 1
        _, _, pooled = model.text.forward_from(hidden.to(model.device), mask.to(model.device), self.start)
        return F.normalize(model.text_proj(pooled), dim=-1)[inverse.to(model.device)]


def text_side(model, strings: list[str], layers: int, cache_dir, progress: bool = True):
    """`TokenTexts` when some of the text side trains (top layers, or a learned pooling), else `PooledTexts`."""
    if layers or hasattr(model.text, "pool_score"):
        return TokenTexts(model, strings, layers, cache_dir, progress)
    return PooledTexts(model, strings, cache_dir, progress)
