"""`vitrine models` and `vitrine embed`."""

from __future__ import annotations

import argparse
import json
import sys

from vitrine.cli._common import (
    SCHEMA_HELP,
    add_catalog_options,
    add_command,
    add_runtime_option,
    catalog_schema,
    runtime_arg,
    runtime_fallback,
)
from vitrine.constants import DEFAULT_MODEL
from vitrine.errors import InvalidInput


def cmd_models(args: argparse.Namespace) -> int:
    """list registered models and model backends

    List the model registry.
    """
    from fnmatch import fnmatchcase

    from vitrine.errors import NotFound
    from vitrine.models import backend_entries, model_entries

    models = [{"name": f"vitrine:{e.name}", "description": e.description} for e in model_entries(args.pattern)]
    backends = [
        {"pattern": e.pattern, "description": e.description}
        for e in backend_entries()
        if args.pattern is None or fnmatchcase(e.pattern, args.pattern)
    ]
    if not models and not backends:
        raise NotFound(
            f"no model or backend matches {args.pattern!r}; `vitrine models` lists them", code="unknown_model"
        )
    if args.json:
        print(json.dumps({"models": models, "backends": backends}, indent=2))
        return 0
    rows = [(m["name"], m["description"]) for m in models] + [(b["pattern"], b["description"]) for b in backends]
    width = max(len(name) for name, _ in rows)
    print(f"{'NAME'.ljust(width)}  DESCRIPTION")
    for name, description in rows:
        print(f"{name.ljust(width)}  {description}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """embed a catalog's images (and titles) to .npy + metadata.csv

    Embed every product of a catalog. Output: image_embeddings.npy (float32, one L2-normalised row per product),
    text_embeddings.npy with --texts, metadata.csv in the same order, manifest.json. Interrupted runs resume from the
    last completed part when rerun with the same arguments.
    """
    from vitrine.embed import run_embed

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runtime = runtime_arg(args)
    if runtime != "torch" and args.engine == "ray":
        raise InvalidInput("--engine ray encodes with --runtime torch for now; drop --runtime, or --engine ray")
    encoder = None
    if runtime != "torch":
        from vitrine.models import create_model

        encoder = create_model(args.model, runtime=runtime, fallback=runtime_fallback(args))
    result = run_embed(
        data=args.data, model=args.model, out=args.out, batch_size=args.batch_size, part_size=args.part_size,
        texts=args.texts, on_error=args.on_error, schema=catalog_schema(args), limit=args.limit,
        overwrite=args.overwrite, progress=not args.no_progress, engine=args.engine, ray=ray_options(args),
        encoder=encoder,
    )
    resumed = result.count - result.computed
    print(
        f"wrote {result.count} embeddings ({result.embed_dim}-d) to {result.out}: computed {result.computed} in "
        f"{result.seconds:.1f}s = {result.images_per_second:.1f} images/s"
        + (f", {resumed} kept from an earlier run" if resumed else "")
        + (f", {result.skipped} rows skipped (see manifest.json)" if result.skipped else ""),
        file=sys.stderr,
    )
    return 0


def ray_options(args: argparse.Namespace):
    """--engine ray's settings (None for the in-process engine)."""
    if args.engine != "ray":
        if args.address or args.workers:
            raise InvalidInput("--address and --workers go with --engine ray")
        return None
    from vitrine.embed.ray_engine import RayOptions

    return RayOptions(address=args.address, workers=args.workers or 2, threads=getattr(args, "threads", 0) or 0)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: encode in this process (default); ray: on a Ray Data actor pool (pip install 'vitrine[scale]')",
    )
    parser.add_argument(
        "--address",
        help="with --engine ray: the Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray started for the "
        "job",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="with --engine ray: encoder actors in the pool, each loading the model once (default 2)",
    )


def register(sub) -> None:
    models = add_command(sub, "models", cmd_models)
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.add_argument(
        "--pattern", help="only the names matching this fnmatch pattern, e.g. '*kagl-base*' or 'hf:*' (quote it)"
    )

    embed = add_command(sub, "embed", cmd_embed)
    embed.add_argument(
        "--data",
        required=True,
        help="catalog: WebDataset shards (dir, glob, or brace range like kagl-{000000..000008}.tar) or a folder with "
        "images/ and catalog.csv|catalog.jsonl",
    )
    embed.add_argument(
        "--model", default=DEFAULT_MODEL, help="registry name (see `vitrine models`); default %(default)s"
    )
    embed.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    embed.add_argument("--batch-size", type=int, default=64, help="images per forward pass; default %(default)s")
    add_runtime_option(embed)
    embed.add_argument(
        "--part-size",
        type=int,
        default=4096,
        help="rows per committed part, the resume granularity; default %(default)s",
    )
    embed.add_argument("--texts", action="store_true", help="also embed titles into text_embeddings.npy")
    embed.add_argument(
        "--on-error",
        choices=["skip", "fail"],
        default="fail",
        help="bad rows: stop with an error naming the row (fail, default) or report and skip them (skip)",
    )
    embed.add_argument("--schema", default=None, help=SCHEMA_HELP)
    add_catalog_options(embed)
    embed.add_argument("--limit", type=int, default=None, help="embed only the first N rows")
    embed.add_argument("--overwrite", action="store_true", help="discard earlier output in --out instead of resuming")
    embed.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (with --engine ray: per worker; default: torch's choice, "
        "or the cores shared out between local workers)",
    )
    add_engine_arguments(embed)
    embed.add_argument("--no-progress", action="store_true", help="hide the progress bar")
