"""`vitrine ...`: thin subcommands that parse arguments and call the library."""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # vitrine never downloads at run time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_MODEL = "vitrine:kagl-small"  # kept equal to vitrine.models.DEFAULT_MODEL without importing torch for --help


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def cmd_models(args: argparse.Namespace) -> int:
    from vitrine.models import backend_entries, model_entries

    if args.json:
        print(json.dumps({"models": [{"name": f"vitrine:{e.name}", "description": e.description} for e in model_entries()],
                          "backends": [{"pattern": e.pattern, "description": e.description} for e in backend_entries()]}, indent=2))
        return 0
    rows = [(f"vitrine:{e.name}", e.description) for e in model_entries()] + [(e.pattern, e.description) for e in backend_entries()]
    width = max(len(name) for name, _ in rows)
    print(f"{'NAME'.ljust(width)}  DESCRIPTION")
    for name, description in rows:
        print(f"{name.ljust(width)}  {description}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from vitrine.embed import run_embed

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_embed(
        data=args.data, model=args.model, out=args.out, batch_size=args.batch_size, part_size=args.part_size,
        texts=args.texts, on_error=args.on_error, schema=args.schema, limit=args.limit, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    resumed = result.count - result.computed
    print(f"wrote {result.count} embeddings ({result.embed_dim}-d) to {result.out}: computed {result.computed} in "
          f"{result.seconds:.1f}s = {result.images_per_second:.1f} images/s"
          + (f", {resumed} kept from an earlier run" if resumed else "")
          + (f", {result.skipped} rows skipped (see manifest.json)" if result.skipped else ""), file=sys.stderr)
    return 0


def cmd_train_clip(args: argparse.Namespace) -> int:
    from vitrine.train.clip import train_clip
    from vitrine.train.config import TrainConfig

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    overrides = {key: value for key, value in (("out", args.out), ("epochs", args.epochs), ("max_steps", args.max_steps),
                                                ("device", args.device), ("threads", args.threads)) if value is not None}
    if args.data:
        overrides["sources"] = [{"path": path, "weight": 1.0} for path in args.data]
    config = config.replace(**overrides) if overrides else config
    result = train_clip(config, progress=not args.no_progress)
    print(json.dumps({"model_dir": result.model_dir, "steps": result.steps, "seconds": result.seconds,
                      "final_loss": round(result.final_loss, 4), **result.metrics}, indent=2))
    return 0


def cmd_train_cir(args: argparse.Namespace) -> int:
    from vitrine.cir.config import CirTrainConfig
    from vitrine.cir.train import train_cir

    config = CirTrainConfig.from_file(args.config) if args.config else CirTrainConfig()
    given = {"stage": args.stage, "out": args.out, "epochs": args.epochs, "max_steps": args.max_steps, "model": args.model,
             "triplets": args.triplets, "val_triplets": args.val_triplets, "start": args.start, "threads": args.threads}
    overrides = {k: v for k, v in given.items() if v is not None}
    if args.data:
        overrides["data"] = args.data
    if args.no_cache:
        overrides["cached_features"] = False
    config = config.replace(**overrides) if overrides else config
    result = train_cir(config, progress=not args.no_progress)
    print(json.dumps({"out": result.out, "combiner": f"{result.out}/combiner", "steps": result.steps, "seconds": result.seconds,
                      "seconds_per_epoch": result.seconds_per_epoch, "val": result.val}, indent=2))
    return 0


def cmd_data_make_triplets(args: argparse.Namespace) -> int:
    from vitrine.cir.triplets import make_kagl_triplets, split_of, write_triplets
    from vitrine.data.catalog import open_catalog
    from vitrine.evaluate.runner import load_split_config

    reader = open_catalog(args.data, schema=args.schema, on_error="skip", require_title=False)
    items = list(reader.records())
    triplets = make_kagl_triplets(items, seed=args.seed, kinds=args.kinds)
    if args.split != "all":
        split = load_split_config(args.split_config)
        attributes = {item.id: item.attributes for item in items}
        triplets = [t for t in triplets if split_of(t.reference, attributes[t.reference], split) == args.split]
    count = write_triplets(args.out, triplets)
    kinds = {kind: sum(t.kind == kind for t in triplets) for kind in args.kinds}
    print(f"wrote {count} triplets to {args.out} ({', '.join(f'{n} {k}' for k, n in kinds.items())}; "
          f"{len({t.reference for t in triplets})} reference products; split {args.split})", file=sys.stderr)
    return 0


def cmd_eval_composed(args: argparse.Namespace) -> int:
    from vitrine.cir.compose import Composer
    from vitrine.models import create_model

    model = create_model(args.model)
    composer = Composer(model, args.combiner)
    if args.protocol == "triplets":
        from vitrine.cir.evaluate import evaluate_triplets
        from vitrine.cir.features import image_bank
        from vitrine.cir.triplets import read_triplets

        if not args.triplets:
            raise ValueError("--triplets FILE is needed (or --protocol fashioniq|cirr)")
        bank = image_bank(model, [args.data, *(args.gallery or [])], cache_dir=args.cache_dir, schema=args.schema,
                          on_error=args.on_error, progress=not args.no_progress)
        report = {**evaluate_triplets(composer, bank, read_triplets(args.triplets)), "model": model.name, "combiner": args.combiner}
    elif args.protocol == "fashioniq":
        from vitrine.cir.protocols import evaluate_fashioniq

        report = evaluate_fashioniq(composer, args.data, args.images or f"{args.data}/images", split=args.split or "val", progress=not args.no_progress)
    else:
        from vitrine.cir.protocols import evaluate_cirr

        report = evaluate_cirr(composer, args.data, args.images or f"{args.data}/images", split=args.split or "val",
                               submission=args.submission, progress=not args.no_progress)
    _print_report(report, args.json)
    return 0


def _seen_classes(path: str | None, field: str) -> list[str]:
    if not path:
        return []
    data = json.loads(open(path, encoding="utf-8").read())
    if isinstance(data, dict):
        data = data.get("seen_classes", data).get(field, [])
    return list(data)


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if isinstance(value, dict) and key == "per_class":
            continue
        if isinstance(value, dict):
            print(f"{key}:")
            for inner, inner_value in value.items():
                print(f"  {inner:<14}{inner_value}")
        else:
            print(f"{key:<16}{value}")


def cmd_eval_zero_shot(args: argparse.Namespace) -> int:
    from vitrine.evaluate.runner import load_split_config, run_zero_shot
    from vitrine.models import create_model

    report = run_zero_shot(
        data=args.data, field=args.field, model=create_model(args.model), classes_from=args.classes_from or (),
        templates=args.templates, split=args.split, split_config=load_split_config(args.split_config), schema=args.schema,
        on_error=args.on_error, ensemble=not args.single_template, seen_classes=_seen_classes(args.seen_classes, args.field),
        calibration=args.calibration, progress=not args.no_progress,
    )
    _print_report(report, args.json)
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from vitrine.evaluate.runner import load_split_config, run_retrieval
    from vitrine.models import create_model

    report = run_retrieval(
        data=args.data, model=create_model(args.model), galleries=args.gallery or (), split=args.split,
        split_config=load_split_config(args.split_config), schema=args.schema, on_error=args.on_error,
        image_to_text=not args.no_image_to_text, progress=not args.no_progress,
    )
    _print_report(report, args.json)
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from vitrine.index.build import build_index
    from vitrine.models import create_model

    given = {"exact_max": args.exact_max, "memory_budget": _parse_bytes(args.memory_budget), "approximate": args.approximate}
    options = {name: value for name, value in given.items() if value is not None}  # the rest: as saved with the index

    def log_commit(products: int, position: int) -> None:
        print(f"committed: {products} products, catalog position {position}", file=sys.stderr, flush=True)

    result = build_index(args.data, args.index, create_model(args.model), batch_size=args.batch_size, on_error=args.on_error,
                         schema=args.schema, progress=not args.no_progress, options=options, commit_every=args.commit_every,
                         on_commit=log_commit if args.verbose else None)
    print(f"{result.index}: {result.products} products; added {result.added} in {result.seconds:.1f}s "
          f"= {result.products_per_second:.1f} products/s" + (f", {result.skipped} rows skipped" if result.skipped else ""), file=sys.stderr)
    return 0


def _parse_bytes(text: str | None) -> int | None:
    """'8G', '512M', '1073741824' -> bytes."""
    if text is None:
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        value = float(clean[:-1]) * units[clean[-1]] if clean and clean[-1] in units else float(clean)
    except ValueError:
        raise ValueError(f"a memory size looks like 8G, 512M or a number of bytes, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return int(value)


def cmd_index_stats(args: argparse.Namespace) -> int:
    from vitrine.index.faiss_store import FaissStore

    store = FaissStore.open(args.index)
    stats = store.stats()
    store.close()
    print(json.dumps(stats, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in stats.items()))
    return 0


def cmd_index_delete(args: argparse.Namespace) -> int:
    from vitrine.index.faiss_store import FaissStore

    store = FaissStore.open(args.index)
    removed = store.delete(args.ids)
    print(f"deleted {removed} of {len(args.ids)} ids; {store.stats()['products']} products left", file=sys.stderr)
    store.close()
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from vitrine.search import SearchEngine, parse_filters

    if bool(args.text) == bool(args.image):
        raise ValueError("give exactly one of --text or --image")
    if args.modify is not None and not args.image:
        raise ValueError("--modify changes an image query: give --image too")
    filters = parse_filters(args.filter or [])
    engine = SearchEngine(args.index, model=args.model)
    if args.modify is not None:
        hits = engine.composed(args.image, args.modify, args.k, filters, combiner=args.combiner)
    else:
        hits = engine.text(args.text, args.k, filters) if args.text else engine.image(args.image, args.k, filters)
    engine.close()
    if args.json:
        print(json.dumps([{"rank": r, "score": round(h.score, 4), **h.metadata} for r, h in enumerate(hits, 1)]))
        return 0
    keys = [k for k in ("articleType", "baseColour", "gender") if any(k in h.metadata for h in hits)]
    print(f"{'rank':>4}  {'score':>6}  {'id':<10} {'title':<50} " + "  ".join(keys))
    for rank, hit in enumerate(hits, 1):
        title = (hit.metadata.get("title") or "")[:50]
        print(f"{rank:>4}  {hit.score:6.3f}  {hit.id:<10} {title:<50} " + "  ".join(str(hit.metadata.get(k, "")) for k in keys))
    if not hits:
        print("no results" + (" match the filters" if filters else ""))
    return 0


def _eval_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="catalog to evaluate (any format vitrine reads)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registry name; default %(default)s")
    parser.add_argument("--split", default="all", choices=["all", "train", "val", "unseen", "heldout"],
                        help="evaluate only this split of --data (heldout = val + unseen); default %(default)s")
    parser.add_argument("--split-config", help="JSON holding the split (a training config or a model's training.json); default: vitrine's default split")
    parser.add_argument("--schema", help="catalog schema name or JSON file (default: kagl)")
    parser.add_argument("--on-error", choices=["skip", "fail"], default="skip", help="bad rows: skip and report (default) or fail")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitrine", description="Open fashion vision-language toolkit.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="list registered models and model backends", description="List the model registry.")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(func=cmd_models)

    embed = sub.add_parser(
        "embed", help="embed a catalog's images (and titles) to .npy + metadata.csv",
        description="Embed every product of a catalog. Output: image_embeddings.npy (float32, one L2-normalised row "
                    "per product), text_embeddings.npy with --texts, metadata.csv in the same order, manifest.json. "
                    "Interrupted runs resume from the last completed part when rerun with the same arguments.",
    )
    embed.add_argument("--data", required=True, help="catalog: WebDataset shards (dir, glob, or brace range like kagl-{000000..000008}.tar) or a folder with images/ and catalog.csv|catalog.jsonl")
    embed.add_argument("--model", default=DEFAULT_MODEL, help="registry name (see `vitrine models`); default %(default)s")
    embed.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    embed.add_argument("--batch-size", type=int, default=64, help="images per forward pass; default %(default)s")
    embed.add_argument("--part-size", type=int, default=4096, help="rows per committed part, the resume granularity; default %(default)s")
    embed.add_argument("--texts", action="store_true", help="also embed titles into text_embeddings.npy")
    embed.add_argument("--on-error", choices=["skip", "fail"], default="fail", help="bad rows: stop with an error naming the row (fail, default) or report and skip them (skip)")
    embed.add_argument("--schema", default=None, help="catalog schema: builtin name or JSON file (default: kagl)")
    embed.add_argument("--limit", type=int, default=None, help="embed only the first N rows")
    embed.add_argument("--overwrite", action="store_true", help="discard earlier output in --out instead of resuming")
    embed.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    embed.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    embed.set_defaults(func=cmd_embed)

    train = sub.add_parser("train", help="train models (recipes: clip, cir)", description="Training recipes.")
    recipes = train.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    clip = recipes.add_parser(
        "clip", help="contrastive image-text training (OpenFashionCLIP recipe)",
        description="Train a vitrine dual encoder contrastively. The config (JSON) is saved next to the checkpoint; "
                    "rerunning the same command resumes from the last checkpoint. The trained model is written to OUT/model.",
    )
    clip.add_argument("--config", help="training config JSON (e.g. configs/kagl-small.json); default: built-in defaults")
    clip.add_argument("--data", nargs="*", help="override the config's sources with these catalogs (weight 1 each)")
    clip.add_argument("--out", help="run directory (checkpoint, metrics.csv, tb/, model/)")
    clip.add_argument("--epochs", type=int, help="override the number of epochs (also sets the schedule length)")
    clip.add_argument("--max-steps", type=int, help="stop after this many steps (the schedule still follows --epochs)")
    clip.add_argument("--device", help="cpu or cuda")
    clip.add_argument("--threads", type=int, help="torch CPU threads")
    clip.add_argument("--no-progress", action="store_true", help="hide progress bars")
    clip.set_defaults(func=cmd_train_clip)
    cir = recipes.add_parser(
        "cir", help="composed image retrieval, CLIP4Cir's two stages",
        description="Stage 1 fine-tunes the text projection with the sum combination; stage 2 trains the Combiner on cached "
                    "features. Rerunning the same command resumes. Writes OUT/combiner (use it with --combiner).",
    )
    cir.add_argument("--config", help="CIR config JSON (e.g. configs/cir-kagl-stage2.json); default: built-in defaults")
    cir.add_argument("--stage", type=int, choices=[1, 2], help="1: text projection + sum; 2: Combiner")
    cir.add_argument("--data", nargs="*", help="catalogs holding the triplets' products")
    cir.add_argument("--triplets", help="training triplets (JSONL)")
    cir.add_argument("--val-triplets", help="validation triplets (JSONL)")
    cir.add_argument("--model", help="encoder (registry name)")
    cir.add_argument("--start", help="stage 2: the stage-1 combiner directory whose text projection to build on")
    cir.add_argument("--out", help="run directory")
    cir.add_argument("--epochs", type=int)
    cir.add_argument("--max-steps", type=int)
    cir.add_argument("--threads", type=int)
    cir.add_argument("--no-cache", action="store_true", help="recompute image features every step (slow; for comparison)")
    cir.add_argument("--no-progress", action="store_true", help="hide progress bars")
    cir.set_defaults(func=cmd_train_cir)

    data = sub.add_parser("data", help="dataset tools (make-triplets)", description="Dataset tools.")
    data_actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    triplets = data_actions.add_parser(
        "make-triplets", help="composed-retrieval triplets from KAGL-style colourways and gender swaps",
        description="Pairs of products whose titles differ only in colour (or gender) words become triplets "
                    "{reference, modification, targets}; the targets are every product of the pair's group with the target value.",
    )
    triplets.add_argument("--data", required=True, help="catalog with titles, baseColour, gender and articleType")
    triplets.add_argument("--out", required=True, help="output JSONL file")
    triplets.add_argument("--split", choices=["all", "train", "val"], default="all",
                          help="keep triplets whose reference is in the encoder's training split (train) or held out from it (val); default %(default)s")
    triplets.add_argument("--split-config", help="JSON holding the split (default: the shipped model's)")
    triplets.add_argument("--kinds", nargs="+", choices=["colour", "gender"], default=["colour", "gender"])
    triplets.add_argument("--seed", type=int, default=0, help="template choice seed")
    triplets.add_argument("--schema", help="catalog schema name or JSON file (default: kagl)")
    triplets.set_defaults(func=cmd_data_make_triplets)

    evaluate = sub.add_parser("eval", help="evaluation protocols (zero-shot, retrieval, composed)", description="Evaluation protocols.")
    protocols = evaluate.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    zero_shot = protocols.add_parser(
        "zero-shot", help="classify items among class names from prompts",
        description="Zero-shot classification: each item of --data is classified among the class names found in --data "
                    "and every --classes-from catalog, with prompt ensembling. Empty and NA values are skipped.",
    )
    _eval_common(zero_shot)
    zero_shot.add_argument("--field", required=True, help="attribute to classify, e.g. articleType")
    zero_shot.add_argument("--classes-from", nargs="*", help="more catalogs whose values of --field join the class list")
    zero_shot.add_argument("--templates", help="prompt set: builtin name or JSON file (default: kagl)")
    zero_shot.add_argument("--single-template", action="store_true", help="use only each attribute's first template (no ensembling)")
    zero_shot.add_argument("--seen-classes", help="JSON list, or a model's training.json, of classes seen in training (for --calibration)")
    zero_shot.add_argument("--calibration", default="auto",
                           help="calibrated stacking margin subtracted from seen classes' scores: 'auto' (default) uses the margin and "
                                "seen classes the model was trained with, if it has them; 0 turns it off")
    zero_shot.set_defaults(func=cmd_eval_zero_shot)
    retrieval = protocols.add_parser(
        "retrieval", help="title -> image (and image -> title) retrieval of exact products",
        description="Queries are the titles of --data items; the gallery is their images plus every --gallery catalog "
                    "(distractors, ids deduplicated). Output: n_queries, gallery_size, R@1, R@5, R@10, MRR, and image_to_text.",
    )
    _eval_common(retrieval)
    retrieval.add_argument("--gallery", nargs="*", help="distractor catalogs added to the gallery")
    retrieval.add_argument("--no-image-to-text", action="store_true", help="skip the image -> title direction")
    retrieval.set_defaults(func=cmd_eval_retrieval)

    composed = protocols.add_parser(
        "composed", help="composed retrieval: triplet files, FashionIQ or CIRR",
        description="Composed image retrieval. With --triplets: R@1/10/50 over the gallery, the reference removed from its own ranking. "
                    "--protocol fashioniq|cirr reads the official annotation folder given as --data.",
    )
    composed.add_argument("--data", required=True, help="catalog (triplets) or annotation folder (fashioniq, cirr)")
    composed.add_argument("--protocol", choices=["triplets", "fashioniq", "cirr"], default="triplets")
    composed.add_argument("--triplets", help="JSONL of {reference, modification, targets}")
    composed.add_argument("--gallery", nargs="*", help="more catalogs in the gallery")
    composed.add_argument("--images", help="fashioniq/cirr: image folder (default DATA/images)")
    composed.add_argument("--split", help="fashioniq: val; cirr: val or test1")
    composed.add_argument("--submission", help="cirr: write the test-server JSON files into this folder")
    composed.add_argument("--model", default=DEFAULT_MODEL, help="registry name; default %(default)s")
    composed.add_argument("--combiner", default="combiner", help="image | text | sum | combiner (shipped) | a combiner directory; default %(default)s")
    composed.add_argument("--cache-dir", default="runs/cache", help="where gallery features are cached; default %(default)s")
    composed.add_argument("--schema", help="catalog schema name or JSON file (default: kagl)")
    composed.add_argument("--on-error", choices=["skip", "fail"], default="skip")
    composed.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    composed.add_argument("--no-progress", action="store_true", help="hide progress bars")
    composed.set_defaults(func=cmd_eval_composed)

    index = sub.add_parser("index", help="build and update a searchable catalog index", description="Catalog index (FAISS + SQLite, embedded).")
    actions = index.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("build", "embed a catalog into an index (rerun to resume after a crash)"), ("add", "add or update the products of a catalog")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--data", required=True, help="catalog (any format vitrine reads)")
        action.add_argument("--index", required=True, help="index directory (created if missing)")
        action.add_argument("--model", default=DEFAULT_MODEL, help="registry name; an existing index only accepts its own model; default %(default)s")
        action.add_argument("--batch-size", type=int, default=64, help="images per forward pass; default %(default)s")
        action.add_argument("--schema", help="catalog schema name or JSON file (default: kagl)")
        action.add_argument("--on-error", choices=["skip", "fail"], default="skip", help="bad rows: skip and report (default) or fail")
        action.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        action.add_argument("--exact-max", type=int, help="exact search up to this many products, approximate above (default 100000, then as saved)")
        action.add_argument("--memory-budget", help="memory for the vector index, e.g. 8G (default: half the RAM); picks HNSW or, when tight, IVF-PQ")
        action.add_argument("--approximate", choices=["auto", "hnsw", "ivfpq"], help="approximate index kind above --exact-max (default auto, then as saved)")
        action.add_argument("--commit-every", type=int, default=4096, help="products per commit at least (a crash loses at most one commit); default %(default)s")
        action.add_argument("-v", "--verbose", action="store_true", help="print a line per commit")
        action.set_defaults(func=cmd_index_build)
    stats = actions.add_parser("stats", help="show an index's size, kind and model", description="Show an index's size, kind and model.")
    stats.add_argument("--index", required=True, help="index directory")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=cmd_index_stats)
    delete = actions.add_parser("delete", help="remove products by id", description="Remove products by id.")
    delete.add_argument("--index", required=True, help="index directory")
    delete.add_argument("ids", nargs="+", help="product ids")
    delete.set_defaults(func=cmd_index_delete)

    search = sub.add_parser("search", help="search an index by text or image", description="Search an index by text or by image, optionally filtered by attributes.")
    search.add_argument("--index", required=True, help="index directory")
    search.add_argument("--text", help="text query")
    search.add_argument("--image", help="query image file (any common format)")
    search.add_argument("--modify", help='with --image: what should change, e.g. "in black" or "for women" (composed search)')
    search.add_argument("--combiner", default="combiner", help="with --modify: sum | combiner (shipped) | a combiner directory; default %(default)s")
    search.add_argument("--filter", action="append", help="field=value; repeat for more (same field: any of the values)")
    search.add_argument("-k", type=int, default=10, help="number of results; default %(default)s")
    search.add_argument("--model", help="model name; must be the one that built the index (default: that one)")
    search.add_argument("--json", action="store_true", help="print results as JSON")
    search.set_defaults(func=cmd_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_transformers()
    from vitrine.data.errors import DataError

    try:
        return args.func(args)
    except DataError as exc:
        hint = "\n(use --on-error skip to report and skip bad rows)" if getattr(args, "on_error", None) == "fail" else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    except (FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
