"""`vitrine regions`: write an image's region crops and an overlay, so that a person can check them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vitrine.cli._common import add_command


def cmd_regions(args: argparse.Namespace) -> int:
    """crop an image into garment regions, with an overlay to check them

    Write each region's crop (and its segmented view), overlay.png and regions.json.
    """
    from vitrine.data.images import load_image_file
    from vitrine.data.regions import PROVIDERS, Annotations, crop, overlay

    image = load_image_file(args.image)
    provider = Annotations(args.annotations) if args.annotations else PROVIDERS[args.provider]()
    regions = provider(image, key=Path(args.image).stem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, region in enumerate(regions):
        stem = f"{i:02d}-{region.name}"
        crop(image, region).save(out / f"{stem}.png")
        written.append({"name": region.name, "box": list(region.box), "crop": f"{stem}.png"})
        if region.mask is not None:
            crop(image, region, segmented=True).save(out / f"{stem}-segmented.png")
            written[-1]["segmented"] = f"{stem}-segmented.png"
    overlay(image, regions).save(out / "overlay.png")
    (out / "regions.json").write_text(
        json.dumps({"image": args.image, "regions": written}, indent=2) + "\n", encoding="utf-8"
    )
    print(f"{len(regions)} regions written to {out} (overlay.png, regions.json)", file=sys.stderr)
    return 0


def register(sub) -> None:
    regions = add_command(sub, "regions", cmd_regions)
    regions.add_argument("--image", required=True, help="image file")
    regions.add_argument("--out", required=True, help="output folder")
    regions.add_argument("--provider", choices=["whole", "foreground", "body"], default="body",
        help="whole image, segmented foreground, or body-part crops of it (default %(default)s)")
    regions.add_argument(
        "--annotations", help="JSON or CSV sidecar with boxes/polygons, keyed by file stem (overrides --provider)"
    )
