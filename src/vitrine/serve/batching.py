"""Opportunistic micro-batching: concurrent requests share one forward pass, a lone request never waits."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from vitrine.errors import InvalidInput, Unavailable

In = TypeVar("In")
Out = TypeVar("Out")
_STOP = object()


class MicroBatcher(Generic[In, Out]):
    """Runs `fn(inputs) -> outputs` on one background thread over whatever requests are queued.

    The thread takes the first request as soon as it arrives, adds every request already queued behind it (up to
    `max_batch`), and runs them as one batch. At one client that is a batch of one with no added latency; under load,
    requests queue while a batch runs and the next batch takes them all. `max_wait` (seconds) lets a batch wait that
    long for more requests, but only under load: when the batch before it held more than one request. A lone
    client never waits.
    """

    def __init__(
        self, fn: Callable[[Sequence[In]], Sequence[Out]], max_batch: int = 32, name: str = "batcher",
        max_wait: float = 0.0,
    ):
        if max_batch < 1:
            raise InvalidInput(f"max_batch must be >= 1, got {max_batch}")
        if max_wait < 0:
            raise InvalidInput(f"max_wait must be >= 0, got {max_wait}")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait
        self.batch_sizes: list[int] = []  # the last few batch sizes, for tests and debugging
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def __call__(self, item: In) -> Out:
        if not self._thread.is_alive():
            raise Unavailable("the service is shutting down", code="shutting_down")
        future: Future = Future()
        self._queue.put((item, future))
        return future.result()

    async def submit(self, item: In) -> Out:
        """`self(item)` for a coroutine: the event loop waits for the batch, no thread blocks on it."""
        import asyncio

        if not self._thread.is_alive():
            raise Unavailable("the service is shutting down", code="shutting_down")
        future: Future = Future()
        self._queue.put((item, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _loop(self) -> None:
        loaded = False  # the last batch held more than one request
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            deadline = time.perf_counter() + self.max_wait if loaded else 0.0
            while len(batch) < self.max_batch:
                try:
                    remaining = deadline - time.perf_counter()
                    entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    stop = True
                    break
                batch.append(entry)
            loaded = len(batch) > 1
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list) -> None:
        self.batch_sizes = (self.batch_sizes + [len(batch)])[-100:]
        try:
            outputs = self.fn([item for item, _ in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"batch function returned {len(outputs)} outputs for {len(batch)} inputs")
        except BaseException as exc:  # every waiting request gets the error, and the thread lives on
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), output in zip(batch, outputs):
            future.set_result(output)
