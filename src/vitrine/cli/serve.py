"""`vitrine serve`: index a catalog if needed and serve the HTTP API and web UI."""

from __future__ import annotations

import argparse
import os
import sys

from vitrine.cli._common import SCHEMA_HELP, add_catalog_options, add_command, add_runtime_option, catalog_schema
from vitrine.constants import DEFAULT_MODEL, SEARCH_MODES
from vitrine.errors import InvalidInput, MissingFile


def cmd_serve(args: argparse.Namespace) -> int:
    """serve the search API and web UI (indexing --catalog first if needed)

    Serve search, composed search, tagging and product endpoints (OpenAPI at /docs) and the web UI at /. With --catalog,
    the catalog is indexed first (resumable; only new products on later starts).
    """
    from vitrine.index.stores import store_exists
    from vitrine.serve.prepare import default_index_dir, prepare_index
    from vitrine.serve.settings import SETTINGS_ENV, load_settings

    if not args.catalog and not args.index and not args.config:
        raise InvalidInput("give --catalog PATH (indexed on first start) or --index DIR (an existing vitrine index)")
    index = args.index or (default_index_dir(args.catalog) if args.catalog else None)
    settings = load_settings(
        args.config,
        index=index,
        model=args.model,
        tag_model=args.tag_model,
        write_token=args.write_token,
        read_token=args.read_token,
        workers=args.workers,
        images=args.images,
        threads=args.threads,
        combiner=args.combiner,
        runtime=args.runtime,
        max_k=args.max_k,
        max_batch=args.max_batch,
        batch_wait_us=args.batch_wait_us,
        search_mode=args.search_mode,
        relevance=args.relevance,
        max_upload_bytes=args.max_upload_mb and int(args.max_upload_mb * 2**20),
    )
    if args.catalog:
        result = prepare_index(
            args.catalog, settings, settings.model or DEFAULT_MODEL, schema=catalog_schema(args),
            progress=not args.no_progress,
        )
        print(
            f"index {settings.index}: {result.products} products ({result.added} added now in {result.seconds:.1f}s)",
            file=sys.stderr,
        )
    elif not store_exists(settings.index):
        raise MissingFile(f"no vitrine index in {settings.index}; give --catalog to build one")
    from vitrine.serve.server import serve_forever

    os.environ[SETTINGS_ENV] = settings.to_json()  # the workers read their settings from here
    writes = "writes need the bearer token" if settings.write_token else "writes disabled (no write token)"
    print(
        f"serving {settings.index} on http://{args.host}:{args.port}/ with {settings.workers} worker(s); {writes}; "
        f"API docs at /docs",
        file=sys.stderr,
        flush=True,
    )
    return 0 if serve_forever(args.host, args.port, settings.workers, args.log_level, args.access_log) else 1


def _workers(value: str) -> int | str:
    if value.strip().lower() == "auto":
        return "auto"
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of workers or auto, got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"workers must be >= 1, got {count}")
    return count


def register(sub) -> None:
    parser = add_command(sub, "serve", cmd_serve)
    parser.add_argument(
        "--catalog", help="catalog to serve: folder of images + catalog.csv/jsonl, or WebDataset shards"
    )
    parser.add_argument(
        "--index",
        help="index directory (default with --catalog: runs/serve/<catalog folder name>), or milvus:FILE.db "
        "(Milvus Lite, one worker) | milvus:http://HOST:19530[#collection] (a Milvus server shared by "
        "every worker and machine; token from $VITRINE_MILVUS_TOKEN)",
    )
    parser.add_argument(
        "--images",
        help="where product images are kept (default: inside the index directory, beside a Milvus "
        "Lite file; give shared storage when several machines serve one Milvus server)",
    )
    parser.add_argument("--config", help="JSON file of serve settings (see vitrine.serve.settings.ServeSettings)")
    parser.add_argument(
        "--model", help=f"model to index with (default {DEFAULT_MODEL}; an existing index keeps its own)"
    )
    parser.add_argument("--tag-model", help="model for predicted tags (default: vitrine's default tagging model)")
    add_runtime_option(parser)
    parser.add_argument(
        "--combiner", help="composed search: sum | combiner (shipped) | a combiner directory; default combiner"
    )
    parser.add_argument("--schema", help=SCHEMA_HELP)
    add_catalog_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; default %(default)s")
    parser.add_argument("--port", type=int, default=8000, help="port; default %(default)s")
    parser.add_argument("--workers", type=_workers, help="worker processes, or auto: one per core (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        help="intra-op threads per worker, torch or ONNX Runtime (default 1: concurrent requests use the other cores)",
    )
    parser.add_argument(
        "--write-token",
        help="bearer token for POST/DELETE /products (default: $VITRINE_WRITE_TOKEN; unset = writes disabled)",
    )
    parser.add_argument(
        "--read-token", help="also require a bearer token for reads (default: $VITRINE_READ_TOKEN; unset = open reads)"
    )
    parser.add_argument("--max-k", type=int, help="largest k a search may ask for (default 100)")
    parser.add_argument("--max-upload-mb", type=float, help="largest image upload in MiB (default 10)")
    parser.add_argument(
        "--max-batch", type=int, help="concurrent queries encoded in one forward pass, at most (default 32)"
    )
    parser.add_argument(
        "--batch-wait-us",
        type=int,
        help="under load, how long a micro-batch waits for more queries, in "
        "microseconds (default 1000; 0: take what is queued; a lone query never waits)",
    )
    parser.add_argument(
        "--search-mode",
        choices=SEARCH_MODES,
        help="how queries rank unless they say: hybrid "
        "(default: vector and BM25 fused; on a Milvus server before 2.5, vector), vector (cosine only) or lexical "
        "(BM25 only)",
    )
    parser.add_argument(
        "--relevance",
        choices=["shopper", "titles"],
        help='the "no close match" judgement: shopper (default: '
        "calibrated on shopper-like queries from the catalog's own values; images judged too) or titles (calibrated "
        "on the catalog's titles, text only: the judgement before, kept for comparison)",
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--no-progress", action="store_true", help="hide the indexing progress bar")
