"""The leaderboard's KAGL task definitions, published rows and table (no torch: the CLI reads them at start-up)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

from vitrine.data.records import Item

TOP = 10  # documents retrieved per query (the leaderboard's max K)
MAX_QUERIES = 2000
SEED = 0


@dataclass(frozen=True)
class LeaderboardTask:
    """One task: queries from `query_field` (None: titles) against documents weighted (image, title text)."""

    name: str
    query_field: str | None
    doc_weights: tuple[float, float]
    measure: str  # "recall" or "precision": the leaderboard's column for the task


TASKS = {
    "text-to-image": LeaderboardTask("text-to-image", None, (1.0, 0.0), "recall"),
    "category-to-product": LeaderboardTask("category-to-product", "masterCategory", (0.9, 0.1), "precision"),
    "sub-category-to-product": LeaderboardTask("sub-category-to-product", "subCategory", (0.9, 0.1), "precision"),
}


def task_queries(
    items: Sequence[Item], task: LeaderboardTask, max_queries: int = MAX_QUERIES, seed: int = SEED,
    query_filter: Callable[[Item], bool] | None = None,
) -> dict[str, list[int]]:
    """Query text -> rows of its relevant products (every product with that value); more than `max_queries` distinct
    queries are sampled with `seed`. `query_filter` limits the queries to values of the products it accepts."""
    relevant: dict[str, list[int]] = defaultdict(list)
    allowed: set[str] = set()
    for row, item in enumerate(items):
        value = item.title if task.query_field is None else item.attributes.get(task.query_field)
        if value is not None and str(value).strip():
            relevant[str(value).strip()].append(row)
            if query_filter is None or query_filter(item):
                allowed.add(str(value).strip())
    queries = sorted(allowed)
    if len(queries) > max_queries:
        queries = sorted(random.Random(seed).sample(queries, max_queries))
    return {query: relevant[query] for query in queries}


def published_rows() -> dict:
    """The leaderboard's published KAGL rows (LEADERBOARD.md of marqo-ai/marqo-FashionCLIP, updated 2024-08-09)."""
    return json.loads(
        resources.files("vitrine.evaluate").joinpath("published/kagl_leaderboard.json").read_text(encoding="utf-8")
    )


def leaderboard_table(records: Sequence[dict], with_published: bool = True) -> str:
    """Markdown: one table per task in the leaderboard's columns (AvgRecall|AvgP, @1, @10, MRR), published rows
    first."""
    published = published_rows()["tasks"] if with_published else {}
    lines: list[str] = []
    for name in dict.fromkeys(r["task"] for r in records):
        task = TASKS[name]
        short = "Recall" if task.measure == "recall" else "P"
        lines += [
            f"### {name}",
            "",
            f"| model | Avg{short} | {short}@1 | {short}@10 | MRR | queries |",
            "|---|---|---|---|---|---|",
        ]
        for row in published.get(name, []):
            lines.append(
                f"| {row['model']} (published) | {row['avg']:.3f} | {row['at1']:.3f} | {row['at10']:.3f} | "
                f"{row['mrr']:.3f} | |"
            )
        for record in (r for r in records if r["task"] == name):
            m = record["metrics"]
            at1, at10 = m[f"{task.measure}@1"], m[f"{task.measure}@{TOP}"]
            lines.append(
                f"| {record['model']} | {(at1 + at10) / 2:.3f} | {at1:.3f} | {at10:.3f} | {m['mrr']:.3f} | "
                f"{record['details']['n_queries']} |"
            )
        lines.append("")
    return "\n".join(lines)


def output_name(record: dict) -> str:
    """clip_benchmark's file naming, `{dataset}_{model}_{task}.json`, with the model name made path-safe."""
    model = "".join(c if c.isalnum() or c in "-." else "-" for c in record["model"])
    return f"{record['dataset']}_{model}_{record['task']}.json"
