"""Shopper queries against the KAGL catalog: vector vs lexical vs hybrid vs hybrid + soft filters, composed
changes obeyed with and without soft filters and reference exclusion, and the "no close match" signal.

Queries are generated from the fields of the products the shipped model held out (its `val` split), never from
their titles verbatim; the catalog is every KAGL product (the shipped model's card uses the same gallery).

    .venv/bin/python benchmarks/shopper_queries.py --data ../shared/data/kagl
    .venv/bin/python benchmarks/shopper_queries.py --data ../shared/data/kagl-hires --index
    milvus:/tmp/milvus-hires/catalog.db --text-only
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from vitrine.cir.compose import composer_for
from vitrine.cir.triplets import make_kagl_triplets
from vitrine.data.splits import load_split_config
from vitrine.embed.bank import image_bank
from vitrine.index.faiss_store import FaissStore
from vitrine.index.stores import open_store
from vitrine.models import create_model
from vitrine.ranking import Calibration, Ranker, RankOptions
from vitrine.ranking.relevance import QUIET_ABOVE

GENDER_WORDS = {
    "Men": ["men", "for men", "men's"], "Women": ["women", "for women", "women's"], "Boys": ["boys", "for boys"],
    "Girls": ["girls", "for girls"], "Unisex": ["unisex"],
}
NOT_PLURAL = {
    "jeans", "shorts", "trousers", "leggings", "sunglasses", "briefs", "boxers", "trunks", "capris", "jeggings",
    "tights",
}


def type_phrase(article: str, rng: random.Random) -> str:
    """How a shopper names an article type: lower case, often singular ("Sweatshirts" -> "sweatshirt")."""
    text = article.lower().replace("tshirts", "t-shirts")
    last = text.split()[-1]
    if rng.random() < 0.5 and last.endswith("s") and not last.endswith("ss") and last not in NOT_PLURAL:
        text = text[:-2] if text.endswith(("ches", "shes", "sses")) else text[:-1]
    return text


def brand_of(title: str, gender: str | None) -> str | None:
    """The words of a KAGL title before its gender word ("Nike Men Black Shoes" -> "Nike")."""
    words = title.split()
    for i, word in enumerate(words):
        if word.lower().rstrip("'s") in {"men", "women", "boys", "girls", "unisex", "kids"}:
            return " ".join(words[:i]) if 0 < i <= 3 else None
    return None


def make_queries(items, rng: random.Random) -> dict[str, list[tuple[str, dict]]]:
    """kind -> [(query text, the attributes every relevant product has)], deduplicated, from the items' fields."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for item in items:
        a = item.attributes
        article, colour, gender = a.get("articleType"), a.get("baseColour"), a.get("gender")
        if not article:
            continue
        out["type"][type_phrase(article, rng)] = {"articleType": article}
        if colour and gender:
            g = rng.choice(GENDER_WORDS.get(gender, [gender.lower()]))
            t, c = type_phrase(article, rng), colour.lower()
            text = rng.choice([f"{c} {t} {g}", f"{g} {c} {t}"]) if not g.startswith("for") else f"{c} {t} {g}"
            out["colour+type+gender"][text] = {"articleType": article, "baseColour": colour, "gender": gender}
        brand = brand_of(item.title or "", gender)
        if brand:
            out["brand+type"][f"{brand.lower()} {type_phrase(article, rng)}"] = {"articleType": article, "brand": brand}
    return {kind: sorted(queries.items()) for kind, queries in out.items()}


def relevant(metadata: dict, wanted: dict) -> bool:
    for name, value in wanted.items():
        if name == "brand":
            if not (metadata.get("title") or "").lower().startswith(value.lower() + " "):
                return False
        elif metadata.get(name) != value:
            return False
    return True


def precision_at_10(ranker, vectors, queries, options) -> tuple[float, float]:
    """Mean P@10 and the median milliseconds a ranking took (the query's encoding not included)."""
    scores, times = [], []
    for vector, (text, wanted) in zip(vectors, queries):
        start = time.perf_counter()
        hits = ranker.rank(vector[None], text, 10, options=options).hits
        times.append((time.perf_counter() - start) * 1000)
        scores.append(sum(relevant(h.metadata, wanted) for h in hits) / 10)
    return float(np.mean(scores)), float(np.median(times))


