"""`--nproc N`: rerun a `vitrine` command as N processes through torchrun (torch.distributed.run) on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from vitrine.errors import InvalidInput


def launch(nproc: int, argv: Sequence[str], threads: int = 0) -> int:
    """Rerun this command as `nproc` processes through torch.distributed.run (torchrun), on this machine."""
    if nproc < 2:
        raise InvalidInput("--nproc must be >= 2 to launch several processes")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads or max(1, (os.cpu_count() or 1) // nproc)))
    argv = _without_option(
        list(argv), "--nproc"
    )  # the processes see WORLD_SIZE instead (and torchrun would misread it)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "vitrine",
        *argv,
    ]
    return subprocess.run(command, env=env).returncode


def _without_option(argv: list[str], name: str) -> list[str]:
    """`argv` minus `name VALUE` and `name=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out
