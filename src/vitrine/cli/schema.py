"""`vitrine schema infer PATH`: the schema vitrine would read a catalog with, as JSON to save and edit."""

from __future__ import annotations

import argparse
import json
import sys

from vitrine.cli._common import add_command, command_group


def cmd_schema_infer(args: argparse.Namespace) -> int:
    """print the schema a catalog's own columns say

    Read the catalog's header and a sample of its rows and print the schema every command would use for it without
    --schema: the id, title and image columns, and which other columns are categories (facets, tags) rather than numbers
    or free text. An ambiguous catalog is an error that writes a draft schema file.
    """
    from vitrine.data.catalog import schema_for

    schema, line = schema_for(args.path, None)
    print(line, file=sys.stderr)
    text = json.dumps(schema.to_dict(), indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        print(f"wrote {args.out} (use it with --schema {args.out})", file=sys.stderr)
    else:
        print(text)
    return 0


def register(sub) -> None:
    actions = command_group(sub, "schema", "catalog schemas (infer)", "Catalog schemas.")
    infer = add_command(actions, "infer", cmd_schema_infer)
    infer.add_argument("path", help="a folder with catalog.csv|catalog.jsonl, a metadata file, or WebDataset shards")
    infer.add_argument("--out", help="write the schema JSON here instead of printing it")
