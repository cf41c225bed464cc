"""How vitrine's writers share a directory: the writers' lock, temp files named by their writer, and a full disk as an
error a user can act on.

Temp files and folders are `<name>.<pid>.tmp`: the pid of the process writing them, so that a sweep (under the
writers' lock, at open) removes those of processes that died mid-write and never those of a live writer.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vitrine.errors import DiskFull

WRITE_LOCK = "write.lock"  # in an index directory: held by every writer (service, build, snapshot) for its commit
_TEMP = re.compile(r"\.(\d+)\.tmp$")


class DiskFullError(DiskFull):
    """No space left on the device while writing `path`; what was committed before is intact."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        super().__init__(f"no space left on device while writing {self.path}: the previous commit is intact")
        self.errno = errno.ENOSPC  # what `is_disk_full` and an `except OSError` caller look at


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from the OS (or a failpoint), or SQLite's 'database or disk is full'."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk inside the block into a `DiskFullError` naming `path` (the caller keeps the last commit
    intact)."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from exc
        raise


def temp_path(target: str | os.PathLike) -> Path:
    """`<target>.<pid>.tmp`, beside the target (so that the final rename stays on one filesystem)."""
    target = Path(target)
    return target.with_name(f"{target.name}.{os.getpid()}.tmp")


def writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_temp(directory: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Remove the `<name>.<pid>.tmp` files and folders in `directory` (starting with `prefix`) whose writer is dead.

    Call it holding the lock of the writers of `directory`; a temp entry of a live process is left alone.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _TEMP.search(entry.name)
        if not match or not entry.name.startswith(prefix) or writer_alive(int(match.group(1))):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextmanager
def locked(directory: str | os.PathLike, name: str = WRITE_LOCK) -> Iterator[Path]:
    """Hold the writers' lock of `directory` (an fcntl lock on `<directory>/write.lock`, across processes and
    threads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / name, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
