"""The text side of a training run: what turns caption rows and strings into embeddings.

- `PooledTexts`: the MiniLM tower is locked; its pooled output per unique string is cached once and only the text
  projection trains.
- `LiveTexts`: the whole tower runs on every string (a tower that trains end to end).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitrine.embed.text_cache import pooled_text_features


class PooledTexts:
    """Cached pooled features of a locked text tower; only the projection trains."""

    def __init__(self, model, strings: list[str], cache_dir, progress: bool = True):
        self.cache_dir = cache_dir
        self.features = pooled_text_features(model, strings, cache_dir, progress=progress)

    def embed_rows(self, model, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(model.text_proj(self.features[rows].to(model.device)), dim=-1)

    def embed_strings(self, model, strings: list[str]) -> torch.Tensor:
        features = pooled_text_features(model, strings, self.cache_dir, progress=False)
        return F.normalize(model.text_proj(features.to(model.device)), dim=-1)


class LiveTexts:
    """The whole text tower runs on every string."""

    def __init__(self, strings: list[str]):
        self.strings = strings

    def embed_rows(self, model, rows: torch.Tensor) -> torch.Tensor:
        return model.text_features([self.strings[int(r)] for r in rows]).embeds

    def embed_strings(self, model, strings: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for begin in range(0, len(strings), batch_size):
            out.append(
                model.text_features_from_tokens(model.tokenize(strings[begin : begin + batch_size])).embeds.float()
            )
        return torch.cat(out) if out else torch.zeros(0, model.embed_dim)
