"""`vitrine index build`: embed a catalog into a FaissStore, resumable after a crash at any point."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vitrine.data.catalog import open_catalog
from vitrine.data.loader import iter_batches, prefetch
from vitrine.index.faiss_store import FaissStore


@dataclass(frozen=True)
class BuildResult:
    index: str
    products: int
    added: int
    skipped: int
    seconds: float
    products_per_second: float


def build_index(data: str, index: str, model, batch_size: int = 64, commit_every: int = 4096, on_error: str = "skip",
                schema=None, progress: bool = True) -> BuildResult:
    """Add every product of `data`; each commit stores the reader position with the rows, so a rerun continues."""
    store = FaissStore(index, model=model.name, dim=model.embed_dim)
    source = os.path.abspath(data) if os.path.exists(data) else data
    state_name = f"build:{source}"
    position = int(json.loads(store.meta.get_state(state_name, '{"position": 0}'))["position"])
    reader = open_catalog(data, schema=schema, on_error=on_error, require_title=False)
    bar = tqdm(total=reader.count() if progress else None, initial=position, unit="img", desc="index build", disable=not progress, dynamic_ncols=True)
    t0, added = time.perf_counter(), 0
    ids, vectors, metas = [], [], []

    def commit(at: int, skipped: dict) -> None:
        store.upsert(ids, np.concatenate(vectors), metas, state={state_name: json.dumps({"position": at, "skipped": skipped})})

    with torch.inference_mode():
        for batch in prefetch(iter_batches(reader, model.image_transform, batch_size, start=position)):
            vectors.append(model.encode_image(batch.pixels).float().numpy())
            ids.extend(item.id for item in batch.items)
            metas.extend(item.metadata() for item in batch.items)
            added += len(batch.items)
            bar.update(batch.position - bar.n)
            if len(ids) >= commit_every:
                commit(batch.position, batch.skipped)
                ids, vectors, metas = [], [], []
        if ids:
            commit(batch.position, batch.skipped)
    bar.close()
    seconds = time.perf_counter() - t0
    result = BuildResult(index=str(index), products=store.stats()["products"], added=added, skipped=reader.report.skipped,
                         seconds=round(seconds, 2), products_per_second=round(added / seconds, 1) if seconds else 0.0)
    store.close()
    return result
