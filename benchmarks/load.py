"""Load on the running service: requests/s and p50/p95/p99 latency for text and image search at several client counts.

Starts `vitrine serve --index DIR --workers W` on 127.0.0.1 for each worker count, warms it up, then for each query
kind and client count drives it for a bounded time with concurrent keep-alive clients and prints one row per cell:
requests, requests/s, latency percentiles, errors, and the CPU per request of the server and of the generator. The
generator is `wrk` where it is installed (`apt-get install wrk`; one thread, the bodies prepared here and sent by
`benchmarks/wrk_search.lua`), else asyncio + httpx in this process (`--generator httpx`), which costs the shared cores
1.3-2.7 ms per request. Memory is the resident set
of the server and its workers, read from /proc, after warm-up (start) and after the last cell (end).

    .venv/bin/vitrine serve --catalog ../shared/data/kagl-hires --port 8000   # once: builds runs/serve/kagl-hires
    .venv/bin/python benchmarks/load.py --index runs/serve/kagl-hires --images ../shared/data/kagl-hires/images
    # form and JSON requests side by side:
    .venv/bin/python benchmarks/load.py --index runs/serve/kagl-hires --workers 1 --clients 1 8 --bodies form json
    # torch, ONNX Runtime fp32 and int8 side by side (an index built with torch refuses onnx-int8 queries: see README):
    .venv/bin/vitrine index build --data ../shared/data/kagl-hires --index runs/serve/kagl-hires-int8 --runtime
    onnx-int8
    .venv/bin/python benchmarks/load.py --index runs/serve/kagl-hires@torch runs/serve/kagl-hires@onnx \
        runs/serve/kagl-hires-int8@onnx-int8 --workers 1 --clients 1 8 32
    # two models side by side in one run (each index keeps the model it was built with):
    .venv/bin/python benchmarks/load.py --index runs/serve/hires-small runs/serve/hires-base --workers 1 --clients 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from vitrine.serve.server import wait_until_ready

TEXT_QUERIES = [
    "red summer dress", "black leather shoes", "men's blue jeans", "white sports t-shirt", "gold watch for women",
    "striped casual shirt", "pink handbag", "running shoes", "formal black trousers", "floral kurta for women",
    "green backpack", "sunglasses", "denim jacket", "kids t-shirt", "brown belt", "silver earrings",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and all its descendants, in seconds."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            stats[int(entry.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, stack, tick = 0, [pid], os.sysconf("SC_CLK_TCK")
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        if current in stats:
            total += (int(stats[current][11]) + int(stats[current][12])) / tick  # utime, stime
    return total


def process_rss_mib(root: int) -> dict[int, float]:
    """Resident memory of `root` and each of its descendants, per process, in MiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = {}, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return found


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (uvicorn's workers), in MiB."""
    return sum(process_rss_mib(pid).values())


def start_server(
    index: str, workers: int | str, port: int, threads: int | None = None, runtime: str | None = None,
    extra: list[str] = (),
) -> subprocess.Popen:
    command = (
        [
            sys.executable, "-m", "vitrine", "serve", "--index", index, "--port", str(port), "--workers", str(workers),
            "--log-level", "warning",
        ]
        + (["--threads", str(threads)] if threads else [])
        + (["--runtime", runtime] if runtime else [])
        + list(extra)
    )
    # the server's log goes to a file: an unread pipe fills up (64 KiB) and then blocks the server in mid-request
    log = tempfile.NamedTemporaryFile(prefix="vitrine-load-server-", suffix=".log", delete=False)
    # a variant's leading `--source DIR` serves the vitrine package under DIR (another commit's src/, from a git
    # worktree): an earlier commit's code and today's, side by side in one run
    env = dict(os.environ)
    if extra and extra[0] == "--source":
        source = extra[1]
        command = command[: -len(extra)] + list(extra[2:])
        env["PYTHONPATH"] = os.path.abspath(source)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
    process.log_path = log.name
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, timeout=180)
    except RuntimeError as exc:
        process.kill()
        raise SystemExit(f"{exc}\n{Path(log.name).read_text(errors='replace')[-4000:]}") from None
    return process


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def search_request(kind: str, body: str, rng: random.Random, images: list[bytes]) -> dict:
    """httpx keyword arguments of one search: a form (multipart for images) or a JSON body (base64 for images)."""
    if kind == "text":
        text = rng.choice(TEXT_QUERIES)
        return {"json": {"text": text, "k": 24}} if body == "json" else {"data": {"text": text, "k": "24"}}
    image = rng.choice(images)
    if body == "json":
        return {"json": {"image": base64.b64encode(image).decode(), "k": 24}}
    return {"data": {"k": "24"}, "files": {"image": ("query.jpg", image, "image/jpeg")}}


