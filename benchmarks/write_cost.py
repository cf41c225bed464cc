"""What a small write costs the embedded store (FaissStore), before and after the delta log, across a merge, and what
the delta costs search.

One run, one synthetic HNSW index:

1. `--vectors` vectors (default 1,000,000) of `vitrine:kagl-base`'s dimension (384), drawn as in
   `benchmarks/search_latency.py` (a Gaussian with the real KAGL image embeddings' mean and covariance), in one store
   with the default options: HNSW, as the planner picks it at this size.
2. (section `writes`) Upserts of 10 products a commit (5 new, 5 replacing existing ones), timed end to end
(`store.upsert`, SQLite
   included), with the bytes the process wrote per commit (`/proc/self/io`: `wchar`, bytes handed to write calls,
   and `write_bytes`, bytes sent to storage). BEFORE: the old path, a full rewrite of the base every commit
   (`delta_max_vectors=0`, the option that keeps it reachable). AFTER: the default, an append to the delta log.
3. (section `threshold`) Across a merge threshold, with the default options: the delta filled (commits of 2,000 new
   products) to just under its bound, then the same 10-product upserts, one every `--interval` seconds, timed:
   below the bound, the commit that crosses it (and starts the background merge), those during the merge, the one
   that adopts the merged base, and `--after` more. Every `--search-every` seconds of the merge, 10 single
   queries are timed and their recall@10 taken against exact brute force over the live vectors of that moment
   (the same before the crossing and after the merge). Then `store.merge()`: what the crossing commit cost inline.
4. (section `search`) Single-query search p50/p99 (one thread, k=10, metadata returned) and recall@10 against exact
   brute force over the live vectors, with a delta of 1%, 5% and 10% of the base (new products appended in commits
   of 10,000), beside the merged index: as built, and after merging the 10% delta (`store.merge()`, timed).

    .venv/bin/python benchmarks/write_cost.py                                 # 1M base, every section
    .venv/bin/python benchmarks/write_cost.py --vectors 1000000 --sections threshold   # 8 min on 2 shared cores, 7 the
    build
    .venv/bin/python benchmarks/write_cost.py --vectors 100000                # a quick look
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_latency import synthetic  # noqa: E402
from vitrine.index.faiss_store import FaissStore  # noqa: E402
from vitrine.index.plan import IndexOptions  # noqa: E402

K = 10


def real_embeddings(path: str | None, data: str, model: str) -> tuple[np.ndarray, str]:
    """The real image embeddings whose mean and covariance the synthetic vectors take: `--real`, else the image bank
    `model` has cached for `data` (`vitrine.embed.bank`), else search_latency.py's cache."""
    if path:
        return np.load(path), path
    from vitrine.embed.bank import bank_folder
    from vitrine.models import create_model

    candidates = [
        bank_folder(create_model(model), data, "runs/cache") / "embeds.npy",
        Path(f"runs/embed-bench/{model.replace(':', '-').replace('/', '_')}/image_embeddings.npy"),
    ]
    for candidate in candidates:
        if candidate.is_file():
            return np.load(candidate), str(candidate)
    raise SystemExit(
        f"no cached {model} image embeddings of {data} (looked in {', '.join(map(str, candidates))}): run "
        f"benchmarks/search_latency.py --kinds --synthetic once, or pass --real FILE.npy"
    )


def io_bytes() -> tuple[int, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["write_bytes"])


def meta(i: int) -> dict:
    return {"title": f"item {i}", "colour": ("red", "blue", "green", "black")[i % 4]}


class Catalog:
    """The live vectors by product number (product `p<i>` is row i), kept beside the store by the same writes.

    Rows from `count` to `capacity` are products not yet added; rows past `capacity` are vectors for replacements."""

    def __init__(self, pool: np.ndarray, capacity: int):
        self.live, self.count, self.capacity, self.spare = pool, 0, capacity, capacity

    def take_new(self, n: int) -> tuple[list[int], np.ndarray]:
        rows = list(range(self.count, self.count + n))
        assert self.count + n <= self.capacity
        self.count += n
        return rows, self.live[rows]

    def replace(self, rows: list[int]) -> np.ndarray:
        vectors = self.live[self.spare : self.spare + len(rows)].copy()
        self.spare += len(rows)
        self.live[rows] = vectors
        return vectors


def ten_products(catalog: Catalog, rng: np.random.Generator) -> tuple[list[str], np.ndarray, list[dict]]:
    """One write: 5 new products and 5 existing ones replaced (new vectors), as the catalog now holds them."""
    new_rows, new_vectors = catalog.take_new(5)
    old_rows = rng.choice(catalog.count - 5, 5, replace=False).tolist()
    rows = new_rows + old_rows
    return [f"p{i}" for i in rows], np.concatenate([new_vectors, catalog.replace(old_rows)]), [meta(i) for i in rows]


