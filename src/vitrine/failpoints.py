"""Crash injection for tests: `VITRINE_FAILPOINTS="name:n"` SIGKILLs the process the n-th time `name` is reached.

Like SQLite's and etcd's failpoints: a real kill at an exact point, so crash tests need no timing.
Unset (always, outside tests) this costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("VITRINE_FAILPOINTS")
    if not spec:
        return
    for entry in spec.split(","):
        target, _, count = entry.partition(":")
        if target == name:
            _hits[name] = _hits.get(name, 0) + 1
            if _hits[name] >= int(count or 1):
                os.kill(os.getpid(), signal.SIGKILL)
