"""`vitrine ...`: thin subcommands that parse arguments and call the library, one module per command group."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # vitrine never downloads at run time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vitrine.cli import adapt, basics, evaluate, export, index, regions, schema, serve, tag, train  # noqa: E402
from vitrine.cli._common import DEFAULT_MODEL, quiet_transformers  # noqa: E402
from vitrine.cli.index import _parse_bytes  # noqa: E402

__all__ = ["DEFAULT_MODEL", "build_parser", "main", "_parse_bytes"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitrine", description="Open fashion vision-language toolkit.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (basics, schema, train, adapt, evaluate, index, regions, tag, serve, export):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a multi-process launcher reruns
    quiet_transformers()
    from vitrine.data.errors import DataError

    try:
        return args.func(args)
    except DataError as exc:
        hint = (
            "\n(use --on-error skip to report and skip bad rows)" if getattr(args, "on_error", None) == "fail" else ""
        )
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        from vitrine.disk import DiskFullError, is_disk_full

        if not is_disk_full(exc):
            raise
        # a library write names its file (DiskFullError); a bare ENOSPC from elsewhere names what it has
        message = exc if isinstance(exc, DiskFullError) else DiskFullError(exc.filename or "a file")
        print(f"error: {message}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        from vitrine.index.store import StoreUnavailable

        if not isinstance(exc, StoreUnavailable):
            raise
        print(f"error: {exc}", file=sys.stderr)  # the index's Milvus server is down or restarting: no traceback
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
