"""Fault injection for tests: `VITRINE_FAILPOINTS="name:n"` SIGKILLs the process the n-th time `name` is reached.

Like SQLite's and etcd's failpoints: a real kill at an exact point, so crash tests need no timing.
`name:n:enospc` raises `OSError(ENOSPC)` there instead, from the n-th time on (a full disk stays full until the
variable is unset), so tests can fill the disk at an exact write. Entries are separated by commas.
Unset (always, outside tests) this costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

ACTIONS = ("kill", "enospc")
_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("VITRINE_FAILPOINTS")
    if not spec:
        return
    for entry in spec.split(","):
        target, _, rest = entry.partition(":")
        if target != name:
            continue
        count, _, action = rest.partition(":")
        action = action or "kill"
        if action not in ACTIONS:
            raise ValueError(f"VITRINE_FAILPOINTS entry {entry!r}: the action must be one of {', '.join(ACTIONS)}")
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] >= int(count or 1):
            if action == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"failpoint {name}")
            os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget how often each failpoint was reached (tests that count hits in one process)."""
    _hits.clear()
