"""`vitrine export onnx`: write a model's towers as ONNX graphs for `--runtime onnx|onnx-int8` (or `--model
onnx:DIR`)."""

from __future__ import annotations

import argparse
import json
import sys

from vitrine.cli._common import add_command, command_group
from vitrine.constants import DEFAULT_MODEL


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """image and text towers as ONNX graphs (dynamic batch), tokenizer and preprocessing beside them

    Write image.onnx, text.onnx (and text.int8.onnx), tokenizer/ and runtime.json (the preprocessing, and the parity
    with torch measured on probe inputs). Use the directory as --model onnx:DIR; --runtime onnx|onnx-int8 makes and
    caches an export by itself.
    """
    from vitrine.models import create_model
    from vitrine.models.onnx_export import export_onnx

    out = export_onnx(create_model(args.model), args.out, int8=not args.no_int8, overwrite=args.overwrite)
    manifest = json.loads((out / "runtime.json").read_text(encoding="utf-8"))
    parity = manifest["parity"]
    lines = [
        f"{name}: min {values['min']}, mean {values['mean']}"
        for name, values in parity.items()
        if isinstance(values, dict)
    ]
    print(
        f"wrote {', '.join(manifest['files'].values())}, tokenizer/ and runtime.json to {out}\nparity (cosine): "
        + "; ".join(lines),
        file=sys.stderr,
    )
    return 0


def register(sub) -> None:
    formats = command_group(sub, "export", "export a model for another runtime", "Export a model for another runtime.",
        dest="format", metavar="FORMAT")
    onnx = add_command(formats, "onnx", cmd_export_onnx)
    onnx.add_argument("--model", default=DEFAULT_MODEL, help="registry name; default %(default)s")
    onnx.add_argument("--out", required=True, help="directory to write (new or empty)")
    onnx.add_argument("--no-int8", action="store_true", help="skip the int8 text graph")
    onnx.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