async def drive(
    base: str, kind: str, clients: int, seconds: float, images: list[bytes], seed: int, body: str = "form"
) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient, number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        while time.perf_counter() < deadline:
            request = search_request(kind, body, rng, images)
            start = time.perf_counter()
            try:
                response = await client.post(f"{base}/search", **request)
                if response.status_code != 200:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                    continue
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(client_loop(client, n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies] or [float("nan")]
    return {
        "kind": kind, "body": body, "clients": clients, "requests": len(latencies), "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 2), "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1), "p99_ms": round(percentile(ms, 99), 1),
        "mean_ms": round(statistics.fmean(ms), 1), "errors": sum(errors.values()), "error_kinds": errors,
    }


WRK_SCRIPT = Path(__file__).with_name("wrk_search.lua")


def encoded_body(kind: str, body: str, rng: random.Random, images: list[bytes]) -> tuple[str, bytes]:
    """(content type, bytes) of one search request, encoded exactly as the httpx generator sends it."""
    request = httpx.Request("POST", "http://server/search", **search_request(kind, body, rng, images))
    return request.headers["content-type"], request.read()


def drive_wrk(
    base: str, kind: str, clients: int, seconds: float, images: list[bytes], seed: int, body: str = "form",
    distinct: int = 64,
) -> dict:
    """The same cell driven by `wrk` (one thread, `clients` keep-alive connections) over `distinct` prepared bodies;
    the generator's CPU is wrk's own, read from its rusage."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="vitrine-wrk-") as folder:
        lines = []
        for number in range(distinct):
            content_type, data = encoded_body(kind, body, rng, images)
            path = Path(folder) / f"{number}.body"
            path.write_bytes(data)
            lines.append(f"{content_type}\t{path}")
        manifest = Path(folder) / "manifest.tsv"
        manifest.write_text("\n".join(lines) + "\n")
        command = [
            "wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "120s", "-s", str(WRK_SCRIPT),
            base, "--", str(manifest),
        ]
        before = resource.getrusage(
            resource.RUSAGE_CHILDREN
        )  # reaped children: wrk alone (the server is reaped at its end)
        process = subprocess.run(command, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out, err = process.stdout, process.stderr
    if process.returncode != 0:
        raise SystemExit(f"wrk failed ({process.returncode}): {err.strip() or out.strip()}")
    report = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    errors = {
        name: report[key]
        for name, key in (
            ("status", "status_errors"), ("connect", "connect_errors"), ("read", "read_errors"),
            ("write", "write_errors"), ("timeout", "timeouts"),
        )
        if report[key]
    }
    answered = report["requests"] - report["status_errors"]
    elapsed = report["duration_us"] / 1e6
    return {
        "kind": kind,
        "body": body,
        "clients": clients,
        "requests": answered,
        "seconds": round(elapsed, 2),
        "rps": round(answered / elapsed, 2),
        "p50_ms": round(report["p50_us"] / 1000, 1),
        "p95_ms": round(report["p95_us"] / 1000, 1),
        "p99_ms": round(report["p99_us"] / 1000, 1),
        "mean_ms": round(report["mean_us"] / 1000, 1),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "generator_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--index",
        nargs="+",
        default=["runs/serve/kagl-hires"],
        help="one or more indexes built by `vitrine serve --catalog`; "
        "INDEX@RUNTIME serves that index with that runtime only",
    )
    parser.add_argument(
        "--images", default="../shared/data/kagl-hires/images", help="folder of query images (uploaded as they are)"
    )
    parser.add_argument("--workers", nargs="+", default=["1", "2"], help="worker counts to compare (a number, or auto)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["default="],
        metavar="NAME=ARGS",
        help="server variants side by side: a name and extra `vitrine serve` arguments, e.g. "
        '"today=--http-stack stock --request-path classic" "new=" (default: one server as configured); '
        '"before=--source DIR" '
        "serves the vitrine package under DIR, e.g. another commit's src/ from `git worktree add`",
    )
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: vitrine serve's default)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients")
    parser.add_argument("--kinds", nargs="+", default=["text", "image"], choices=["text", "image"])
    parser.add_argument(
        "--bodies", nargs="+", default=["form"], choices=["form", "json"],
        help="request bodies to compare, side by side",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per kind before measuring")
    parser.add_argument("--query-images", type=int, default=64, help="how many images to draw queries from")
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=[None],
        choices=["torch", "onnx", "onnx-int8"],
        help="inference runtimes to compare, one server each (default: vitrine serve's default)",
    )
    parser.add_argument(
        "--generator",
        choices=["wrk", "httpx"],
        default="wrk" if shutil.which("wrk") else "httpx",
        help="load generator: wrk (compiled, Debian package `wrk`; the default where installed) or httpx "
        "(asyncio in this process)",
    )
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    files = sorted(Path(args.images).glob("*.jpg"))[: args.query_images]
    if "image" in args.kinds and not files:
        raise SystemExit(f"no .jpg query images in {args.images}")
    images = [f.read_bytes() for f in files]
    print(
        f"indexes {' '.join(args.index)}; {len(images)} query images (median "
        f"{statistics.median(len(b) for b in images) / 1024:.0f} KiB); "
        f"{args.seconds:.0f} s per cell; torch threads per worker: {args.threads or 'default'}; {os.cpu_count()} CPU "
        "cores shared by server and load generator",
        flush=True,
    )
    rows, memory = [], []
    # INDEX@RUNTIME pins a runtime to an index (an index built with onnx-int8 is queried with onnx-int8 only)
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split() if "=" in v else []) for v in args.variants]
    cells = [
        (i.split("@")[0], w, (i.split("@")[1] if "@" in i else r), name, extra)
        for i in args.index
        for w in args.workers
        for r in (args.runtimes if "@" not in i else [None])
        for name, extra in variants
    ]
    for index, workers, runtime, variant, extra in cells:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(index, workers, port, args.threads, runtime, extra)
        try:
            for kind in args.kinds:
                asyncio.run(drive(base, kind, 2, args.warmup, images, seed=99))
            rss_start = tree_rss_mib(server.pid)
            for kind in args.kinds:
                for clients in args.clients:
                    for body in args.bodies:
                        server_cpu, client_cpu = tree_cpu_seconds(server.pid), time.process_time()
                        if args.generator == "wrk":
                            cell = drive_wrk(base, kind, clients, args.seconds, images, seed=clients, body=body)
                            client_seconds = cell.pop("generator_cpu_s")
                        else:
                            cell = asyncio.run(
                                drive(base, kind, clients, args.seconds, images, seed=clients, body=body)
                            )
                            client_seconds = time.process_time() - client_cpu
                        row = {
                            "index": Path(index).name,
                            "workers": workers,
                            "runtime": runtime or "default",
                            "variant": variant,
                            "generator": args.generator,
                            **cell,
                        }
                        # CPU per answered request: where the two cores go (the server's processes, and the load
                        # generator)
                        row["server_cpu_ms"] = round(
                            (tree_cpu_seconds(server.pid) - server_cpu) * 1000 / max(row["requests"], 1), 2
                        )
                        row["client_cpu_ms"] = round(client_seconds * 1000 / max(row["requests"], 1), 2)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            rss_end = tree_rss_mib(server.pid)
            memory.append(
                {
                    "index": Path(index).name, "workers": workers, "runtime": runtime or "default", "variant": variant,
                    "rss_start_mib": round(rss_start, 1), "rss_end_mib": round(rss_end, 1),
                }
            )
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                print(
                    f"the server did not stop within 60 s of SIGTERM; killed (its log: {server.log_path})", flush=True
                )
                server.kill()
                server.wait()

    print(
        "\n| index | workers | runtime | variant | query | body | clients | requests | req/s | p50 ms | p95 ms | p99 "
        "ms | errors | "
        "server CPU ms/req | generator CPU ms/req |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['index']} | {r['workers']} | {r['runtime']} | {r['variant']} | {r['kind']} | {r['body']} | "
            f"{r['clients']} | {r['requests']} | "
            f"{r['rps']:.2f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
            f"{r['server_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} |"
        )
    for axis in ("runtime", "variant"):  # each runtime (variant) against the first, cell by cell, everything else equal
        names = list(dict.fromkeys(r[axis] for r in rows))
        if len(names) < 2:
            continue
        rest = [k for k in ("index", "workers", "runtime", "variant", "kind", "body", "clients") if k != axis]
        print(
            f"\n| {' | '.join(rest)} | "
            + " | ".join(f"{n} vs {names[0]}: req/s x, p99 x" for n in names[1:])
            + " |\n|"
            + "---|" * (len(rest) + len(names) - 1)
        )
        for key in dict.fromkeys(tuple(r[k] for k in rest) for r in rows):
            cell = {r[axis]: r for r in rows if tuple(r[k] for k in rest) == key}
            base = cell.get(names[0])
            if base:
                print(
                    "| "
                    + " | ".join(str(k) for k in key)
                    + " | "
                    + " | ".join(
                        f"{cell[n]['rps'] / base['rps']:.2f}, {cell[n]['p99_ms'] / base['p99_ms']:.2f}"
                        if n in cell
                        else "-"
                        for n in names[1:]
                    )
                    + " |"
                )
    print("\n| index | workers | runtime | variant | server RSS at start MiB | at end MiB |\n|---|---|---|---|---|---|")
    for m in memory:
        print(
            f"| {m['index']} | {m['workers']} | {m['runtime']} | {m['variant']} | {m['rss_start_mib']:.1f} | "
            f"{m['rss_end_mib']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "memory": memory}, indent=2))


if __name__ == "__main__":
    main()
