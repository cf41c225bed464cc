"""`vitrine tag`: open-vocabulary attribute tags for one image or a whole catalog."""

from __future__ import annotations

import argparse
import json
import sys

from vitrine.cli._common import SCHEMA_HELP, add_command, add_runtime_option, runtime_arg, runtime_fallback
from vitrine.constants import DEFAULT_TAG_MODEL
from vitrine.tagging.factory import resolve_vocabulary  # noqa: F401  (where `vitrine index` and `eval` take it from)


def add_tagging_options(
    parser: argparse.ArgumentParser, model: bool = True, runtime_default: str | None = None
) -> None:
    if model:
        parser.add_argument("--model", default=DEFAULT_TAG_MODEL, help="registry name; default %(default)s")
    parser.add_argument(
        "--regions",
        choices=["whole", "foreground", "body"],
        default="foreground",
        help="views scored per image: the whole image only, or also the foreground crop and its segmented view, "
        "or body-part crops (default %(default)s)",
    )
    parser.add_argument(
        "--pooling",
        choices=["blend", "max", "mean"],
        default="blend",
        help="how region scores combine: blend = (1 - w) * whole + w * best region, w per attribute from the "
        "vocabulary (region_weight, fitted by eval attributes --calibrate-split; default 0.5); max or mean over "
        "all views (default %(default)s)",
    )
    parser.add_argument(
        "--annotations", help="JSON/CSV sidecar of region boxes/polygons keyed by id or file stem (replaces --regions)"
    )
    parser.add_argument("--segmenter", help="a transformers semantic-segmentation model directory (replaces --regions)")
    add_runtime_option(parser, **({"default": runtime_default} if runtime_default else {}))


def cmd_tag(args: argparse.Namespace) -> int:
    """tag images with open-vocabulary attributes

    Score each attribute's values (prompts from the vocabulary) against the image's region views and print the best
    value per attribute, or 'unknown' when its probability is below the attribute's threshold. Adding values or
    attributes to the vocabulary file needs no retraining.
    """
    from vitrine.tagging.evaluate import embed_split
    from vitrine.tagging.factory import create_tagger

    tagger = create_tagger(
        args.model, args.attributes, args.regions, args.pooling, args.annotations, args.segmenter,
        runtime=runtime_arg(args), fallback=runtime_fallback(args),
    )
    if args.image:
        results = list(zip(args.image, tagger.tag_images(args.image)))
    else:
        items, embeds = embed_split(tagger, args.data, keep=None, schema=args.schema, progress=not args.no_progress)
        results = [(item.id, tags) for item, tags in zip(items, tagger.tags(embeds))]
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for key, tags in results:
            if args.json or args.out:
                out.write(json.dumps({"id": key, "tags": {name: tag.to_dict() for name, tag in tags.items()}}) + "\n")
            else:
                out.write(f"{key}\n")
                width = max((len(name) for name in tags), default=0) + 2
                for name, tag in tags.items():
                    shown = tag.value if tag.value == tag.best else f"unknown (best guess {tag.best})"
                    out.write(f"  {name:<{width}}{shown:<32} p={tag.probability:.3f} cos={tag.score:.3f}\n")
    finally:
        if args.out:
            out.close()
            print(f"tagged {len(results)} products into {args.out}", file=sys.stderr)
    return 0


def register(sub) -> None:
    tag = add_command(sub, "tag", cmd_tag)
    source = tag.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", nargs="+", help="image file(s)")
    source.add_argument("--data", help="a catalog (any format vitrine reads): tag every product")
    tag.add_argument(
        "--attributes",
        help="vocabulary YAML/JSON (attribute -> values, synonyms, prompts), or a comma list of "
        "attributes of the shipped KAGL vocabulary; default: the shipped KAGL vocabulary",
    )
    add_tagging_options(tag)
    tag.add_argument("--schema", help="--data: " + SCHEMA_HELP)
    tag.add_argument("--out", help="write JSON lines here instead of printing")
    tag.add_argument("--json", action="store_true", help="print JSON lines")
    tag.add_argument("--no-progress", action="store_true", help="hide progress bars")
