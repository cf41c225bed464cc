"""The shipped models on the real hi-res catalog (`../shared/data/kagl-hires`): a shopper's type queries find that
type, and the default tagging model's tags agree with the catalog's own columns.

The floors are measured figures of the shipped weights less a small margin (see the kagl-base model card); a model
that has never seen a type (the old protocol-trained default: no dress in the top 10 of "women dress") fails them."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from vitrine.data.catalog import open_catalog
from vitrine.embed.encode import encode_catalog, encode_texts
from vitrine.models import DEFAULT_TAG_MODEL, create_model
from vitrine.tagging.evaluate import attribute_report, embed_split
from vitrine.tagging.tagger import Tagger
from vitrine.tagging.views import make_views
from vitrine.tagging.vocabulary import builtin_vocabulary

HIRES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "kagl-hires"
pytestmark = pytest.mark.skipif(not (HIRES / "catalog.csv").is_file(), reason="needs ../shared/data/kagl-hires")

# query -> (articleType asked for, floor on the share of the top 10 of that type, out of min(10, products of the type)).
# Measured with the shipped vitrine:kagl-base, Lite2 + flip (benchmarks/model_card.py, 2026-12-01): women dress 6/9,
# flats 6/10, sweatshirt 1/6, sports shoes 8/10, football 5/6, backpack and track pants 10/10 (mean 0.724). The Lite0
# shipped model before it: 3/9, 3/10, 3/6, 10/10, 6/6, 10/10, 10/10 (mean 0.733). The previous, protocol-trained
# default scored 0 on the first three and on "football" (mean 0.429): it had never seen those types.
TYPE_QUERIES = {
    "women dress": ("Dresses", 0.6),
    "flats for women": ("Flats", 0.6),
    "sweatshirt": ("Sweatshirts", 0.15),
    "backpack": ("Backpacks", 0.9),
    "sports shoes for men": ("Sports Shoes", 0.7),
    "track pants": ("Track Pants", 0.9),
    "football": ("Footballs", 0.8),
}
MEAN_FLOOR = 0.7


@pytest.fixture(scope="module")
def hires_bank():
    model = create_model("vitrine:kagl-base")
    reader = open_catalog(str(HIRES), require_title=False)
    items, embeds = encode_catalog(model, reader, progress=False)
    return model, items, embeds


def test_type_queries_return_mostly_the_type_asked_for(hires_bank):
    model, items, embeds = hires_bank
    counts = Counter(item.attributes.get("articleType") for item in items)
    queries = list(TYPE_QUERIES)
    top = (encode_texts(model, queries) @ embeds.T).topk(10, dim=1).indices
    shares = {}
    for query, rows in zip(queries, top.tolist()):
        kind, _ = TYPE_QUERIES[query]
        assert counts[kind] >= 5, f"the hi-res catalog should hold several {kind}"
        hits = sum(items[row].attributes.get("articleType") == kind for row in rows)
        shares[query] = hits / min(10, counts[kind])
    print("precision@10 of the type asked for:", shares)
    for query, share in shares.items():
        assert share >= TYPE_QUERIES[query][1], f"{query!r}: {share:.2f} of the top 10 are {TYPE_QUERIES[query][0]}"
    assert sum(shares.values()) / len(shares) >= MEAN_FLOOR


def test_default_tags_agree_with_the_catalog_columns():
    model = create_model(DEFAULT_TAG_MODEL)
    vocabulary = builtin_vocabulary(model=DEFAULT_TAG_MODEL)
    tagger = Tagger(model, vocabulary, make_views("foreground"))
    items, embeds = embed_split(tagger, str(HIRES), None, progress=False)
    report = attribute_report(tagger, items, embeds)
    top1, per = report["top1"], report["per_attribute"]
    print({name: (top1[name], per[name]["precision"], per[name]["coverage"]) for name in top1})
    # Measured with the Lite2 default (2026-12-01): masterCategory 0.9960, subCategory 0.9654, articleType 0.8518,
    # gender 0.8883, usage 0.7787, baseColour 0.7470 top-1 and 0.9126 precision at 0.49 coverage (the Lite0 model before
    # it: 0.9960, 0.9674, 0.8656, 0.8775, 0.7599, 0.7658; 0.9269 at 0.54). The previous default: masterCategory 0.4209,
    # subCategory 0.3449 (their own prompts, never aligned; now derived from articleType).
    assert top1["masterCategory"] >= 0.95
    for name in ("subCategory", "articleType", "gender"):
        assert top1[name] >= 0.80, f"{name}: top-1 agreement {top1[name]}"
    assert top1["usage"] >= 0.74 and top1["baseColour"] >= 0.74
    colour = per["baseColour"]
    assert colour["coverage"] >= 0.45 and colour["precision"] >= 0.9  # withheld colours are the uncertain ones
    for name, entry in per.items():  # what the fitted 'unknown' thresholds let through is at least as precise as top-1
        assert entry["precision"] >= top1[name] - 1e-9, name
