"""Batches of decoded, preprocessed items, prepared in a background thread while the model runs."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from vitrine.data.records import CatalogReader, Item

_DONE = object()
In = TypeVar("In")
Out = TypeVar("Out")


def map_ordered(fn: Callable[[In], Out], items: Iterable[In], workers: int, ahead: int | None = None) -> Iterator[Out]:
    """`fn` over `items` on `workers` threads, results in the items' order, at most `ahead` (default 2 x workers) in
    flight; one worker is a plain loop. An error re-raises here, and work not yet started is dropped."""
    if workers <= 1:
        yield from map(fn, items)
        return
    pending: deque = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="map-ordered") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= (ahead or 2 * workers):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


@dataclass(frozen=True)
class Batch:
    items: list[Item]
    pixels: torch.Tensor
    position: int  # reader position after the batch's last item: where a resume starts
    skipped: dict  # the reader's skip counts as of this batch (taken in the producer thread)


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run `iterator` in a daemon thread, `depth` results ahead; its exceptions re-raise here."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for value in iterator:
                if stop.is_set():
                    return
                buffer.put(value)
            buffer.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            buffer.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            value = buffer.get()
            if value is _DONE:
                return
            if isinstance(value, BaseException):
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def iter_batches(
    reader: CatalogReader, transform: Callable, batch_size: int, start: int = 0, limit: int | None = None
) -> Iterator[Batch]:
    """Decode and transform items in order from scan position `start`; bad rows follow the reader's policy."""
    items: list[Item] = []
    tensors: list[torch.Tensor] = []
    taken = 0
    for record in reader.records(start=start):
        if limit is not None and taken >= limit:
            break
        taken += 1
        item = reader.decode_or_skip(record)
        if item is not None:
            items.append(item)
            tensors.append(transform(item.image))
        if len(items) == batch_size:
            yield Batch(items, torch.stack(tensors), reader.position, reader.report.to_dict())
            items, tensors = [], []
    if items:
        yield Batch(items, torch.stack(tensors), reader.position, reader.report.to_dict())
