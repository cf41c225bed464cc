"""Single-query latency and recall@10 of vitrine's vector indexes against exact search, on one core.

Side by side in one run, for the real KAGL catalog (image embeddings of the shipped model, text
queries from real titles) and for synthetic catalogs of the model's dimension:

- numpy brute force (q @ X.T + argpartition): the baseline of the speed-ups;
- exact FAISS flat (what vitrine uses up to `exact_max`);
- HNSW and IVF-PQ as vitrine builds them (`VectorIndex.build`, default `IndexOptions`);
- filtered search at 0.1% and 10% selectivity through `VectorIndex.search`;
- the two vector stores end to end, side by side (`--backends faiss milvus`): the embedded FaissStore
  (FAISS + SQLite) and the MilvusStore on Milvus Lite, each built by upserts in the commits `vitrine index build`
  makes (4,096 rows; at least a quarter of the index on FAISS, whose commits rewrite its file), with the index
  kind vitrine's planner picks, searched one query at a time with metadata returned, and filtered through real
  attribute fields keeping 0.1% and 10% of the products.

Synthetic vectors follow a Gaussian with the real embeddings' mean and full covariance, so they
keep the real spectrum but none of the real cluster structure: a harder case than real data.
Queries are real text embeddings throughout.

    .venv/bin/python benchmarks/search_latency.py --data ../shared/data/kagl/shards --synthetic 100000 1000000
    .venv/bin/python benchmarks/search_latency.py --kinds --backends faiss milvus --synthetic 1000000 --queries 300
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core for every single-query figure
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from vitrine.index.plan import IndexOptions, bytes_per_vector, ef_search  # noqa: E402
from vitrine.index.vectors import VectorIndex  # noqa: E402


def real_embeddings(data: str, cache: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Image and text embeddings of the catalog with `model` (computed once, resumable)."""
    if not (cache / "image_embeddings.npy").is_file():
        from vitrine.embed import run_embed

        run_embed(data=data, model=model, out=str(cache), texts=True, on_error="skip")
    return np.load(cache / "image_embeddings.npy"), np.load(cache / "text_embeddings.npy")


