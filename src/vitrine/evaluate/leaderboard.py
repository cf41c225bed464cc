"""The public fashion leaderboard's KAGL tasks (Marqo-FashionCLIP's `eval.py` protocol), on any catalog.

- text-to-image: up to 2,000 distinct titles sampled with a fixed seed; each is a query against every product's
  image, and the products with exactly that title are its relevant documents. Recall@K is the share of a query's
  relevant products in its top K (BEIR's definition: a title shared by 3 products and 1 of them found counts 1/3).
- category-to-product / sub-category-to-product: every distinct value of the field (masterCategory, subCategory) is
  a query, the raw name with no prompt; each product is normalize(0.9 image + 0.1 title text) of its unit-norm
  embeddings; Precision@K is the share of the top K that have the value.

MRR is over the top 10, as the leaderboard retrieves 10 documents per query. Results are clip_benchmark-shaped
records: `{"dataset", "model", "task", "metrics", "details"}`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from vitrine.data.records import Item
from vitrine.embed.bank import image_bank
from vitrine.embed.encode import encode_texts
from vitrine.errors import InvalidInput
from vitrine.evaluate.leaderboard_tasks import MAX_QUERIES, SEED, TASKS, TOP, task_queries


def retrieval_metrics(
    top: torch.Tensor, relevant: Sequence[Sequence[int]], ks: Sequence[int] = (1, TOP)
) -> dict[str, float]:
    """Mean Recall@K, Precision@K and MRR (within the retrieved list) of ranked rows `top` (Q, >= max K)."""
    sums: dict[str, float] = defaultdict(float)
    for ranked, rows in zip(top.tolist(), relevant):
        wanted = set(rows)
        hits = [row in wanted for row in ranked]
        for k in ks:
            found = sum(hits[:k])
            sums[f"recall@{k}"] += found / len(wanted)
            sums[f"precision@{k}"] += found / k
        sums["mrr"] += next((1.0 / (rank + 1) for rank, hit in enumerate(hits) if hit), 0.0)
    n = max(len(relevant), 1)
    return {name: round(value / n, 5) for name, value in sums.items()}


def _top(queries: torch.Tensor, documents: torch.Tensor, k: int, chunk: int = 512) -> torch.Tensor:
    parts = [
        (queries[s : s + chunk] @ documents.t()).topk(min(k, len(documents)), dim=1).indices
        for s in range(0, len(queries), chunk)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, k, dtype=torch.long)


def documents(images: torch.Tensor, titles: torch.Tensor | None, weights: tuple[float, float]) -> torch.Tensor:
    """normalize(w_image * image + w_text * title text), both unit-norm first (a missing title is a zero vector)."""
    image_weight, text_weight = weights
    docs = image_weight * F.normalize(images, dim=-1)
    if text_weight and titles is not None:
        docs = docs + text_weight * titles
    return F.normalize(docs, dim=-1)


def run_leaderboard(
    data: str, model, tasks: Sequence[str] = tuple(TASKS), max_queries: int = MAX_QUERIES, seed: int = SEED,
    dataset: str = "kagl", cache_dir: str | os.PathLike | None = "runs/cache", schema=None, progress: bool = True,
    query_filter: Callable[[Item], bool] | None = None, query_split: str = "all",
) -> list[dict]:
    """One clip_benchmark-shaped record per task for `model` on the catalog `data` (every product in the gallery).
    `query_filter` (named `query_split` in the records) samples text-to-image queries from the titles of the products
    it accepts only, e.g. those the model never trained on; category queries are the field's values either way."""
    unknown = [name for name in tasks if name not in TASKS]
    if unknown:
        raise InvalidInput(f"unknown leaderboard task(s) {unknown}; choose from {sorted(TASKS)}")
    bank = image_bank(model, [data], cache_dir=cache_dir, schema=schema, progress=progress)
    if not bank.items:
        raise InvalidInput(f"{data} holds no products")
    titles = None
    if any(TASKS[name].doc_weights[1] for name in tasks):
        texts = [item.title or "" for item in bank.items]
        titles = F.normalize(encode_texts(model, texts, progress=progress, desc="embed titles"), dim=-1)
        titles[[i for i, text in enumerate(texts) if not text.strip()]] = 0.0
    records = []
    for name in tasks:
        task = TASKS[name]
        titles_only = task.query_field is None
        queries = task_queries(bank.items, task, max_queries, seed, query_filter if titles_only else None)
        if not queries:
            raise InvalidInput(f"{data}: no products have a {task.query_field or 'title'} for task {name}")
        query_embeds = F.normalize(
            encode_texts(model, list(queries), progress=progress, desc=f"embed {name} queries"), dim=-1
        )
        top = _top(query_embeds, documents(bank.embeds, titles, task.doc_weights), TOP)
        metrics = retrieval_metrics(top, list(queries.values()))
        records.append(
            {
                "dataset": dataset,
                "model": model.name,
                "task": name,
                "metrics": metrics,
                "details": {
                    "n_queries": len(queries),
                    "gallery_size": len(bank.items),
                    "seed": seed,
                    "max_queries": max_queries,
                    "query_field": task.query_field or "title",
                    "query_split": query_split if titles_only else "all",
                    "doc_weights": {"image": task.doc_weights[0], "title": task.doc_weights[1]},
                },
            }
        )
    return records
