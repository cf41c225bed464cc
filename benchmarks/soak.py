"""Soak: mixed traffic at a fixed rate against `vitrine serve --workers 2`, reported minute by minute.

Copies an index built by `vitrine serve --catalog` (the original is never written), starts the server on it with a
write token, and sends requests on a fixed schedule (open loop: a slow answer does not slow the sender) for
`--minutes`: 90% searches of every kind (text, image upload, image by catalog URL, composed, filtered, batch; forms
and JSON) and 10% writes (upserts of new products, replacements, deletes). Each minute it prints requests/s answered,
p50/p99 latency, errors (non-2xx other than the expected 404 of a racing delete, and transport errors), requests
dropped because `--max-in-flight` were pending, and the resident memory of every server process. At the end: the
growth of memory and p99 from the first minute to the last.

    .venv/bin/vitrine serve --catalog ../shared/data/kagl-hires   # once: builds runs/serve/kagl-hires (the default
    model)
    .venv/bin/python benchmarks/soak.py --index runs/serve/kagl-hires --minutes 10 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from vitrine.serve.server import wait_until_ready

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import TEXT_QUERIES, free_port, percentile, process_rss_mib  # noqa: E402

TOKEN = "soak-write-token"
MODIFICATIONS = ["in black", "in red", "with long sleeves", "in blue denim", "with a floral print", "in white"]
FILTERS = [
    {"gender": ["Women"]}, {"gender": ["Men"]}, {"masterCategory": ["Apparel"]}, {"baseColour": ["Black", "Blue"]},
]


def product_image(rng: random.Random) -> bytes:
    colour = tuple(rng.randrange(256) for _ in range(3))
    buffer = io.BytesIO()
    Image.new("RGB", (60, 80), colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class Traffic:
    """The request mix: each call to `next` gives (label, httpx kwargs) from a seeded generator."""

    def __init__(self, seed: int, images: list[bytes], catalog_ids: list[str]):
        self.rng, self.images, self.catalog_ids = random.Random(seed), images, catalog_ids
        self.written: list[str] = []
        self.counter = 0

    def next(self) -> tuple[str, str, str, dict]:
        r = self.rng.random()
        if r < 0.10:
            return self._write()
        kind = self.rng.choice(
            ["text", "text-json", "image", "image-json", "url", "composed", "composed-json", "filtered", "batch"]
        )
        text, image = self.rng.choice(TEXT_QUERIES), self.rng.choice(self.images)
        url = f"/products/{self.rng.choice(self.catalog_ids)}/image"
        if kind == "text":
            return kind, "POST", "/search", {"data": {"text": text, "k": "24"}}
        if kind == "text-json":
            return kind, "POST", "/search", {"json": {"text": text, "k": 24}}
        if kind == "image":
            return kind, "POST", "/search", {"data": {"k": "24"}, "files": {"image": ("q.jpg", image, "image/jpeg")}}
        if kind == "image-json":
            return kind, "POST", "/search", {"json": {"image": base64.b64encode(image).decode(), "k": 24}}
        if kind == "url":
            return kind, "GET", "/search", {"params": {"image_url": url, "k": 24}}
        if kind == "composed":
            return (
                kind,
                "POST",
                "/search",
                {"data": {"image_url": url, "modification": self.rng.choice(MODIFICATIONS), "k": "24"}},
            )
        if kind == "composed-json":
            return (
                kind,
                "POST",
                "/search",
                {"json": {"image_url": url, "modification": self.rng.choice(MODIFICATIONS), "k": 24}},
            )
        if kind == "filtered":
            return kind, "POST", "/search", {"json": {"text": text, "k": 24, "filters": self.rng.choice(FILTERS)}}
        return (
            kind,
            "POST",
            "/search/batch",
            {"json": {"queries": [{"text": t, "k": 10} for t in self.rng.sample(TEXT_QUERIES, 4)]}},
        )

    def _write(self) -> tuple[str, str, str, dict]:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = self.rng.random()
        if r < 0.3 and self.written:
            product_id = self.written.pop(self.rng.randrange(len(self.written)))
            return "delete", "DELETE", f"/products/{product_id}", {"headers": auth}
        if r < 0.5 and self.written:
            product_id, label = self.rng.choice(self.written), "replace"
        else:
            self.counter += 1
            product_id, label = f"soak-{self.counter}", "upsert"
            self.written.append(product_id)
        form = {
            "id": product_id,
            "title": f"soak product {product_id}",
            "attributes": json.dumps({"gender": self.rng.choice(["Men", "Women"])}),
        }
        return (
            label,
            "POST",
            "/products",
            {"data": form, "files": {"image": ("p.jpg", product_image(self.rng), "image/jpeg")}, "headers": auth},
        )


async def warm_up(base: str, traffic: Traffic, requests: int) -> None:
    """Every kind of request a few times, two at a time (both workers load their models and taggers), not measured."""
    async with httpx.AsyncClient(timeout=300) as client:
        for _ in range(requests // 2):
            await asyncio.gather(
                *(
                    client.request(method, base + path, **kwargs)
                    for _, method, path, kwargs in (traffic.next(), traffic.next())
                )
            )


async def soak(
    base: str, server: subprocess.Popen, traffic: Traffic, minutes: int, rate: float, max_in_flight: int
) -> list[dict]:
    minutes_rows: list[dict] = []
    interval = 1.0 / rate
    async with httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    ) as client:
        pending: set[asyncio.Task] = set()
        start = time.perf_counter()
        for minute in range(minutes):
            latencies, errors, dropped, kinds = [], {}, 0, {}
            minute_end = start + 60 * (minute + 1)
            sent = 0

            async def one(label: str, method: str, path: str, kwargs: dict) -> None:
                began = time.perf_counter()
                try:
                    response = await client.request(method, base + path, **kwargs)
                    ok = response.status_code < 300 or (label == "delete" and response.status_code == 404)
                    if not ok:
                        key = f"{label}:{response.status_code}"
                        errors[key] = errors.get(key, 0) + 1
                        return
                except httpx.HTTPError as exc:
                    errors[f"{label}:{type(exc).__name__}"] = errors.get(f"{label}:{type(exc).__name__}", 0) + 1
                    return
                latencies.append((time.perf_counter() - began) * 1000)
                kinds[label] = kinds.get(label, 0) + 1

            while True:
                due = start + (minute * 60) + sent * interval
                if due >= minute_end:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                label, method, path, kwargs = traffic.next()
                sent += 1
                if len(pending) >= max_in_flight:
                    dropped += 1
                    continue
                task = asyncio.create_task(one(label, method, path, kwargs))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(max(0.0, minute_end - time.perf_counter()))
            rss = process_rss_mib(server.pid)
            row = {
                "minute": minute + 1,
                "sent": sent,
                "answered": len(latencies),
                "rps": round(len(latencies) / 60, 2),
                "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
                "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
                "errors": sum(errors.values()),
                "error_kinds": errors,
                "dropped": dropped,
                "in_flight": len(pending),
                "rss_mib": {str(pid): round(mib, 1) for pid, mib in sorted(rss.items())},
                "rss_total_mib": round(sum(rss.values()), 1),
            }
            minutes_rows.append(row)
            print(json.dumps(row), flush=True)
        if pending:
            await asyncio.wait(pending, timeout=60)
    return minutes_rows


def server_errors(log: Path, context: int = 40) -> list[str]:
    """Each 'unexpected error' the server logged, with the lines after it (its traceback)."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return ["\n".join(lines[i : i + context]) for i, line in enumerate(lines) if "unexpected error" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--index",
        default="runs/serve/kagl-hires",
        help="an index built by `vitrine serve --catalog` (copied, never written)",
    )
    parser.add_argument("--images", default="../shared/data/kagl-hires/images", help="folder of query images")
    parser.add_argument(
        "--catalog", default="../shared/data/kagl-hires/catalog.csv",
        help="the index's catalog.csv (ids for image-URL queries)",
    )
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0, help="requests sent per second (fixed schedule)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=64,
        help="requests pending at most; beyond, a request is dropped and counted",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=120, help="requests sent before measuring (two at a time)")
    parser.add_argument("--json", help="also write the minute rows here")
    parser.add_argument(
        "--server-log", help="keep the server's log here (by default it is read for tracebacks and dropped)"
    )
    args = parser.parse_args()

    images = [f.read_bytes() for f in sorted(Path(args.images).glob("*.jpg"))[:64]]
    if not images:
        raise SystemExit(f"no .jpg query images in {args.images}")
    with tempfile.TemporaryDirectory(prefix="vitrine-soak-") as scratch:
        index = Path(scratch) / "index"
        shutil.copytree(args.index, index)
        with open(args.catalog, newline="", encoding="utf-8") as handle:
            catalog_ids = [row["id"] for row in csv.DictReader(handle)]
        if not catalog_ids:
            raise SystemExit(f"no product ids in {args.catalog}")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "vitrine", "serve", "--index", str(index), "--port", str(port), "--workers",
            str(args.workers), "--write-token", TOKEN, "--log-level", "warning",
        ]
        server_log = Path(args.server_log) if args.server_log else Path(scratch) / "server.log"
        log_handle = server_log.open("wb")
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_handle, start_new_session=True)
        try:
            wait_until_ready(base, server, timeout=180)
            print(
                f"soak: {args.minutes} min at {args.rate} req/s (90% searches of all kinds, 10% writes), "
                f"{args.workers} workers, "
                f"{len(catalog_ids)} products, index copied from {args.index}",
                flush=True,
            )
            traffic = Traffic(args.seed, images, catalog_ids)
            asyncio.run(warm_up(base, traffic, args.warmup))
            rows = asyncio.run(soak(base, server, traffic, args.minutes, args.rate, args.max_in_flight))
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
            log_handle.close()
        errors_logged = server_errors(server_log)

    print(
        "\n| minute | sent | answered | req/s | p50 ms | p99 ms | errors | dropped | RSS per process MiB | RSS total "
        "MiB |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['minute']} | {r['sent']} | {r['answered']} | {r['rps']:.2f} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['errors']} | {r['dropped']} | "
            f"{' / '.join(f'{v:.1f}' for v in r['rss_mib'].values())} | {r['rss_total_mib']:.1f} |"
        )
    first, last = rows[0], rows[-1]
    print(
        f"\nfirst -> last minute: RSS total {first['rss_total_mib']:.1f} -> {last['rss_total_mib']:.1f} MiB "
        f"({last['rss_total_mib'] - first['rss_total_mib']:+.1f} MiB, "
        f"{100 * (last['rss_total_mib'] / first['rss_total_mib'] - 1):+.1f}%); "
        f"p99 {first['p99_ms']} -> {last['p99_ms']} ms; errors in all {sum(r['errors'] for r in rows)}"
    )
    if errors_logged:
        print(f"\nthe server logged {len(errors_logged)} error(s); the first:\n" + errors_logged[0])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
