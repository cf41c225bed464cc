"""map_ordered: results in input order however work finishes, bounded in flight, errors re-raised, one worker is a
loop."""

from __future__ import annotations

import threading
import time

import pytest

from vitrine.data.loader import map_ordered


def test_results_keep_the_input_order_when_later_items_finish_first():
    def slow_first(x):
        time.sleep(0.03 if x % 4 == 0 else 0)
        return x * 10

    assert list(map_ordered(slow_first, range(20), workers=3)) == [x * 10 for x in range(20)]
    assert list(map_ordered(slow_first, range(5), workers=1)) == [0, 10, 20, 30, 40]


def test_at_most_ahead_items_are_taken_before_the_consumer_reads():
    taken, lock = [], threading.Lock()

    def items():
        for x in range(100):
            with lock:
                taken.append(x)
            yield x

    results = map_ordered(lambda x: x, items(), workers=2, ahead=3)
    assert next(results) == 0
    assert len(taken) <= 4  # three in flight, then the one that made the first result due
    results.close()


def test_an_error_reraises_in_the_consumer():
    def fails_on_seven(x):
        if x == 7:
            raise ValueError("bad item 7")
        return x

    seen = []
    with pytest.raises(ValueError, match="bad item 7"):
        for value in map_ordered(fails_on_seven, range(50), workers=2):
            seen.append(value)
    assert seen == list(range(7))
