"""`vitrine adapt --catalog PATH --out DIR`: fine-tune the default model on a shop's own catalog."""

from __future__ import annotations

import argparse
import json

from vitrine.cli._common import SCHEMA_HELP, add_command
from vitrine.errors import InvalidInput


def cmd_adapt(args: argparse.Namespace) -> int:
    """fine-tune a model on your own catalog (minutes on CPU)

    Continue a trained model's recipe on your catalog: captions from its titles and from templates built from its own
    columns, warm-started from the model's weights (for vitrine:kagl-base, heads over the locked image tower's cached
    features). A slice of the catalog (--holdout, by id) is held out and the figures on it are printed before and after:
    title->image R@10 and zero-shot top-1 per categorical column. Rerun the same command to resume after an
    interruption. The model is written to OUT/model; the last lines name it and how to serve it.
    """
    from vitrine.train.adapt import adapt, format_result

    if not 0.0 < args.holdout < 0.9:
        raise InvalidInput(f"--holdout is a share of the catalog in (0, 0.9), got {args.holdout}")
    result = adapt(
        args.catalog, args.out, model=args.model, schema=args.schema, holdout=args.holdout, epochs=args.epochs,
        cache_dir=args.cache_dir, progress=not args.no_progress,
    )
    print(format_result(result))
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def register(sub) -> None:
    from vitrine.constants import DEFAULT_MODEL

    adapt = add_command(sub, "adapt", cmd_adapt)
    adapt.add_argument(
        "--catalog", required=True, help="your catalog: a folder with catalog.csv|catalog.jsonl and images, or shards"
    )
    adapt.add_argument("--out", required=True, help="run directory: checkpoint, metrics, schema.json and model/")
    adapt.add_argument("--model", default=DEFAULT_MODEL, help="the trained model to start from; default %(default)s")
    adapt.add_argument("--schema", help=SCHEMA_HELP)
    adapt.add_argument(
        "--holdout",
        type=float,
        default=0.1,
        help="share of products held out for the figures (by id); default %(default)s",
    )
    adapt.add_argument("--epochs", type=int, help="epochs over the catalog (default: about 240 steps in all)")
    adapt.add_argument(
        "--cache-dir", default="runs/cache", help="feature caches (image tower, text); default %(default)s"
    )
    adapt.add_argument("--json", action="store_true", help="also print the result as one JSON object on the last line")
    adapt.add_argument("--no-progress", action="store_true", help="hide progress bars")
