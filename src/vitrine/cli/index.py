"""`vitrine index build|add|images|delete|stats|snapshot|restore` and `vitrine search`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vitrine.cli._common import (
    POOLINGS,
    REGION_VIEWS,
    add_catalog_options,
    add_command,
    add_options,
    add_runtime_option,
    catalog_schema,
    command_group,
    command_model,
    finish,
    parse_size,
    runtime_arg,
    runtime_fallback,
)
from vitrine.cli.basics import add_engine_arguments
from vitrine.constants import DEFAULT_SEARCH_MODE, DEFAULT_TAG_MODEL, SEARCH_MODES
from vitrine.errors import InvalidInput

INDEX_HELP = (
    "index: a directory (embedded FAISS + SQLite), milvus:FILE.db (Milvus Lite) or "
    "milvus:http://HOST:19530[#collection] (a Milvus server; token from $VITRINE_MILVUS_TOKEN)"
)


def cmd_index_build(args: argparse.Namespace) -> int:
    from vitrine.index.build import build_index

    given = {
        "exact_max": args.exact_max, "memory_budget": _parse_bytes(args.memory_budget), "approximate": args.approximate,
    }
    options = {name: value for name, value in given.items() if value is not None}  # the rest: as saved with the index

    def log_commit(products: int, position: int) -> None:
        print(f"committed: {products} products, catalog position {position}", file=sys.stderr, flush=True)

    if args.engine == "ray":
        from vitrine.cli.basics import ray_options
        from vitrine.index.build import build_index_ray

        if args.tag:
            raise InvalidInput(
                "--tag runs in-process for now; build with --engine ray, then tag with `vitrine tag`, "
                "or drop --engine ray"
            )
        if runtime_arg(args) != "torch":
            raise InvalidInput("--engine ray encodes with --runtime torch for now; drop --runtime, or --engine ray")
        result = build_index_ray(
            args.data, args.index, args.model, ray_options(args), batch_size=args.batch_size,
            commit_every=args.commit_every, on_error=args.on_error, schema=catalog_schema(args),
            progress=not args.no_progress, options=options, on_commit=log_commit if args.verbose else None,
        )
        return finish(built_line(result, " (ray)" + (f", {result.skipped} rows skipped" if result.skipped else "")))
    if args.address or args.workers:
        raise InvalidInput("--address and --workers go with --engine ray")
    model = command_model(args)
    tagger = None
    if args.tag:
        from vitrine.cli.tag import resolve_vocabulary
        from vitrine.data.schema import resolve_schema
        from vitrine.tagging.catalog_tags import SAVED_NAME, catalog_tagger
        from vitrine.tagging.views import make_views

        tag_name = args.tag_model or DEFAULT_TAG_MODEL
        tag_model = model if tag_name == args.model else command_model(args, tag_name)
        given = resolve_vocabulary(args.attributes, model=tag_name) if args.attributes else None
        saved = None if args.index.startswith("milvus:") else Path(args.index) / SAVED_NAME
        tagger, about = catalog_tagger(
            tag_model, args.data, resolve_schema(catalog_schema(args)), make_views(args.regions), args.pooling,
            vocabulary=given, progress=not args.no_progress, saved=saved,
        )
        print(about, file=sys.stderr)
    result = build_index(
        args.data, args.index, model, batch_size=args.batch_size, on_error=args.on_error, schema=catalog_schema(args),
        progress=not args.no_progress, options=options, commit_every=args.commit_every,
        on_commit=log_commit if args.verbose else None, tagger=tagger,
    )
    return finish(built_line(result, skipped_line(result)))


def built_line(result, tail: str) -> str:
    """What `index build|add` prints when done: products, those added and how fast, then `tail`."""
    return (
        f"{result.index}: {result.products} products; added {result.added} in {result.seconds:.1f}s "
        f"= {result.products_per_second:.1f} products/s{tail}"
    )


def skipped_line(result) -> str:
    """', 2 rows skipped (row 4, id 17: missing file; row 9: malformed row), all listed in DIR/skipped-rows.json'."""
    if not result.skipped:
        return ""
    from vitrine.index.build import SKIPPED_MANIFEST
    from vitrine.index.store import is_milvus

    where = "" if is_milvus(result.index) else f", all listed in {Path(result.index) / SKIPPED_MANIFEST}"
    return f", {result.skipped} rows skipped {result.skipped_rows}{where} (--on-error fail stops at the first)"


def _parse_bytes(text: str | None) -> int | None:
    """--memory-budget: '8G', '512M', '1073741824' -> bytes."""
    return None if text is None else parse_size(text, "a memory size")


def cmd_index_merge(args: argparse.Namespace) -> int:
    """fold the delta log into a new base vector file now

    Fold the delta log (the small commits appended since the last rewrite) into a new base vector file, as one atomic
    commit. Commits merge by themselves past a threshold; run this at quiet times.
    """
    from vitrine.disk import writing
    from vitrine.index.stores import open_store, writers_lock

    with writers_lock(args.index), writing(args.index):  # a writer like any other: never beside another commit
        store = open_store(args.index)
        try:
            if not hasattr(store, "merge"):
                print(f"error: {args.index} is a Milvus collection; Milvus compacts its own segments", file=sys.stderr)
                return 2
            merged = store.merge()
            stats = store.stats()
        finally:
            store.close()
    done = "merged the delta into" if merged else "nothing to merge:"
    return finish(
        f"{done} base generation {stats['base_generation']}: {stats['vectors']} vectors, {stats['index_kind']}"
    )


def cmd_index_stats(args: argparse.Namespace) -> int:
    """show an index's size, kind and model

    Show an index's size, kind and model.
    """
    from vitrine.index.stores import open_store

    store = open_store(args.index)
    stats = store.stats()
    store.close()
    print(json.dumps(stats, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in stats.items()))
    return 0


def cmd_index_images(args: argparse.Namespace) -> int:
    """store the catalog images of an index's products (rerun to resume)

    Store the catalog image of every product in the index that has none yet, so that the service's GET
    /products/{id}/image shows it (`serve --catalog` stores them as it indexes; `index build` does not). Rerun to
    resume. Milvus Lite allows one process per file: stop a service on it first.
    """
    from vitrine.serve.backfill import backfill_images

    result = backfill_images(
        args.data, args.index, images=args.images, schema=catalog_schema(args), on_error=args.on_error,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    for line in result.examples:
        print(f"  {line}", file=sys.stderr)
    return finish(
        f"{result.images}: stored {result.stored}, already there {result.present}, not in the index "
        f"{result.not_indexed}, failed {result.failed} in {result.seconds:.1f}s"
    )


def cmd_index_delete(args: argparse.Namespace) -> int:
    """remove products by id

    Remove products by id.
    """
    from vitrine.disk import writing
    from vitrine.index.store import images_dir
    from vitrine.index.stores import open_store, writers_lock
    from vitrine.serve.images import ImageStore

    with writers_lock(args.index):  # as the service's writers: opening removes other generations' vector files
        store = open_store(args.index)
    try:
        with writers_lock(args.index), writing(args.index):
            store.refresh()
            removed = store.delete(args.ids)
        folder = Path(args.images) if args.images else images_dir(args.index)
        if folder.is_dir():  # an index with no stored images gets no empty folder
            images = ImageStore(folder)
            # after the commit: a crash leaves at worst an image of no product, never the reverse
            for product_id in args.ids:
                if store.product(product_id) is None:
                    images.remove(product_id)
        left = store.stats()["products"]
    finally:
        store.close()
    return finish(f"deleted {removed} of {len(args.ids)} ids; {left} products left")


def cmd_index_snapshot(args: argparse.Namespace) -> int:
    """write a consistent copy of a live index to one tar file

    Copy an embedded index (vector files, SQLite metadata through its online backup API, stored images, every other file
    but the lock and temp files) as of one commit, while `vitrine serve` keeps serving and writing: writers wait only
    while the files are copied, not while the tar is written. --out gets a manifest (generation, products, model, each
    file's size and sha256) and appears only once whole. Milvus: use milvus-backup.
    """
    from vitrine.index.snapshot import snapshot_index

    result = snapshot_index(args.index, args.out, progress=not args.no_progress)
    return finish(
        f"{result.path}: generation {result.generation}, {result.products} products, {result.files} files, "
        f"{result.bytes / 2**20:.1f} MiB in {result.seconds:.1f}s (writers waited {result.locked_seconds:.2f}s)"
    )


def cmd_index_restore(args: argparse.Namespace) -> int:
    """bring back an index from a snapshot file

    Extract a snapshot beside --index, check every file against its manifest and the store's generation and product
    count, then put it in place. --index must be new or empty unless --force (stop any service using it first).
    """
    from vitrine.index.snapshot import restore_index

    result = restore_index(args.snapshot, args.index, force=args.force, progress=not args.no_progress)
    return finish(
        f"{result.index}: generation {result.generation}, {result.products} products, {result.files} files checked "
        f"against the manifest, restored in {result.seconds:.1f}s"
    )


def cmd_search(args: argparse.Namespace) -> int:
    """search an index by text or image

    Search an index by text or by image, optionally filtered by attributes.
    """
    from vitrine.data.images import load_image
    from vitrine.index.build import index_schema
    from vitrine.search import Query, SearchEngine, parse_filters
    from vitrine.search.answer import answer

    image = load_image(args.image, what="query image") if args.image else None
    query = Query(
        text=args.text, image=image, modification=args.modify, k=args.k, filters=parse_filters(args.filter or []),
        mode=args.mode, soft_filters=not args.no_soft_filters, min_score=args.min_score, offset=args.offset,
        exclude_reference=not args.keep_reference,
    )
    engine = SearchEngine(
        args.index, model=args.model, runtime=runtime_arg(args), fallback=runtime_fallback(args), combiner=args.combiner
    )
    try:
        ranked = engine.rank(query)
        schema = index_schema(engine.store)
    finally:
        engine.close()
    if args.json:  # the same answer as POST /search
        print(json.dumps(answer(query, ranked)))
        return 0
    hits = ranked.hits
    shown = (
        list(schema.facet_fields)[:3] if schema else sorted({n for h in hits for n in h.metadata} - {"id", "title"})[:3]
    )
    keys = [k for k in shown if any(k in h.metadata for h in hits)]
    print(f"{'rank':>4}  {'score':>6}  {'id':<10} {'title':<50} " + "  ".join(keys))
    for rank, hit in enumerate(hits, args.offset + 1):
        title = (hit.metadata.get("title") or "")[:50]
        print(
            f"{rank:>4}  {hit.score:6.3f}  {hit.id:<10} {title:<50} "
            + "  ".join(str(hit.metadata.get(k, "")) for k in keys)
        )
    if not hits:
        print("no results" + (" match the filters" if query.filters else ""))
    elif (ranked.relevance or {}).get("close_match") is False:
        print("no close match: nothing in the catalog is much like this query (the nearest products are above)")
    if ranked.excluded:
        print(f"left out: {', '.join(ranked.excluded)} (the query image's own product)")
    return 0


def add_build_options(action: argparse.ArgumentParser) -> None:
    """`index build` and `index add`: what to embed, with which model, into which index, and how it is laid out."""
    add_options(action, data=True)
    action.add_argument("--index", required=True, help=INDEX_HELP + " (created if missing)")
    add_options(
        action,
        model="registry name; an existing index only accepts its own model; default %(default)s",
        batch_size=True,
        schema=True,
        on_error=True,
        no_progress="hide the progress bar",
    )
    action.add_argument(
        "--exact-max",
        type=int,
        help="exact search up to this many products, approximate above (default 100000, then as saved)",
    )
    action.add_argument(
        "--memory-budget",
        help="memory for the vector index, e.g. 8G (default: half the RAM); picks HNSW or, when tight, IVF-PQ",
    )
    action.add_argument(
        "--approximate",
        choices=["auto", "hnsw", "ivfpq"],
        help="approximate index kind above --exact-max (default auto, then as saved)",
    )
    action.add_argument(
        "--commit-every",
        type=int,
        default=4096,
        help="products per commit at least (a crash loses at most one commit); default %(default)s",
    )
    action.add_argument("-v", "--verbose", action="store_true", help="print a line per commit")
    action.add_argument(
        "--tag",
        action="store_true",
        help="store predicted tags with each product (predicted_<attr>, and <attr> "
        "itself where the catalog has no value), so filters find untagged products",
    )
    action.add_argument(
        "--attributes",
        help="with --tag: vocabulary YAML/JSON or comma list of shipped attributes (default: for a KAGL catalog the "
        "shipped KAGL vocabulary; for any other, the catalog's own categorical columns and "
        "values, thresholds fitted on its labelled rows for 0.8 precision)",
    )
    action.add_argument("--tag-model", help=f"with --tag: the tagging model (default {DEFAULT_TAG_MODEL})")
    action.add_argument(
        "--regions", choices=REGION_VIEWS, default="foreground", help="with --tag: region views (default %(default)s)"
    )
    action.add_argument(
        "--pooling", choices=POOLINGS, default="blend", help="with --tag: region score pooling (default %(default)s)"
    )
    add_catalog_options(action)
    add_runtime_option(action)
    add_engine_arguments(action)


def register(sub) -> None:
    actions = command_group(
        sub, "index", "build and update a searchable catalog index",
        "Catalog index: a directory (FAISS + SQLite, embedded) or milvus:FILE.db (Milvus Lite) | milvus:URI (a Milvus "
        "server).",
    )
    for name, text in (
        ("build", "embed a catalog into an index (rerun to resume after a crash)"),
        ("add", "add or update the products of a catalog"),
    ):
        add_build_options(add_command(actions, name, cmd_index_build, help=text, description=text))
    images = add_command(actions, "images", cmd_index_images)
    add_options(images, data="catalog the index was built from (any format vitrine reads)")
    images.add_argument("--index", required=True, help=INDEX_HELP + " (must exist)")
    images.add_argument(
        "--images",
        help="images directory (default: the one `vitrine serve` uses for the index; give the same "
        "shared storage as `vitrine serve --images`)",
    )
    add_options(images, schema=True, on_error=True)
    images.add_argument("--overwrite", action="store_true", help="store images again even where one is already stored")
    add_options(images, no_progress="hide the progress bar")
    add_catalog_options(images)
    stats = add_command(actions, "stats", cmd_index_stats)
    stats.add_argument("--index", required=True, help=INDEX_HELP)
    add_options(stats, json=True)
    merge = add_command(actions, "merge", cmd_index_merge)
    merge.add_argument("--index", required=True, help=INDEX_HELP + " (must exist)")
    delete = add_command(actions, "delete", cmd_index_delete)
    delete.add_argument("--index", required=True, help=INDEX_HELP)
    delete.add_argument("ids", nargs="+", help="product ids")
    delete.add_argument(
        "--images",
        help="images directory whose stored images of the deleted products are removed too "
        "(default: the one `vitrine serve` uses for the index)",
    )
    snapshot = add_command(actions, "snapshot", cmd_index_snapshot)
    snapshot.add_argument("--index", required=True, help="index directory")
    snapshot.add_argument("--out", required=True, help="snapshot file: .tar, or .tar.gz / .tgz (gzip)")
    add_options(snapshot, no_progress="hide the progress bar")
    restore = add_command(actions, "restore", cmd_index_restore)
    restore.add_argument("--snapshot", required=True, help="a file written by `vitrine index snapshot`")
    restore.add_argument("--index", required=True, help="index directory to restore into")
    restore.add_argument("--force", action="store_true", help="replace what --index holds")
    add_options(restore, no_progress="hide the progress bar")
    register_search(sub)


def register_search(sub) -> None:
    search = add_command(sub, "search", cmd_search)
    search.add_argument("--index", required=True, help=INDEX_HELP)
    search.add_argument("--text", help="text query")
    search.add_argument("--image", help="query image file (any common format)")
    search.add_argument(
        "--modify", help='with --image: what should change, e.g. "in black" or "for women" (composed search)'
    )
    search.add_argument("--combiner", default="combiner",
        help="with --modify: sum | combiner (shipped) | a combiner directory; default %(default)s")
    search.add_argument("--filter", action="append",
        help="field=value; repeat for more (same field: any of the values)")
    search.add_argument("-k", type=int, default=10, help="number of results; default %(default)s")
    search.add_argument("--offset", type=int, default=0, help="skip this many hits first (paging); default 0")
    search.add_argument(
        "--mode", choices=SEARCH_MODES, default=DEFAULT_SEARCH_MODE,
        help="hybrid (default): vector and BM25 fused (vector alone on a Milvus server before 2.5); vector: cosine "
        "only; lexical: BM25 only",
    )
    search.add_argument(
        "--no-soft-filters",
        action="store_true",
        help='do not boost products whose values the query names ("women", "red")',
    )
    search.add_argument("--min-score", type=float, help="leave out hits whose cosine to the query is lower")
    search.add_argument(
        "--keep-reference",
        action="store_true",
        help="with --image: keep the product the image shows in the results (left out by default, as the service does)",
    )
    search.add_argument("--model", help="model name; must be the one that built the index (default: that one)")
    add_options(search, json="print results as JSON")
    add_runtime_option(search)
