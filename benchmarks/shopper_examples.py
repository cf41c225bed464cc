"""The shopper examples of docs/ranking.md on a served catalog, ranked as before (vector only, no soft filters,
reference
kept) and now (the defaults): the top 10's article types, colours and genders, and the relevance judgement.

    .venv/bin/vitrine index build --data ../shared/data/kagl-hires --index runs/serve/kagl-hires
    .venv/bin/python benchmarks/shopper_examples.py --index runs/serve/kagl-hires --images
    ../shared/data/kagl-hires/images
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import torch
from PIL import Image

from vitrine.serve.service import Query, SearchService
from vitrine.serve.settings import ServeSettings

BEFORE = {"mode": "vector", "soft_filters": False, "exclude_reference": False}
TEXTS = ["sweatshirt", "women dress", "red dress", "watch", "x" * 400]


def describe(service: SearchService, label: str, query: dict) -> None:
    for name, extra in (("before", BEFORE), ("now", {})):
        ranked = service.rank(Query(**{**query, **extra}))
        hits = ranked.hits
        counts = [
            Counter(h.metadata.get(f) for h in hits).most_common(4) for f in ("articleType", "baseColour", "gender")
        ]
        reference = query.get("reference_id")
        print(
            f"{label} [{name}] close_match={ranked.relevance.get('close_match')} level={ranked.relevance.get('level')} "
            f"soft-filter words={ranked.matched.words}"
            + (" (reference in its own top 10)" if reference in [h.id for h in hits] else "")
        )
        print(f"    types {counts[0]}  colours {counts[1]}  genders {counts[2]}")
        print(f"    first: {[h.metadata.get('title') for h in hits[:2]]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="runs/serve/kagl-hires")
    parser.add_argument("--images", default="../shared/data/kagl-hires/images", help="the catalog's photos, <id>.jpg")
    parser.add_argument("--check-shirt", default="2093", help="a blue check shirt (docs/ranking.md's composed example)")
    parser.add_argument("--readme-reference", default="1163", help="the README's composed example's reference id")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    service = SearchService(ServeSettings(index=args.index))
    try:
        for text in TEXTS:
            describe(service, repr(text if len(text) < 24 else text[:20] + "..."), {"text": text, "k": 10})

        def photo(product_id: str) -> Image.Image:
            with Image.open(f"{args.images}/{product_id}.jpg") as image:
                return image.convert("RGB")

        print(f"\n{args.check_shirt}: {service.product(args.check_shirt).get('title')}")
        for change in ("in black", "for women"):
            describe(
                service,
                f"{args.check_shirt} + {change!r}",
                {"image": photo(args.check_shirt), "modification": change, "k": 10, "reference_id": args.check_shirt},
            )
        print(f"\n{args.readme_reference}: {service.product(args.readme_reference).get('title')}")
        describe(
            service,
            f"{args.readme_reference} + 'in red with long sleeves', gender=Women",
            {
                "image": photo(args.readme_reference), "modification": "in red with long sleeves", "k": 10,
                "reference_id": args.readme_reference, "filters": {"gender": ["Women"]},
            },
        )
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
