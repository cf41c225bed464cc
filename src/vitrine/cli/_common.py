"""Shared pieces of the subcommands: the default model name and report printing."""

from __future__ import annotations

import argparse
import json
import os
import sys

DEFAULT_MODEL = "vitrine:kagl-base"  # kept equal to vitrine.models.DEFAULT_MODEL without importing torch for --help
DEFAULT_TAG_MODEL = "vitrine:kagl-base-regions"  # kept equal to vitrine.models.DEFAULT_TAG_MODEL, likewise
DEFAULT_RUNTIME = (
    "onnx"  # the fastest runtime that passes parity (kept equal to vitrine.models.onnx_runtime.DEFAULT_RUNTIME)
)
RUNTIMES = ("torch", "onnx", "onnx-int8")  # kept equal to vitrine.models.onnx_runtime.RUNTIMES


def add_runtime_option(parser: argparse.ArgumentParser, default: str = DEFAULT_RUNTIME) -> None:
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help=f"inference runtime: torch, onnx (ONNX Runtime, fp32) or onnx-int8 (int8 text tower); the ONNX graphs are "
        f"exported into $VITRINE_ONNX_CACHE (default ~/.cache/vitrine/onnx) on first use; default {default}",
    )


def byte_count(text: str) -> int:
    """'64M', '1G', '512K' or a number of bytes (argparse type)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        value = float(clean[:-1]) * units[clean[-1]] if clean and clean[-1] in units else float(clean)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size looks like 64M, 512K or a number of bytes, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a size must be at least 1 byte, got {text!r}")
    return int(value)


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
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