def synthetic(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean, cov = real.mean(0), np.cov(real, rowvar=False)
    root = np.linalg.cholesky(cov + 1e-6 * np.eye(len(mean)))
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        z = rng.standard_normal((min(100_000, n - start), real.shape[1]))
        block = (mean + z @ root.T).astype(np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_truth(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    _, truth = flat.search(queries, k)
    faiss.omp_set_num_threads(1)
    return truth


def latencies(search, queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """p50 and p99 in ms of one query at a time, plus the keys found."""
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        keys = search(q[None])
        times.append(time.perf_counter() - start)
        found.append(keys)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3), np.stack(found)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def numpy_topk(gallery: np.ndarray, k: int):
    def search(q):
        scores = gallery @ q[0]
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    return search


def bench_catalog(
    name: str, gallery: np.ndarray, queries: np.ndarray, k: int, options: IndexOptions, kinds: list[str]
) -> list[dict]:
    n, dim = gallery.shape
    keys = np.arange(n, dtype=np.int64)
    truth = exact_truth(gallery, queries, k)
    rows = []
    p50_np, p99_np, found = latencies(numpy_topk(gallery, k), queries)
    rows.append(
        {
            "catalog": name, "n": n, "index": "numpy brute force", "build_s": 0.0, "p50_ms": p50_np, "p99_ms": p99_np,
            "recall@10": recall_at(found, truth), "speedup_p50": 1.0, "mem_mib": n * dim * 4 / 2**20,
        }
    )
    rng = np.random.default_rng(1)
    for kind in kinds:
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # build on every core; search on one
        start = time.perf_counter()
        index = VectorIndex.build(kind, keys, gallery, options)
        build_s = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        p50, p99, found = latencies(lambda q, index=index: index.search(q, k)[1][0], queries)
        rows.append(
            {
                "catalog": name, "n": n, "index": kind, "build_s": build_s, "p50_ms": p50, "p99_ms": p99,
                "recall@10": recall_at(found, truth), "speedup_p50": p50_np / p50,
                "mem_mib": bytes_per_vector(kind, dim, options) * n / 2**20,
            }
        )
        for share in (0.001, 0.1):
            allowed = np.sort(rng.choice(n, max(k, int(n * share)), replace=False))
            sub_truth = allowed[exact_truth(gallery[allowed], queries, k)]
            p50f, p99f, foundf = latencies(
                lambda q, index=index, allowed=allowed: index.search(q, k, allowed)[1][0], queries
            )
            rows.append(
                {
                    "catalog": name, "n": n, "index": f"{kind} + filter {share:.1%}", "build_s": None, "p50_ms": p50f,
                    "p99_ms": p99f, "recall@10": recall_at(foundf, sub_truth), "speedup_p50": p50_np / p50f,
                    "mem_mib": None,
                }
            )
        del index
    return rows


def bench_stores(
    name: str, gallery: np.ndarray, queries: np.ndarray, k: int, backends: list[str], workdir: Path
) -> list[dict]:
    """FaissStore and MilvusStore side by side: build by 4,096-row upserts, single queries, filters on attribute
    fields."""
    import shutil

    from vitrine.index.stores import open_store

    n, dim = gallery.shape
    truth = exact_truth(gallery, queries, k)
    rng = np.random.default_rng(2)
    shares = {"sel_0_1": 0.001, "sel_10": 0.1}
    chosen = {
        field: set(rng.choice(n, max(k, int(n * share)), replace=False).tolist()) for field, share in shares.items()
    }
    ids = np.array([f"p{i}" for i in range(n)])
    rows = []
    for backend in backends:
        target = workdir / f"{backend}-{n}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(Path(f"{target}.db"), ignore_errors=True)
        spec = str(target) if backend == "faiss" else f"milvus:{target}.db"
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # builds use every core; searches one
        start = time.perf_counter()
        store = open_store(spec, model="bench", dim=dim, create=True, attributes=list(shares))
        lo = 0
        while (
            lo < n
        ):  # commits as `vitrine index build` makes them: 4,096 rows, or more where a commit rewrites the index
            hi = min(n, lo + store.min_commit(4096))
            metas = [
                {"title": f"item {i}", **{f: ("yes" if i in chosen[f] else "no") for f in shares}}
                for i in range(lo, hi)
            ]
            store.upsert(list(ids[lo:hi]), gallery[lo:hi], metas)
            lo = hi
        build_s = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        kind = store.stats()["index_kind"]
        label = f"{'FaissStore' if backend == 'faiss' else 'MilvusStore (Milvus Lite)'} [{kind}]"

        def keys(hits):
            return np.array([int(h.id[1:]) for h in hits] + [-1] * (k - len(hits)))

        p50, p99, found = latencies(lambda q: keys(store.search(q, k)[0]), queries)
        rows.append(
            {
                "catalog": name, "n": n, "index": label, "build_s": build_s, "p50_ms": p50, "p99_ms": p99,
                "recall@10": recall_at(found, truth), "speedup_p50": None, "mem_mib": None,
            }
        )
        for field, share in shares.items():
            allowed = np.array(sorted(chosen[field]))
            sub_truth = allowed[exact_truth(gallery[allowed], queries, k)]
            p50f, p99f, foundf = latencies(lambda q: keys(store.search(q, k, {field: "yes"})[0]), queries)
            rows.append(
                {
                    "catalog": name, "n": n, "index": f"{label} + filter {share:.1%}", "build_s": None, "p50_ms": p50f,
                    "p99_ms": p99f, "recall@10": recall_at(foundf, sub_truth), "speedup_p50": None, "mem_mib": None,
                }
            )
        store.close()
        print(
            f"{name} {n:,} {label}: built in {build_s:.1f}s; p50 {p50:.3f} ms; recall@10 {rows[-3]['recall@10']:.4f}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/kagl/shards", help="catalog for the real vectors")
    parser.add_argument("--cache", help="where its embeddings are kept between runs (default runs/embed-bench/<model>)")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[1_000_000], help="synthetic catalog sizes")
    parser.add_argument("--queries", type=int, default=1000, help="queries per catalog (real titles)")
    parser.add_argument(
        "--kinds", nargs="*", default=["flat", "hnsw", "ivfpq"], help="raw FAISS index kinds (none: skip them)"
    )
    parser.add_argument("--backends", nargs="*", default=[], help="vector stores side by side: faiss milvus")
    parser.add_argument(
        "--model", default="vitrine:kagl-base", help="model whose embeddings make the real catalog and the queries"
    )
    parser.add_argument("--workdir", default="runs/bench-stores", help="where the stores are built")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    faiss.omp_set_num_threads(1)
    cache = Path(args.cache or f"runs/embed-bench/{args.model.replace(':', '-').replace('/', '_')}")
    images, texts = real_embeddings(args.data, cache, args.model)
    rng = np.random.default_rng(0)
    queries = np.ascontiguousarray(texts[rng.choice(len(texts), args.queries, replace=False)], dtype=np.float32)
    options = IndexOptions()
    print(
        f"options: {options.to_json()}; HNSW efSearch by size: "
        + ", ".join(f"{n:,}: {ef_search(n, options)}" for n in [40_000, *args.synthetic])
    )
    print(f"queries: {len(queries)} real title embeddings, k=10, one thread for search")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    real = np.ascontiguousarray(images, dtype=np.float32)
    rows = bench_catalog("kagl real", real, queries, 10, options, args.kinds) if args.kinds else []
    rows += bench_stores("kagl real", real, queries, 10, args.backends, workdir) if args.backends else []
    for n in args.synthetic:
        gallery = synthetic(images, n, seed=n)
        rows += bench_catalog("synthetic", gallery, queries, 10, options, args.kinds) if args.kinds else []
        rows += bench_stores("synthetic", gallery, queries, 10, args.backends, workdir) if args.backends else []

    print(f"\nmodel {args.model} ({real.shape[1]}-d), {len(queries)} queries")
    print(
        "\n| catalog | vectors | index | build s | p50 ms | p99 ms | recall@10 | speed-up (p50) | est. MiB "
        "|\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        build = "" if r["build_s"] is None else f"{r['build_s']:.1f}"
        mem = "" if r["mem_mib"] is None else f"{r['mem_mib']:.0f}"
        speed = "" if r["speedup_p50"] is None else f"{r['speedup_p50']:.1f}x"
        print(
            f"| {r['catalog']} | {r['n']:,} | {r['index']} | {build} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['recall@10']:.4f} | {speed} | {mem} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
