"""Shared pieces of the subcommands: the default model name and report printing."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys

from vitrine.constants import DEFAULT_MODEL, DEFAULT_RUNTIME, RUNTIMES  # torch-free: fast --help
from vitrine.errors import InvalidInput


def add_runtime_option(parser: argparse.ArgumentParser, default: str = DEFAULT_RUNTIME) -> None:
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help=f"inference runtime: torch, onnx (ONNX Runtime, fp32) or onnx-int8 (int8 text tower); the ONNX graphs are "
        f"exported into $VITRINE_ONNX_CACHE (default ~/.cache/vitrine/onnx) on first use; default {default}",
    )


def parse_size(text: str, what: str = "a size") -> int:
    """'64M', '1G', '512KiB' or a number of bytes; a ValueError naming `what` for anything else."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        value = float(clean[:-1]) * units[clean[-1]] if clean and clean[-1] in units else float(clean)
    except ValueError:
        raise InvalidInput(f"{what} looks like 64M, 512K or a number of bytes, got {text!r}") from None
    if value < 1:
        raise InvalidInput(f"{what} must be at least 1 byte, got {text!r}")
    return int(value)


def byte_count(text: str) -> int:
    """`parse_size` as an argparse type."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_catalog_options(parser: argparse.ArgumentParser) -> None:
    """How a catalog is read, beyond its schema: limits for untrusted catalogs (`catalog_schema` applies them)."""
    parser.add_argument(
        "--max-member-bytes",
        type=byte_count,
        metavar="N",
        help="WebDataset shards: the largest tar member read (e.g. 64M); a larger one makes its sample a bad row, "
        "refused unread (skipped and reported, or failing, per --on-error); default 64M",
    )
    parser.add_argument(
        "--confine-images",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="folder catalogs: image paths must stay inside the catalog folder ('..', absolute paths and symlinks "
        "pointing out make bad rows); default on; --no-confine-images for a trusted catalog whose image "
        "column points elsewhere",
    )


SCHEMA_HELP = (
    "catalog schema: a builtin name (kagl) or a JSON file; default: read from the catalog's own columns (KAGL's "
    "columns read as kagl; `vitrine schema infer PATH` shows what it would use)"
)


def catalog_schema(args: argparse.Namespace):
    """The schema of the command's catalog (--data or --catalog): --schema as given, or the one the catalog's columns
    say, printed in one line; --max-member-bytes and --confine-images applied."""
    overrides = {
        name: getattr(args, name)
        for name in ("max_member_bytes", "confine_images")
        if getattr(args, name, None) is not None
    }
    given = getattr(args, "schema", None)
    path = getattr(args, "data", None) or getattr(args, "catalog", None)
    if isinstance(path, (list, tuple)):
        path = path[0] if len(path) == 1 else None
    if path is None or getattr(args, "_schema", None) is not None:
        schema = getattr(args, "_schema", None) or given
    else:
        from vitrine.data.catalog import schema_for

        schema, line = schema_for(path, given)
        if given is None:
            print(line, file=sys.stderr)
        args._schema = schema
    if not overrides:
        return schema
    from dataclasses import replace

    from vitrine.data.schema import resolve_schema

    return replace(resolve_schema(schema), **overrides)


def runtime_arg(args: argparse.Namespace, default: str = DEFAULT_RUNTIME) -> str:
    """--runtime as given, else `default` (torch for --engine ray, whose actors encode with torch)."""
    if getattr(args, "engine", None) == "ray":
        default = "torch"
    return getattr(args, "runtime", None) or default


def runtime_fallback(args: argparse.Namespace) -> bool:
    """A model with no ONNX export runs on torch when the runtime was the default, not when --runtime asked for ONNX."""
    return getattr(args, "runtime", None) is None


def quiet_transformers() -> None:
    """transformers' warnings and progress bars off, through its environment variables: commands that never load it
    (an ONNX model) do not pay its import, and child processes (serve workers, Ray actors) are quiet too."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


# Long per-class and per-example figures: in the JSON and the --report pages, not in the table printed for people.
DETAIL_KEYS = ("per_class", "confusion", "confused_pairs", "worst_queries", "examples")


def print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if key in DETAIL_KEYS:
            continue
        if isinstance(value, dict):
            print(f"{key}:")
            for inner, inner_value in value.items():
                print(f"  {inner:<14}{inner_value}")
        else:
            print(f"{key:<16}{value}")


