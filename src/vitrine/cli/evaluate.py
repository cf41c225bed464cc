"""`vitrine eval zero-shot|retrieval|composed|attributes|kagl-leaderboard`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from vitrine.cli._common import (
    SCHEMA_HELP,
    add_catalog_options,
    add_command,
    add_eval_options,
    add_report_output_options,
    add_runtime_option,
    catalog_schema,
    command_group,
    print_report,
    runtime_arg,
    runtime_fallback,
)
from vitrine.constants import DEFAULT_MODEL, DEFAULT_TAG_MODEL
from vitrine.errors import InvalidInput


def _seen_classes(path: str | None, field: str) -> list[str]:
    if not path:
        return []
    data = json.loads(open(path, encoding="utf-8").read())
    if isinstance(data, dict):
        data = data.get("seen_classes", data).get(field, [])
    return list(data)


def add_report_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report",
        metavar="DIR",
        help="also write an HTML report into DIR (index.html, PNG plots, product thumbnails, report.json), drawn from "
        "the same figures as the JSON; an existing folder is written into",
    )


def check_report(args: argparse.Namespace) -> None:
    """Refuse a --report that cannot be written before the evaluation runs, not after."""
    if args.report:
        from vitrine.evaluate.report import check_report_folder

        check_report_folder(args.report)


def write_report(args: argparse.Namespace, kind: str, report: dict, catalogs=()) -> None:
    """With --report DIR: the page of `report` (its products read from `catalogs`); its path goes to stderr."""
    if not args.report:
        return
    from vitrine.evaluate.report import write_report as write

    page = write(
        kind, report, args.report, catalogs=catalogs, schema=catalog_schema(args),
        command="vitrine " + shlex.join(args.argv), progress=not args.no_progress,
    )
    print(f"report: {page}", file=sys.stderr)


def cmd_eval_zero_shot(args: argparse.Namespace) -> int:
    """classify items among class names from prompts

    Zero-shot classification: each item of --data is classified among the class names found in --data and every
    --classes-from catalog, with prompt ensembling. Empty and NA values are skipped.
    """
    check_report(args)
    from vitrine.data.splits import load_split_config
    from vitrine.evaluate.runner import run_zero_shot
    from vitrine.models import create_model

    report = run_zero_shot(
        data=args.data,
        field=args.field,
        model=create_model(args.model, runtime=runtime_arg(args, "torch"), fallback=runtime_fallback(args)),
        classes_from=args.classes_from or (),
        templates=args.templates,
        split=args.split,
        split_config=load_split_config(args.split_config),
        schema=catalog_schema(args),
        on_error=args.on_error,
        ensemble=not args.single_template,
        seen_classes=_seen_classes(args.seen_classes, args.field),
        calibration=args.calibration,
        progress=not args.no_progress,
    )
    print_report(report, args.json)
    write_report(args, "zero-shot", report)
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    """title -> image (and image -> title) retrieval of exact products

    Queries are the titles of --data items; the gallery is their images plus every --gallery catalog (distractors, ids
    deduplicated). Output: n_queries, gallery_size, R@1, R@5, R@10, MRR, and image_to_text.
    """
    check_report(args)
    from vitrine.data.splits import load_split_config
    from vitrine.evaluate.runner import run_retrieval
    from vitrine.models import create_model

    report = run_retrieval(
        data=args.data,
        model=create_model(args.model, runtime=runtime_arg(args, "torch"), fallback=runtime_fallback(args)),
        galleries=args.gallery or (),
        split=args.split,
        split_config=load_split_config(args.split_config),
        schema=catalog_schema(args),
        on_error=args.on_error,
        image_to_text=not args.no_image_to_text,
        progress=not args.no_progress,
    )
    print_report(report, args.json)
    write_report(args, "retrieval", report, catalogs=[args.data, *(args.gallery or ())])
    return 0


def cmd_eval_composed(args: argparse.Namespace) -> int:
    """composed retrieval: triplet files, FashionIQ or CIRR

    Composed image retrieval. With --triplets: R@1/10/50 over the gallery, the reference removed from its own ranking.
    --protocol fashioniq|cirr reads the official annotation folder given as --data.
    """
    check_report(args)
    from vitrine.cir.compose import Composer
    from vitrine.models import create_model

    if args.protocol == "triplets" and not args.triplets:
        raise InvalidInput("--triplets FILE is needed (or --protocol fashioniq|cirr)")
    model = create_model(args.model, runtime=runtime_arg(args, "torch"), fallback=runtime_fallback(args))
    composer = Composer(model, args.combiner)
    if args.protocol == "triplets":
        from vitrine.cir.evaluate import run_composed

        report = run_composed(
            args.data, args.triplets, composer, galleries=args.gallery or (), schema=catalog_schema(args),
            on_error=args.on_error, cache_dir=args.cache_dir, progress=not args.no_progress,
        )
    elif args.protocol == "fashioniq":
        from vitrine.cir.protocols import evaluate_fashioniq

        report = evaluate_fashioniq(
            composer, args.data, args.images or f"{args.data}/images", split=args.split or "val",
            progress=not args.no_progress,
        )
    else:
        from vitrine.cir.protocols import evaluate_cirr

        report = evaluate_cirr(
            composer, args.data, args.images or f"{args.data}/images", split=args.split or "val",
            submission=args.submission, progress=not args.no_progress,
        )
    print_report(report, args.json)
    write_report(
        args, "composed", report, catalogs=[args.data, *(args.gallery or ())] if args.protocol == "triplets" else ()
    )
    return 0


def cmd_eval_attributes(args: argparse.Namespace) -> int:
    """open-vocabulary attribute tagging: per-attribute precision / recall, mean precision

    Tag every item of --data (its --split) and score the tags against its attribute columns. Precision counts answers
    given ('unknown' is no answer), recall every labelled item; mean_precision averages precision over attributes
    (RaF-CLIP's measure); top1 is accuracy without abstention.
    """
    check_report(args)
    from vitrine.cli.tag import resolve_vocabulary
    from vitrine.data.splits import load_split_config
    from vitrine.models import create_model
    from vitrine.tagging.evaluate import run_attribute_eval
    from vitrine.tagging.views import make_views

    vocabulary = resolve_vocabulary(
        args.attributes or DEFAULT_ATTRIBUTES, data=args.data, schema=catalog_schema(args), model=args.model
    )
    report = run_attribute_eval(
        args.data,
        create_model(args.model, runtime=runtime_arg(args, "torch"), fallback=runtime_fallback(args)),
        vocabulary,
        make_views(args.regions, args.annotations, args.segmenter),
        pooling=args.pooling,
        split=args.split,
        split_config=load_split_config(args.split_config),
        calibrate_split=args.calibrate_split,
        schema=catalog_schema(args),
        progress=not args.no_progress,
        hierarchy_split=args.hierarchy_split or None,
        target_precision=args.target_precision or None,
    )
    if args.save_vocabulary:
        vocabulary.with_calibration(report["calibration"]).save(args.save_vocabulary)
    print_report(report, args.json)
    write_report(args, "attributes", report)
    return 0


DEFAULT_ATTRIBUTES = "gender,baseColour,usage,season,articleType"


def cmd_eval_leaderboard(args: argparse.Namespace) -> int:
    """the public fashion leaderboard's KAGL tasks (text->image R@1/R@10/MRR, category P@1/P@10)

    Marqo-FashionCLIP's leaderboard protocol on a catalog: text-to-image with up to --max-queries distinct titles
    (sampled with --seed) against every product's image; category-to-product (masterCategory) and
    sub-category-to-product (subCategory) with the raw value as the query against normalize(0.9 image + 0.1 title).
    Prints a table in the leaderboard's columns beside its published KAGL rows; --output writes one
    clip_benchmark-shaped JSON file per task.
    """
    from pathlib import Path

    from vitrine.data.splits import load_split_config, split_config_from, split_filter
    from vitrine.evaluate.leaderboard import run_leaderboard
    from vitrine.evaluate.leaderboard_tasks import leaderboard_table, output_name
    from vitrine.models import create_model

    records = []
    for name in args.model:
        model = create_model(name, runtime=runtime_arg(args, "torch"), fallback=runtime_fallback(args))
        split = None
        if args.query_split != "all":  # the model's own training split unless one is given
            own = model.training_info.get("config", {}).get("split")
            split = load_split_config(args.split_config) if args.split_config or not own else split_config_from(own)
        records += run_leaderboard(
            args.data,
            model,
            tasks=args.tasks,
            max_queries=args.max_queries,
            seed=args.seed,
            dataset=args.dataset,
            cache_dir=args.cache_dir or None,
            schema=catalog_schema(args),
            progress=not args.no_progress,
            query_filter=split_filter(args.query_split, split) if split else None,
            query_split=args.query_split,
        )
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for record in records:
            (out / output_name(record)).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print(leaderboard_table(records, with_published=not args.no_published))
    return 0


def register(sub) -> None:
    protocols = command_group(sub, "eval", "evaluation protocols (zero-shot, retrieval, composed)",
        "Evaluation protocols.", dest="protocol", metavar="PROTOCOL")
    zero_shot = add_command(protocols, "zero-shot", cmd_eval_zero_shot)
    add_eval_options(zero_shot)
    add_runtime_option(zero_shot, default="torch")
    zero_shot.add_argument("--field", required=True, help="attribute to classify, e.g. articleType")
    zero_shot.add_argument(
        "--classes-from", nargs="*", help="more catalogs whose values of --field join the class list"
    )
    zero_shot.add_argument("--templates", help="prompt set: builtin name or JSON file (default: kagl)")
    zero_shot.add_argument(
        "--single-template", action="store_true", help="use only each attribute's first template (no ensembling)"
    )
    zero_shot.add_argument(
        "--seen-classes", help="JSON list, or a model's training.json, of classes seen in training (for --calibration)"
    )
    zero_shot.add_argument(
        "--calibration",
        default="auto",
        help="calibrated stacking margin subtracted from seen classes' scores. 'auto' (default): the raw figures, "
        "and beside them under 'calibrated' those with the margin and seen classes the model was trained with, "
        "if it has them; each with seen_top1, unseen_top1 and H. A number applies only that margin; 0 turns it off",
    )
    add_report_option(zero_shot)
    retrieval = add_command(protocols, "retrieval", cmd_eval_retrieval)
    add_eval_options(retrieval)
    add_runtime_option(retrieval, default="torch")
    retrieval.add_argument("--gallery", nargs="*", help="distractor catalogs added to the gallery")
    retrieval.add_argument("--no-image-to-text", action="store_true", help="skip the image -> title direction")
    add_report_option(retrieval)

    attributes = add_command(protocols, "attributes", cmd_eval_attributes)
    add_eval_options(attributes, model=DEFAULT_TAG_MODEL)  # --split all: a catalog the model never saw is scored whole
    from vitrine.cli.tag import add_tagging_options

    attributes.add_argument(
        "--attributes",
        help=f"comma list of columns to score (values read from --data), or a vocabulary YAML/JSON; "
        f"default {DEFAULT_ATTRIBUTES}",
    )
    add_tagging_options(attributes, model=False, runtime_default="torch")
    attributes.add_argument(
        "--calibrate-split",
        choices=["train", "val", "unseen", "calib", "heldout"],
        help="first fit each attribute's softmax temperature on this split of --data (never the evaluated split)",
    )
    attributes.add_argument(
        "--hierarchy-split", default="train", choices=["", "all", "train", "val", "calib"],
        help="with --calibrate-split: read the attribute hierarchy (e.g. articleType -> subCategory -> masterCategory) "
        "off the labels of this split; coarse attributes then follow the finer one ('' to skip; default %(default)s)"
    )
    attributes.add_argument(
        "--target-precision", type=float, default=0.9,
        help="with --calibrate-split: fit each attribute's 'unknown' threshold so that its answered tags reach this "
        "precision there (or answer half the items when none does; 0 to keep the vocabulary's; default %(default)s)"
    )
    attributes.add_argument(
        "--save-vocabulary", help="write the vocabulary, with the fitted temperatures, to this JSON file"
    )
    add_report_option(attributes)

    from vitrine.evaluate.leaderboard_tasks import MAX_QUERIES, SEED, TASKS

    board = add_command(protocols, "kagl-leaderboard", cmd_eval_leaderboard)
    board.add_argument(
        "--data", required=True, help="the catalog (e.g. ../shared/data/kagl/shards); every product is in the gallery"
    )
    board.add_argument(
        "--model", nargs="+", default=[DEFAULT_MODEL], help="one or more registry names; default %(default)s"
    )
    add_runtime_option(board, default="torch")
    board.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="default: all three")
    board.add_argument(
        "--max-queries",
        type=int,
        default=MAX_QUERIES,
        help="sampled distinct titles for text-to-image; default %(default)s",
    )
    board.add_argument("--seed", type=int, default=SEED, help="query sampling seed; default %(default)s")
    board.add_argument(
        "--query-split", default="all", choices=["all", "val", "unseen", "calib", "heldout"],
        help="text-to-image: sample the queries from the titles of this split's products only (e.g. 'heldout': "
        "products the model did not train on), the gallery staying the whole catalog; default %(default)s"
    )
    board.add_argument("--split-config",
        help="with --query-split: the split (a training config or training.json); default: the model's own")
    board.add_argument("--dataset", default="kagl", help="the dataset name in the records; default %(default)s")
    board.add_argument(
        "--output", help="folder for the records, one {dataset}_{model}_{task}.json each (clip_benchmark's naming)"
    )
    board.add_argument(
        "--cache-dir", default="runs/cache", help="image features cache ('' for none); default %(default)s"
    )
    board.add_argument("--schema", help=SCHEMA_HELP)
    board.add_argument("--no-published", action="store_true", help="leave the published rows out of the table")
    board.add_argument("--json", action="store_true", help="print the records as one JSON list instead of the table")
    board.add_argument("--no-progress", action="store_true", help="hide progress bars")

    composed = add_command(protocols, "composed", cmd_eval_composed)
    composed.add_argument("--data", required=True, help="catalog (triplets) or annotation folder (fashioniq, cirr)")
    composed.add_argument("--protocol", choices=["triplets", "fashioniq", "cirr"], default="triplets")
    composed.add_argument("--triplets", help="JSONL of {reference, modification, targets}")
    composed.add_argument("--gallery", nargs="*", help="more catalogs in the gallery")
    composed.add_argument("--images", help="fashioniq/cirr: image folder (default DATA/images)")
    composed.add_argument("--split", help="fashioniq: val; cirr: val or test1")
    composed.add_argument("--submission", help="cirr: write the test-server JSON files into this folder")
    composed.add_argument("--model", default=DEFAULT_MODEL, help="registry name; default %(default)s")
    add_runtime_option(composed, default="torch")
    composed.add_argument("--combiner", default="combiner",
        help="image | text | sum | combiner (shipped) | a combiner directory; default %(default)s")
    composed.add_argument("--cache-dir", default="runs/cache",
        help="where gallery features are cached; default %(default)s")
    composed.add_argument("--schema", help=SCHEMA_HELP)
    composed.add_argument("--on-error", choices=["skip", "fail"], default="skip")
    add_catalog_options(composed)
    add_report_output_options(composed)
    add_report_option(composed)
