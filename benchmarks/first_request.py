"""How long a fresh server takes to be ready, and what its first requests cost: the first text search after
`/healthz` answers, the first `/tag` and the first composed search, on every worker; with each worker's memory.

    .venv/bin/python benchmarks/first_request.py --index runs/serve/kagl-hires --workers 1 auto
    .venv/bin/python benchmarks/first_request.py --index runs/serve/kagl-hires --workers 1 --source /tmp/before/src

A worker is told apart by the pid `/healthz` reports; each kind is sent until every worker has answered one (or
`--tries` requests), and the slowest first answer per worker is printed. `--source DIR` serves the vitrine package
under DIR (another commit's src/, from `git worktree add`).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import free_port  # noqa: E402  (the same port picking as the load benchmark)


def start(index: str, workers: str, port: int, source: str | None) -> tuple[subprocess.Popen, float]:
    env = dict(os.environ, **({"PYTHONPATH": os.path.abspath(source)} if source else {}))
    began = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "vitrine", "serve", "--index", index, "--port", str(port), "--workers", workers,
            "--log-level", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = began + 300
    while time.perf_counter() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, time.perf_counter() - began
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the server was not ready within 300 s")


def first_per_worker(client: httpx.Client, send, workers: int, tries: int) -> dict[int, float]:
    """pid -> ms of the first request of this kind that pid answered (pid read from /healthz right after)."""
    seen: dict[int, float] = {}
    for _ in range(tries):
        began = time.perf_counter()
        response = send()
        took = (time.perf_counter() - began) * 1000
        response.raise_for_status()
        pid = int(response.headers.get("x-vitrine-worker", 0))
        seen.setdefault(pid, took)
        if len(seen) >= workers:
            break
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--images", default="../shared/data/kagl-hires/images", help="query photos")
    parser.add_argument("--workers", nargs="+", default=["1", "auto"])
    parser.add_argument("--source", help="serve the vitrine package under this directory")
    parser.add_argument("--tries", type=int, default=40, help="requests per kind at most, to reach every worker")
    args = parser.parse_args()
    photos = sorted(Path(args.images).glob("*.jpg"))[:64]
    print(
        "| workers | ready s | first text ms (per worker) | first /tag ms | first composed ms | steady text / tag / "
        "composed ms (median of 20) "
        "| RSS MiB per worker |"
    )
    print("|---|---|---|---|---|---|---|")
    for workers in args.workers:
        port = free_port()
        process, ready = start(args.index, workers, port, args.source)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=120) as client:
                count = len(os.sched_getaffinity(0)) if workers == "auto" else int(workers)
                picture = photos[0].read_bytes()  # the same photo first and steady: only the first time differs
                fresh = {
                    "headers": {"Connection": "close"}
                }  # a new connection each: the kernel hands them to any worker
                text_body = {"text": "red summer dress", "k": 24}
                composed_body = {"image": base64.b64encode(picture).decode(), "modification": "in black", "k": 24}
                text = first_per_worker(
                    client, lambda: client.post("/search", json=text_body, **fresh), count, args.tries
                )
                tag = first_per_worker(
                    client,
                    lambda: client.post("/tag", files={"image": ("q.jpg", picture, "image/jpeg")}, **fresh),
                    count,
                    args.tries,
                )
                composed = first_per_worker(
                    client, lambda: client.post("/search", json=composed_body, **fresh), count, args.tries
                )
                steady = {kind: [] for kind in ("text", "tag", "composed")}
                for _ in range(20):
                    for kind, send in (
                        ("text", lambda: client.post("/search", json=text_body)),
                        ("tag", lambda: client.post("/tag", files={"image": ("q.jpg", picture, "image/jpeg")})),
                        ("composed", lambda: client.post("/search", json=composed_body)),
                    ):
                        began = time.perf_counter()
                        send().raise_for_status()
                        steady[kind].append((time.perf_counter() - began) * 1000)
                memory = []
                for _ in range(8 * count):
                    worker = client.get("/healthz", **fresh).json().get("worker", {})
                    if "rss_mib" in worker and worker.get("pid") not in [m[0] for m in memory]:
                        memory.append((worker["pid"], worker["rss_mib"]))
        finally:
            process.terminate()
            process.wait(timeout=60)

        def cell(seen: dict[int, float]) -> str:
            return " / ".join(f"{ms:.1f}" for _, ms in sorted(seen.items())) + (
                "" if len(seen) >= count else f" ({len(seen)} of {count} reached)"
            )

        rss = " / ".join(f"{mib:.0f}" for _, mib in sorted(memory)) or "n/a (no worker memory in /healthz)"
        median = {kind: f"{statistics.median(values):.1f}" for kind, values in steady.items()}
        print(
            f"| {workers} | {ready:.1f} | {cell(text)} | {cell(tag)} | {cell(composed)} | {median['text']} / "
            f"{median['tag']} / {median['composed']} "
            f"| {rss} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
