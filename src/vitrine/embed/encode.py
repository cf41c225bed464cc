"""Encode a catalog's images or a list of texts in batches, in memory (for evaluation and indexing)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from vitrine.data.loader import iter_batches, prefetch
from vitrine.data.records import CatalogReader, Item


def encode_catalog(
    model, reader: CatalogReader, batch_size: int = 64, keep=None, progress: bool = True, desc: str = "embed images"
) -> tuple[list[Item], torch.Tensor]:
    """(items without their images, (N, D) image embeddings). `keep(record)` filters rows before decoding."""
    metas, chunks = [], []
    total = reader.count() if progress else None
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    source = _FilteredReader(reader, keep) if keep is not None else reader
    with torch.inference_mode():
        for batch in prefetch(iter_batches(source, model.image_transform, batch_size)):
            chunks.append(model.encode_image(batch.pixels.to(model.device)).float().cpu())
            metas.extend(
                Item(id=i.id, image=None, title=i.title, attributes=i.attributes, source=i.source, row=i.row)
                for i in batch.items
            )
            bar.update(reader.position - bar.n)
    bar.close()
    return metas, (torch.cat(chunks) if chunks else torch.zeros(0, model.embed_dim))


def encode_texts(
    model, texts: Sequence[str], batch_size: int = 256, progress: bool = False, desc: str = "embed texts"
) -> torch.Tensor:
    chunks = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress):
            chunks.append(model.encode_text(list(texts[start : start + batch_size])).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.embed_dim)


class _FilteredReader:
    """A reader view that yields only the records `keep` accepts (the rest are never decoded)."""

    def __init__(self, reader: CatalogReader, keep):
        self._reader, self._keep = reader, keep

    def records(self, start: int = 0):
        return (r for r in self._reader.records(start=start) if self._keep(r))

    def __getattr__(self, name):
        return getattr(self._reader, name)