def build_store(root: Path, name: str, model_name: str, bank, keep) -> FaissStore:
    store = FaissStore(root / name, model_name, bank.embeds.shape[1])
    rows = [i for i, item in enumerate(bank.items) if keep(item)]
    store.upsert(
        [bank.items[i].id for i in rows],
        bank.embeds[rows].numpy(),
        [{"title": bank.items[i].title, **{k: v for k, v in bank.items[i].attributes.items() if v}} for i in rows],
    )
    return store


def rank_options(spec: str) -> RankOptions:
    """RankOptions from "fusion=weighted,soft_weight=2": each value converted to the field's default's type."""
    defaults = RankOptions()
    values = {}
    for part in filter(None, spec.split(",")):
        name, _, value = part.partition("=")
        default = getattr(defaults, name)
        values[name] = (
            value.lower() in ("1", "true", "yes")
            if isinstance(default, bool)
            else type(default)(value)
            if default is not None
            else float(value)
        )
    return RankOptions(**values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kagl")
    parser.add_argument("--model", default="vitrine:kagl-base")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--combiner", default="combiner")
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument(
        "--index", help="rank against this index of --data (a directory or milvus:...) instead of one built here"
    )
    parser.add_argument("--composed", type=int, default=400, help="composed queries per change kind")
    parser.add_argument("--triplets", type=int, default=3000, help="validation triplets sampled for composed R@10")
    parser.add_argument(
        "--absent-types", type=int, default=12, help="article types left out of the catalog for the no-close-match test"
    )
    parser.add_argument("--grid", action="store_true", help="also print the fusion and soft-weight variants")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OPTION=VALUE,...",
        help='another ranking to compare, e.g. "w2=fusion=weighted,soft_weight=2" (RankOptions fields)',
    )
    parser.add_argument("--text-only", action="store_true", help="only the P@10 table")
    parser.add_argument(
        "--skip-text", action="store_true", help="skip the P@10 table (composed and no-close-match only)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    torch.set_num_threads(2)

    model = create_model(args.model, runtime=args.runtime)
    model.eval()
    training = resources.files("vitrine.models").joinpath("weights", args.model.split(":")[-1], "training.json")
    split = load_split_config(str(training))
    bank = image_bank(model, [args.data], cache_dir=args.cache_dir)
    held_out = [item for item in bank.items if split.assign(item.id, item.attributes) != "train"]
    print(f"catalog: {len(bank.items)} products; the shipped model held out {len(held_out)} of them", flush=True)

    def encode(texts):
        with torch.inference_mode():
            return torch.cat([model.encode_text(list(texts[i : i + 256])) for i in range(0, len(texts), 256)]).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.index:
            store = open_store(args.index, model=model.name)
            stats = store.stats()
            print(f"index {args.index}: {stats['products']} products ({stats['backend']})", flush=True)
        else:
            store = build_store(Path(tmp), "all", model.name, bank, lambda item: True)
            print(f"indexed in {time.perf_counter() - start:.1f} s", flush=True)
        ranker = Ranker(store)

        # ---- text queries ------------------------------------------------------------------------------------------
        queries = make_queries(held_out, rng)
        print(f"\nP@10, every named attribute matching ({sum(len(q) for q in queries.values())} queries):", flush=True)
        variants = {
            "vector": RankOptions(mode="vector", soft_filters=False),
            "lexical": RankOptions(mode="lexical", soft_filters=False),
            "hybrid": RankOptions(mode="hybrid", soft_filters=False), "hybrid+soft": RankOptions(),
        }
        if args.grid:
            variants.update(
                {
                    "vector+soft": RankOptions(mode="vector"),
                    "hybrid weighted": RankOptions(fusion="weighted", soft_filters=False),
                    "hybrid weighted+soft": RankOptions(fusion="weighted"),
                    "hybrid+soft w0.5": RankOptions(soft_weight=0.5),
                    "hybrid+soft w0.25": RankOptions(soft_weight=0.25),
                    "hybrid+soft v0.7": RankOptions(vector_weight=0.7),
                    "hybrid+soft v0.3": RankOptions(vector_weight=0.3),
                }
            )
        for spec in args.variant:
            variants[spec.partition("=")[0]] = rank_options(spec.partition("=")[2])
        timings = []
        print("| queries | n | " + " | ".join(variants) + " |")
        print("|---|---|" + "---|" * len(variants))
        for kind, kind_queries in [] if args.skip_text else queries.items():
            vectors = encode([text for text, _ in kind_queries])
            row = [precision_at_10(ranker, vectors, kind_queries, options) for options in variants.values()]
            print(f"| {kind} | {len(kind_queries)} | " + " | ".join(f"{p:.4f}" for p, _ in row) + " |", flush=True)
            timings.append(f"| {kind} | " + " | ".join(f"{ms:.1f}" for _, ms in row) + " |")
        print(f"\nMedian ms to rank one query over the {len(bank.items)} products (encoding not included):")
        print("| queries | " + " | ".join(variants) + " |")
        print("|---|" + "---|" * len(variants))
        print("\n".join(timings), flush=True)

        if args.text_only:
            store.close()
            return 0

        # ---- composed: changes obeyed ---------------------------------------------------------------------------
        composer = composer_for(model, args.combiner, True, lambda: create_model(args.model))
        cbank = bank if composer.model is model else image_bank(composer.model, [args.data], cache_dir=args.cache_dir)
        by_group = Counter(
            (i.attributes.get("articleType"), i.attributes.get("gender"), i.attributes.get("baseColour"))
            for i in bank.items
        )
        changes = {"colour": [], "gender": []}
        for item in rng.sample(held_out, len(held_out)):
            a = item.attributes
            article, gender, colour = a.get("articleType"), a.get("gender"), a.get("baseColour")
            if not (article and gender and colour):
                continue
            colours = sorted(
                c for (t, g, c), n in by_group.items() if t == article and g == gender and c and c != colour and n >= 10
            )
            if colours and len(changes["colour"]) < args.composed:
                target = rng.choice(colours)
                changes["colour"].append((item.id, f"in {target.lower()}", "baseColour", target))
            other = {"Men": "Women", "Women": "Men"}.get(gender)
            if (
                other
                and sum(n for (t, g, _), n in by_group.items() if t == article and g == other) >= 10
                and len(changes["gender"]) < args.composed
            ):
                changes["gender"].append((item.id, f"for {other.lower()}", "gender", other))
        print(
            "\nComposed queries from held-out references: share of the top 10 with the asked value, and with the "
            "reference's article type"
        )

        def composed_vectors(rows):
            refs = torch.stack([cbank.embeds[cbank.row[ref]] for ref, *_ in rows])
            with torch.inference_mode():
                return composer.queries(refs, [mod for _, mod, _, _ in rows]).numpy()

        def composed_variants(ref: str) -> dict[str, RankOptions]:
            return {
                "Combiner alone": RankOptions(mode="vector", soft_filters=False, reference_weight=0.0),
                "+ soft filters, reference excluded": RankOptions(mode="vector", exclude=(ref,), reference_weight=0.0),
                "+ reference's values 0.5": RankOptions(mode="vector", exclude=(ref,), reference_weight=0.5),
                "+ reference's values 1.0 (default)": RankOptions(mode="vector", exclude=(ref,), reference_weight=1.0),
            }

        names = list(composed_variants(""))
        print(
            "| change | n | "
            + " | ".join(f"{name}: value / type" for name in names)
            + " | reference in its own top 10 (alone) |"
        )
        print("|---|---|" + "---|" * (len(names) + 1))
        for kind, rows in changes.items():
            vectors = composed_vectors(rows)
            obeyed = {name: [] for name in names}
            kept = {name: [] for name in names}
            self_hits = 0
            for vector, (ref, mod, name, value) in zip(vectors, rows):
                meta = bank.items[bank.row[ref]].attributes
                for variant, options in composed_variants(ref).items():
                    hits = ranker.rank(vector[None], None, 10, options=options, soft_text=mod, reference=meta).hits
                    obeyed[variant].append(sum(h.metadata.get(name) == value for h in hits) / 10)
                    kept[variant].append(
                        sum(h.metadata.get("articleType") == meta.get("articleType") for h in hits) / 10
                    )
                    if variant == names[0]:
                        self_hits += any(h.id == ref for h in hits)
            cells = " | ".join(f"{np.mean(obeyed[n]):.4f} / {np.mean(kept[n]):.4f}" for n in names)
            print(f"| {kind} | {len(rows)} | {cells} | {self_hits / len(rows):.4f} |", flush=True)

        triplets = [
            t
            for t in make_kagl_triplets(bank.items)
            if split.assign(t.reference, bank.items[bank.row[t.reference]].attributes) != "train"
        ]
        triplets = rng.sample(triplets, min(args.triplets, len(triplets)))
        vectors = composed_vectors([(t.reference, t.modification, None, None) for t in triplets])
        recall = {name: 0 for name in names}
        for vector, t in zip(vectors, triplets):
            targets = set(t.targets) - {t.reference}
            meta = bank.items[bank.row[t.reference]].attributes
            for variant, options in composed_variants(t.reference).items():
                if variant == names[0]:
                    options = replace(options, exclude=(t.reference,))  # the triplet protocol removes the reference
                hits = ranker.rank(
                    vector[None], None, 10, options=options, soft_text=t.modification, reference=meta
                ).hits
                recall[variant] += any(h.id in targets for h in hits)
        print(
            f"\nComposed R@10 on {len(triplets)} validation triplets (held-out references, reference excluded): "
            + ", ".join(f"{name} {recall[name] / len(triplets):.4f}" for name in names),
            flush=True,
        )
        store.close()

        # ---- no close match -------------------------------------------------------------------------------------
        type_counts = Counter(i.attributes.get("articleType") for i in bank.items)
        common = sorted(t for t, n in type_counts.items() if t and n >= 30)
        absent = set(random.Random(args.seed + 1).sample(common, args.absent_types))
        store = build_store(
            Path(tmp), "partial", model.name, bank, lambda item: item.attributes.get("articleType") not in absent
        )
        ranker = Ranker(store)
        calibration = Calibration.from_store(store, encode)
        judged = {"absent": [], "present": []}  # (level, whether every word named a catalog value)
        for kind, kind_queries in queries.items():
            if kind == "brand+type":
                continue
            vectors = encode([text for text, _ in kind_queries])
            for vector, (text, wanted) in zip(vectors, kind_queries):
                where = "absent" if wanted["articleType"] in absent else "present"
                relevance = ranker.rank(vector[None], text, 10, calibration=calibration).relevance
                judged[where].append((relevance["level"], relevance["words_named"]))
        noise = ["x" * 500, "qwerty asdf", "watch", "laptop", "garden hose", "pizza"]
        print(
            f"\nNo close match (catalog without {len(absent)} article types: {', '.join(sorted(absent))}; hybrid + "
            "soft):"
        )
        print(f"({len(judged['absent'])} queries naming an absent type, {len(judged['present'])} naming a present one)")
        print("| quiet above level | words override | fires on absent types | quiet on present types |")
        print("|---|---|---|---|")
        for threshold in sorted({0.0, 0.01, 0.02, 0.05, 0.1, QUIET_ABOVE}):
            for override in (True, False):
                close = {
                    where: [level > threshold or (override and named) for level, named in rows]
                    for where, rows in judged.items()
                }
                default = " (default)" if threshold == QUIET_ABOVE and override else ""
                print(
                    f"| {threshold}{default} | {'yes' if override else 'no'} | "
                    f"{np.mean([not c for c in close['absent']]):.4f} | "
                    f"{np.mean(close['present']):.4f} |"
                )
        for text in noise:
            r = ranker.rank(encode([text])[0][None], text, 10, calibration=calibration).relevance
            print(f"- {text[:24]!r}: close_match={r['close_match']} level={r['level']} top={r['top_similarity']}")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
