"""`vitrine ...`: thin subcommands that parse arguments and call the library, one module per command group."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # vitrine never downloads at run time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vitrine import __version__  # noqa: E402
from vitrine.cli import adapt, basics, evaluate, export, index, regions, schema, serve, tag, train  # noqa: E402
from vitrine.cli._common import quiet_transformers  # noqa: E402
from vitrine.cli.index import _parse_bytes  # noqa: E402
from vitrine.constants import DEFAULT_MODEL  # noqa: E402
from vitrine.errors import INTERNAL_EXIT_CODE, ISSUES_URL, VitrineError  # noqa: E402

__all__ = ["DEFAULT_MODEL", "build_parser", "main", "_parse_bytes"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitrine", description="Open fashion vision-language toolkit.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (basics, schema, train, adapt, evaluate, index, regions, tag, serve, export):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A `VitrineError` is the user's to fix or the machine's: one line and its exit code; anything
    else is a bug in vitrine: its traceback, a line asking for a report, and `INTERNAL_EXIT_CODE`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a multi-process launcher reruns
    quiet_transformers()
    try:
        return args.func(args)
    except VitrineError as exc:
        return refused(exc, args)
    except OSError as exc:
        from vitrine.disk import DiskFullError, is_disk_full

        if not is_disk_full(exc):
            return internal_error(args)
        # a bare ENOSPC from a library that does not know vitrine's errors: named as vitrine's own
        return refused(DiskFullError(exc.filename or "a file"), args)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception:
        return internal_error(args)


def refused(exc: VitrineError, args: argparse.Namespace) -> int:
    """A user's or the environment's error: `error: <message>` on stderr, and the class's exit code."""
    from vitrine.data.errors import DataError

    hint = ""
    if isinstance(exc, DataError) and getattr(args, "on_error", None) == "fail":
        hint = "\n(use --on-error skip to report and skip bad rows)"
    print(f"error: {exc}{hint}", file=sys.stderr)
    return exc.exit_code


def internal_error(args: argparse.Namespace) -> int:
    """A bug: the traceback, then what to report, on stderr."""
    traceback.print_exc()
    print(
        f"internal error in vitrine {__version__} running `vitrine {' '.join(args.argv)}`: this is a bug, not your "
        f"input; please report it with the traceback above at {ISSUES_URL}",
        file=sys.stderr,
    )
    return INTERNAL_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