def timed_commits(store: FaissStore, catalog: Catalog, commits: int, rng: np.random.Generator) -> dict:
    seconds, wchar, written = [], [], []
    for _ in range(commits):
        ids, vectors, metas = ten_products(catalog, rng)
        before_io, start = io_bytes(), time.perf_counter()
        store.upsert(ids, vectors, metas)
        seconds.append(time.perf_counter() - start)
        after_io = io_bytes()
        wchar.append(after_io[0] - before_io[0])
        written.append(after_io[1] - before_io[1])
    return {
        "commits": commits, "p50_ms": np.percentile(seconds, 50) * 1e3, "p90_ms": np.percentile(seconds, 90) * 1e3,
        "wchar": float(np.median(wchar)), "write_bytes": float(np.median(written)),
    }


def searched(store: FaissStore, catalog: Catalog, queries: np.ndarray) -> tuple[list[float], list[float]]:
    """(seconds, recall@10) of each query searched alone, against exact brute force over the live vectors now."""
    times, found = [], []
    for query in queries:
        start = time.perf_counter()
        hits = store.search(query[None], K)[0]
        times.append(time.perf_counter() - start)
        found.append({int(h.id[1:]) for h in hits})
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, truth = faiss.knn(queries, catalog.live[: catalog.count], K, metric=faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(1)
    return times, [len(f & set(t.tolist())) / K for f, t in zip(found, truth)]


def search_figures(store: FaissStore, catalog: Catalog, queries: np.ndarray) -> dict:
    times, recalls = searched(store, catalog, queries)
    return {
        "p50_ms": np.percentile(times, 50) * 1e3, "p99_ms": np.percentile(times, 99) * 1e3,
        "recall": float(np.mean(recalls)),
    }


PHASES = {
    "below": "below the bound",
    "crossing": "the commit crossing it (starts the background merge)",
    "during": "during the merge",
    "adopting": "the commit adopting the merged base",
    "after": "after the merge",
}


def across_threshold(store: FaissStore, catalog: Catalog, queries: np.ndarray, rng: np.random.Generator, args) -> dict:
    """Commit latencies by phase across a merge threshold, and searches before, during and after the merge."""
    stats, options = store.stats(), store.options
    base, stored = store.base_generation, stats["vectors"] - stats["delta_vectors"] + stats["dead_vectors"]
    bound = min(options.delta_max_vectors, options.delta_max_fraction * stored)
    while (gap := int(bound) - 15 * args.below - store.stats()["delta_rows"]) > 0:  # a 10-product commit is 15 rows
        rows, vectors = catalog.take_new(min(2000, gap))
        store.upsert([f"p{i}" for i in rows], vectors, [meta(i) for i in rows])
    commits: dict[str, list[float]] = {phase: [] for phase in PHASES}
    searches = {"below": searched(store, catalog, queries[:10]), "during": ([], [])}
    phase, next_search, crossed, merge_s = "below", 0.0, 0.0, 0.0
    while len(commits["after"]) < args.after_merge:
        ids, vectors, metas = ten_products(catalog, rng)
        start = time.perf_counter()
        store.upsert(ids, vectors, metas)
        seconds = time.perf_counter() - start
        if phase == "below" and store.stats()["delta_rows"] > bound:
            phase, crossed = "crossing", start
            assert store.get_state("merging", "").split()[0] == str(base), (
                "the crossing commit started no background merge"
            )
        elif phase == "during" and store.base_generation != base:
            phase, merge_s = "adopting", start + seconds - crossed
            how = (
                "background"
                if store.base_generation == store.generation - 1
                else "inline (the delta passed its hard bound)"
            )
        commits[phase].append(seconds)
        phase = {"crossing": "during", "adopting": "after"}.get(phase, phase)
        if phase == "during" and time.perf_counter() >= next_search:
            offset = len(searches["during"][0]) % (len(queries) - 9)  # the next 10 queries, round the set
            times, recalls = searched(store, catalog, queries[offset : offset + 10])
            searches["during"][0].extend(times)
            searches["during"][1].extend(recalls)
            next_search = time.perf_counter() + args.search_every
        if len(commits["during"]) > args.max_commits:
            raise SystemExit(f"the background merge took more than {args.max_commits} commits: raise --max-commits")
        time.sleep(args.interval)
    searches["after"] = searched(store, catalog, queries[:10])
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # as a commit merging inline would have
    start = time.perf_counter()
    assert store.merge()
    return {
        "bound": bound, "commits": commits, "searches": searches, "merge_s": merge_s, "how": how,
        "inline_s": time.perf_counter() - start,
    }


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return ""


def ms(values: list[float]) -> str:
    """p50 | p99 | max of `values` (seconds), in ms, as table cells."""
    return " | ".join(f"{np.percentile(values, q) * 1e3:.1f}" for q in (50, 99, 100))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--vectors", "--base", dest="vectors", type=int, default=1_000_000, help="vectors in the base index"
    )
    parser.add_argument(
        "--sections", default="writes,threshold,search", help="which to run, comma-separated: writes, threshold, search"
    )
    parser.add_argument("--before", type=int, default=5, help="commits timed on the full-rewrite path")
    parser.add_argument("--after", type=int, default=50, help="commits timed on the delta path")
    parser.add_argument("--below", type=int, default=20, help="threshold: commits timed below the bound")
    parser.add_argument("--after-merge", type=int, default=50, help="threshold: commits timed after the merge")
    parser.add_argument("--interval", type=float, default=0.05, help="threshold: seconds between commits")
    parser.add_argument(
        "--search-every", type=float, default=1.0, help="threshold: seconds between 10-query searches during the merge"
    )
    parser.add_argument(
        "--max-commits", type=int, default=8000, help="threshold: commits the merge may take (sizes the vector pool)"
    )
    parser.add_argument("--queries", type=int, default=300, help="single queries per search figure")
    parser.add_argument(
        "--real", help="an .npy of real image embeddings (default: the cached kagl-base bank of --data)"
    )
    parser.add_argument("--data", default="../shared/data/kagl/shards")
    parser.add_argument("--model", default="vitrine:kagl-base")
    parser.add_argument("--workdir", default="runs/bench-writes")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if sections - {"writes", "threshold", "search"}:
        raise SystemExit(
            f"unknown sections {sorted(sections - {'writes', 'threshold', 'search'})}: writes, threshold, search"
        )

    started = time.perf_counter()
    real, source = real_embeddings(args.real, args.data, args.model)
    n, delta_max = args.vectors, int(args.vectors * 0.10)
    writes = 5 * (args.before + args.after) if "writes" in sections else 0
    threshold = (
        IndexOptions().delta_max_vectors + 5 * (args.below + args.max_commits + args.after_merge)
        if "threshold" in sections
        else 0
    )
    capacity = n + (delta_max if "search" in sections else 0) + writes + threshold
    pool = synthetic(np.ascontiguousarray(real, dtype=np.float32), capacity + writes + threshold, seed=n)
    rng = np.random.default_rng(0)
    queries = np.ascontiguousarray(real[rng.choice(len(real), args.queries, replace=False)], dtype=np.float32)
    catalog = Catalog(pool, capacity)
    print(
        f"base {n:,} synthetic {pool.shape[1]}-d vectors (mean and covariance of {source}); queries: {len(queries)} "
        "real "
        f"image embeddings, k={K}; {os.cpu_count()} cores for builds and merges, one thread per query",
        flush=True,
    )

    directory = Path(args.workdir) / f"hnsw-{n}"
    shutil.rmtree(directory, ignore_errors=True)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    store = FaissStore(directory, model="bench", dim=pool.shape[1])
    rows, vectors = catalog.take_new(n)
    store.upsert([f"p{i}" for i in rows], vectors, [meta(i) for i in rows])
    build_s = time.perf_counter() - start
    base_file = directory / f"vectors-{store.base_generation:08d}.faiss"
    print(
        f"built in {build_s:.1f} s: {store.stats()['index_kind']}, base file {human(base_file.stat().st_size)}; "
        f"options {store.options.to_json()}",
        flush=True,
    )
    searches = [("merged (as built)", 0, search_figures(store, catalog, queries))] if "search" in sections else []
    kind = store.stats()["index_kind"].upper()
    store.close()

    if (
        "writes" in sections
    ):  # BEFORE: every commit rewrites the base (delta_max_vectors=0); AFTER: the defaults, appends to the delta.
        store = FaissStore(directory, model="bench", dim=pool.shape[1], options={"delta_max_vectors": 0})
        before = timed_commits(store, catalog, args.before, rng)
        store.close()
        print(f"before: {before}", flush=True)
        store = FaissStore(directory, model="bench", dim=pool.shape[1], options=IndexOptions())
        after = timed_commits(store, catalog, args.after, rng)
        assert store.stats()["base_generation"] == store.generation - args.after, "the delta path merged"
        print(f"after: {after}", flush=True)
        store.close()

    if "threshold" in sections:
        store = FaissStore(directory, model="bench", dim=pool.shape[1], options=IndexOptions())
        faiss.omp_set_num_threads(
            1
        )  # searches: one thread per query (the background merge sets its own: all cores but one)
        crossing = across_threshold(store, catalog, queries, rng, args)
        store.close()
        print(
            f"threshold: merge {crossing['merge_s']:.1f} s ({crossing['how']}), inline merge "
            f"{crossing['inline_s']:.1f} s",
            flush=True,
        )

    if (
        "search" in sections
    ):  # a delta of 1%, 5%, 10% of the base (bounds raised so that 10% stays a delta), then merged
        store = FaissStore(
            directory,
            model="bench",
            dim=pool.shape[1],
            options={"delta_max_fraction": 0.15, "delta_max_vectors": 200_000},
        )
        for share in (0.01, 0.05, 0.10):
            while store.stats()["delta_vectors"] < int(n * share) - 10:
                rows, vectors = catalog.take_new(min(10_000, int(n * share) - store.stats()["delta_vectors"]))
                store.upsert([f"p{i}" for i in rows], vectors, [meta(i) for i in rows])
            searches.append(
                (f"base + {share:.0%} delta", store.stats()["delta_vectors"], search_figures(store, catalog, queries))
            )
            print(searches[-1], flush=True)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        before_io, start = io_bytes(), time.perf_counter()
        assert store.merge()
        merge_s, merge_bytes = time.perf_counter() - start, io_bytes()[0] - before_io[0]
        searches.append(("merged (after the 10% delta)", 0, search_figures(store, catalog, queries)))
        store.close()

    if "writes" in sections:
        print(
            f"\n{n:,}-vector {kind} base ({pool.shape[1]}-d), upserts of 10 products a commit (5 new, 5 replaced); "
            f"medians of {args.before} (before) and {args.after} (after) commits"
        )
        print(
            "\n| write path | commits | p50 ms | p90 ms | bytes written / commit (write calls) | bytes to storage / "
            "commit |\n|---|---|---|---|---|---|"
        )
        for name, row in (
            ("before: full rewrite (`delta_max_vectors=0`)", before), ("after: delta append (default)", after),
        ):
            print(
                f"| {name} | {row['commits']} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {human(row['wchar'])} | "
                f"{human(row['write_bytes'])} |"
            )
        print(
            f"| **after vs before** | | **{before['p50_ms'] / after['p50_ms']:,.0f}x less** | | "
            f"**{before['wchar'] / after['wchar']:,.0f}x less** | "
            f"{before['write_bytes'] / max(after['write_bytes'], 1):,.0f}x less |"
        )
    if "threshold" in sections:
        every = [s for phase in PHASES for s in crossing["commits"][phase]]
        print(
            f"\n{n:,}-vector {kind} base ({pool.shape[1]}-d) across a merge threshold (the delta's bound: "
            f"{crossing['bound']:,.0f} rows), "
            f"upserts of 10 products a commit (5 new, 5 replaced: 15 rows) every {args.interval * 1e3:.0f} ms"
        )
        print("\n| commits | count | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
        for phase, label in PHASES.items():
            print(f"| {label} | {len(crossing['commits'][phase])} | {ms(crossing['commits'][phase])} |")
        print(f"| **all, across the threshold** | {len(every)} | {ms(every)} |")
        print(
            "\n| searches (one query, k=10, one thread) | queries | p50 ms | p99 ms | recall@10 "
            "|\n|---|---|---|---|---|"
        )
        for phase, label in (
            ("below", "below the bound (base + delta)"), ("during", "during the background merge"),
            ("after", "after the merge"),
        ):
            times, recalls = crossing["searches"][phase]
            print(
                f"| {label} | {len(times)} | {np.percentile(times, 50) * 1e3:.3f} | "
                f"{np.percentile(times, 99) * 1e3:.3f} | {np.mean(recalls):.4f} |"
            )
        print(
            f"\nthe merge ({crossing['how']}): {crossing['merge_s']:.1f} s from the crossing commit to the commit "
            "adopting its base; "
            f"an inline merge (`store.merge()`, what the crossing commit cost before): {crossing['inline_s']:.1f} s"
        )
    if "search" in sections:
        print("\n| index | delta vectors | p50 ms | p99 ms | recall@10 |\n|---|---|---|---|---|")
        for name, delta, row in searches:
            print(f"| {name} | {delta:,} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['recall']:.4f} |")
        print(f"\nmerging the 10% delta: {merge_s:.1f} s, {human(merge_bytes)} written")
    print(f"\nbuild {build_s:.1f} s; whole run {time.perf_counter() - started:.0f} s")
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
