"""Prometheus metrics: request counts by route and status, latency histograms by route, catalog size.

With several worker processes (`vitrine serve --workers N`), PROMETHEUS_MULTIPROC_DIR is set for the workers,
each writes its samples to files there, and every scrape merges them: whichever worker answers, /metrics
reports the whole server.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """One registry per app (so tests can build many apps in one process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.shared = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vitrine_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "vitrine_http_request_duration_seconds", "time to answer a request", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.products = Gauge(
            "vitrine_catalog_products", "products in the index", registry=self.registry, multiprocess_mode="livemax"
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self, products: int) -> bytes:
        self.products.set(products)
        if not self.shared:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return generate_latest(merged)


class ObserveRequests:
    """A plain ASGI middleware timing each HTTP request into `metrics` (no request objects, no streams: the per-request
    cost of `@app.middleware("http")`: docs/performance.md)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_observed(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # which worker answered (several share one port): for the operator and benchmarks/first_request.py
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-vitrine-worker", str(os.getpid()).encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:  # the router has put the matched route into the shared scope
            route = scope.get("route")
            self.metrics.observe(
                scope["method"], getattr(route, "path", "unmatched"), status, time.perf_counter() - start
            )