def add_eval_options(parser: argparse.ArgumentParser, model: str = DEFAULT_MODEL) -> None:
    parser.add_argument("--data", required=True, help="catalog to evaluate (any format vitrine reads)")
    parser.add_argument("--model", default=model, help="registry name; default %(default)s")
    parser.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "val", "unseen", "calib", "heldout"],
        help="evaluate only this split of --data (heldout = val + unseen); default %(default)s",
    )
    parser.add_argument(
        "--split-config",
        help="JSON holding the split (a training config or a model's training.json); default: vitrine's default split",
    )
    parser.add_argument("--schema", help=SCHEMA_HELP)
    parser.add_argument(
        "--on-error", choices=["skip", "fail"], default="skip", help="bad rows: skip and report (default) or fail"
    )
    add_catalog_options(parser)
    add_report_output_options(parser)


def add_report_output_options(parser: argparse.ArgumentParser) -> None:
    """How an evaluation prints its report: one JSON object or the table, with or without progress bars."""
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


REGION_VIEWS = ("whole", "foreground", "body")  # the region providers a command can crop an image into
POOLINGS = ("blend", "max", "mean")  # how region scores combine
SPLITS = ("all", "train", "val", "unseen", "calib", "heldout")  # heldout = val + unseen

# Options several commands take, written once; `add_options` adds them by name, a command changing its help or more.
SHARED_OPTIONS: dict[str, dict] = {
    "data": {"required": True, "help": "catalog (any format vitrine reads)"},
    "model": {"default": DEFAULT_MODEL, "help": "registry name; default %(default)s"},
    "batch_size": {"type": int, "default": 64, "help": "images per forward pass; default %(default)s"},
    "schema": {"help": SCHEMA_HELP},
    "on_error": {"choices": ["skip", "fail"], "default": "skip", "help": "bad rows: skip and report (default) or fail"},
    "cache_dir": {"default": "runs/cache", "help": "where image features are cached; default %(default)s"},
    "json": {"action": "store_true", "help": "print JSON"},
    "no_progress": {"action": "store_true", "help": "hide progress bars"},
}


def add_options(parser: argparse.ArgumentParser, **options: bool | str | dict) -> None:
    """Add shared options by name, in the order given: True for the usual help, a text for another help, a dict to
    change more (`add_options(parser, schema=True, json="print results as JSON")`)."""
    for name, given in options.items():
        if given is False:
            continue
        spec = dict(SHARED_OPTIONS[name])
        if isinstance(given, str):
            spec["help"] = given
        elif isinstance(given, dict):
            spec.update(given)
        parser.add_argument("--" + name.replace("_", "-"), **spec)


def command_group(sub, name: str, help: str, description: str, dest: str = "action", metavar: str = "ACTION"):
    """`vitrine NAME ACTION ...`: the group's parser, returning the sub-parsers its actions are added to."""
    group = sub.add_parser(name, help=help, description=description)
    return group.add_subparsers(dest=dest, required=True, metavar=metavar)


def command_texts(func) -> tuple[str, str]:
    """A command's help line and description, from `func`'s docstring: its first paragraph, then the rest (each in one
    line; the help line again when there is no rest)."""
    first, _, rest = (inspect.getdoc(func) or "").partition("\n\n")
    help = " ".join(first.split())
    return help, " ".join(rest.split()) or help


def add_command(sub, name: str, func, **kwargs) -> argparse.ArgumentParser:
    """A (sub)command that runs `func(args)`, its help and description from `func`'s docstring (`command_texts`) unless
    given in `kwargs` (the rest of `sub.add_parser`'s); its options are added to the parser returned."""
    help, description = command_texts(func)
    parser = sub.add_parser(name, **{"help": help, "description": description, **kwargs})
    parser.set_defaults(func=func)
    return parser


def command_model(args: argparse.Namespace, name: str | None = None, default_runtime: str = DEFAULT_RUNTIME):
    """The encoder a command runs: `name` (default --model) on --runtime (default `default_runtime`)."""
    from vitrine.models import create_model

    runtime = runtime_arg(args, default_runtime)
    return create_model(name or args.model, runtime=runtime, fallback=runtime_fallback(args))


def finish(message: str) -> int:
    """A command's closing line, on stderr (stdout is for results); exit status 0."""
    print(message, file=sys.stderr)
    return 0
