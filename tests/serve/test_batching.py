"""MicroBatcher: answers go to the right callers, queued requests share a batch, errors reach every caller."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from vitrine.errors import Unavailable
from vitrine.serve.batching import MicroBatcher


def test_a_lone_request_runs_at_once_as_a_batch_of_one():
    batcher = MicroBatcher(lambda xs: [x * 2 for x in xs])
    assert batcher(21) == 42 and batcher.batch_sizes == [1]
    batcher.close()
    with pytest.raises(Unavailable, match="shutting down") as refused:
        batcher(1)
    assert refused.value.code == "shutting_down" and refused.value.status == 503


def test_requests_queued_behind_a_running_batch_share_the_next_one():
    release, started = threading.Event(), threading.Event()

    def square(xs):
        started.set()
        release.wait(10)
        return [x * x for x in xs]

    batcher = MicroBatcher(square, max_batch=4)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher, 1)
        assert started.wait(10)  # the first batch is running and holds the thread
        rest = [pool.submit(batcher, x) for x in range(2, 8)]
        while batcher._queue.qsize() < 6:  # all six are queued behind it
            threading.Event().wait(0.001)
        release.set()
        assert first.result() == 1 and [f.result() for f in rest] == [x * x for x in range(2, 8)]
    assert batcher.batch_sizes == [1, 4, 2]  # max_batch caps the second batch
    batcher.close()


def test_an_error_reaches_every_caller_of_its_batch_and_the_batcher_lives_on():
    def picky(xs):
        if any(x < 0 for x in xs):
            raise ValueError("negative input")
        return list(xs)

    batcher = MicroBatcher(picky)
    with pytest.raises(ValueError, match="negative input"):
        batcher(-1)
    assert batcher(3) == 3
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(batcher, range(100))) == list(range(100))
    wrong = MicroBatcher(lambda xs: [])
    with pytest.raises(RuntimeError, match="0 outputs for 1 inputs"):
        wrong(1)
    batcher.close()
    wrong.close()


def test_under_load_a_batch_waits_for_more_requests_and_a_lone_request_never_waits():
    release, started = threading.Event(), threading.Event()

    def square(xs):
        if not started.is_set():
            started.set()
            release.wait(10)
        return [x * x for x in xs]

    batcher = MicroBatcher(square, max_batch=2, max_wait=30.0)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher, 1)  # a lone request: run at once (a wait would hold it 30 s)
        assert started.wait(10)
        queued = [pool.submit(batcher, x) for x in (2, 3)]
        while batcher._queue.qsize() < 2:
            threading.Event().wait(0.001)
        release.set()
        assert first.result() == 1 and [f.result() for f in queued] == [4, 9]  # [2, 3]: taken as queued, no wait
        waiting = pool.submit(batcher, 4)  # after a batch of two, the next batch waits for company...
        while batcher._queue.qsize() > 0:
            threading.Event().wait(0.001)
        assert not waiting.done()
        late = pool.submit(batcher, 5)  # ...and a request arriving later joins it
        assert waiting.result(10) == 16 and late.result(10) == 25
    assert batcher.batch_sizes == [1, 2, 2]
    batcher.close()
    with pytest.raises(ValueError, match="max_wait"):
        MicroBatcher(square, max_wait=-1)
