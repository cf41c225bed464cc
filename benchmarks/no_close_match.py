"""The "no close match" judgement on answerable shopper queries and on queries for things a catalog lacks, before
(calibrated on the catalog's titles, text only) and after (shopper-like queries from the catalog's own values, images
judged too, chips judged on what they hold), side by side, per catalog, with the false alarms listed.

Catalogs: the hi-res KAGL folder, and one with other column names (`sku,name,photo,colour,category,sex`) made here from
every n-th product of the KAGL shards, 12 common types left out (drawn as benchmarks/shopper_queries.py draws them).
Indexes are built once and kept under --cache (default runs/bench/no-close-match).

    .venv/bin/python benchmarks/no_close_match.py
    .venv/bin/python benchmarks/no_close_match.py --renamed-products 4000 --generated 200 --sweep

Answerable queries have at least 3 matching products each: generated from the catalog's values over its role columns
(`vitrine.data.roles`, phrased as a shopper types them: singular types, "men's"), plus, for kagl-hires, hand-written
ones
(the issue's among them), and generated ones under a gender chip (agreeing with the query, or overriding the gender it
names). Absent queries: things neither catalog has ("surfboard"), bare and under a chip, and shopper queries for up to
12 common KAGL types the catalog has none of. Image queries: KAGL photos of products outside the catalog, of types it
has (answerable), and drawings (absent).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from shopper_queries import GENDER_WORDS, type_phrase
from vitrine.data.prompts import template_fields
from vitrine.data.roles import column_roles, query_templates
from vitrine.data.schema import builtin_schema
from vitrine.data.shards import resolve_shards
from vitrine.data.words import stem, words
from vitrine.index.build import build_index, index_schema
from vitrine.index.stores import open_store
from vitrine.models import create_model
from vitrine.ranking import Ranker
from vitrine.ranking.calibrate import calibrate

MIN_MATCHES = 3
KAGL = builtin_schema("kagl")
KAGL_ROLES = column_roles(KAGL)  # the shards' metadata, read by role
RENAMED_COLUMNS = {
    KAGL.id_field: "sku", KAGL.title_field: "name", KAGL_ROLES["colour"]: "colour", KAGL_ROLES["type"]: "category",
    KAGL_ROLES["gender"]: "sex",
}

# (query, {role: accepted values}, title words every match has: "a|b" accepts either), for kagl-hires; the five
# false alarms and its filter example come first
HAND_WRITTEN = [
    ("nike running shoes", {"type": ["Sports Shoes"]}, ["nike"]),
    ("puma tshirt for men", {"type": ["Tshirts"], "gender": ["Men"]}, ["puma"]),
    ("running shoes for men", {"type": ["Sports Shoes"], "gender": ["Men"]}, []),
    ("printed t-shirt", {"type": ["Tshirts"]}, []),
    ("backpack for college", {"type": ["Backpacks"]}, []),
    ("red t-shirt for men", {"type": ["Tshirts"], "colour": ["Red"], "gender": ["Men"]}, []),
    ("adidas t-shirt", {"type": ["Tshirts"]}, ["adidas"]),
    ("sneakers", {"type": ["Casual Shoes", "Sports Shoes"]}, []),
    ("sneakers for women", {"type": ["Casual Shoes", "Sports Shoes"], "gender": ["Women"]}, []),
    ("polo t-shirt", {"type": ["Tshirts"]}, ["polo"]),
    ("football", {"type": ["Footballs"]}, []),
    ("cricket jersey", {"type": ["Tshirts"]}, ["cricket|jersey"]),
    ("leather shoes for men", {"type": ["Casual Shoes", "Formal Shoes"], "gender": ["Men"]}, ["leather"]),
    ("formal shoes", {"type": ["Formal Shoes"]}, []),
    ("women's handbag", {"type": ["Handbags"], "gender": ["Women"]}, []),
    ("black heels", {"type": ["Heels"], "colour": ["Black"]}, []),
    ("flip flops for men", {"type": ["Flip Flops"], "gender": ["Men"]}, []),
    ("water bottle", {"type": ["Water Bottle"]}, []),
    ("cap", {"type": ["Caps"]}, []),
    ("sports cap", {"type": ["Caps"]}, []),
    ("track pants for men", {"type": ["Track Pants"], "gender": ["Men"]}, []),
    ("shorts", {"type": ["Shorts"]}, []),
    ("check shirt for men", {"type": ["Shirts"], "gender": ["Men"]}, ["check|checked|checks"]),
    ("women tops", {"type": ["Tops"], "gender": ["Women"]}, []),
    ("jacket", {"type": ["Jackets"]}, []),
    ("sandals for women", {"type": ["Sandals", "Flats"], "gender": ["Women"]}, []),
    ("kids t-shirt", {"type": ["Tshirts", "Tops"], "gender": ["Boys", "Girls"]}, []),
    ("disney t-shirt for girls", {"type": ["Tshirts", "Tops"], "gender": ["Girls"]}, ["disney"]),
    ("reebok shoes", {"type": ["Casual Shoes", "Sports Shoes", "Formal Shoes"]}, ["reebok"]),
    ("gym t-shirt", {"type": ["Tshirts"], "usage": ["Sports"]}, []),
    ("white sneakers", {"type": ["Casual Shoes", "Sports Shoes"], "colour": ["White"]}, []),
    ("canvas shoes", {"type": ["Casual Shoes", "Sports Shoes"]}, ["canvas"]),
    ("casual shoes for men", {"type": ["Casual Shoes"], "gender": ["Men"]}, []),
    ("graphic tee", {"type": ["Tshirts"]}, []),
    ("football jersey", {"type": ["Tshirts"]}, ["jersey"]),
    ("sports bag", {"type": ["Backpacks", "Duffel Bag", "Handbags"], "usage": ["Sports"]}, []),
    ("travel backpack", {"type": ["Backpacks"]}, []),
    ("slippers", {"type": ["Flip Flops"]}, []),
    ("gym shoes", {"type": ["Sports Shoes"]}, []),
    ("striped t-shirt", {"type": ["Tshirts"]}, ["stripe|stripes|striped"]),
    ("party heels", {"type": ["Heels"]}, []),
]
HAND_WRITTEN_CHIPS = [("red t-shirt for men", {"gender": "Women"}, {"type": ["Tshirts"], "colour": ["Red"]}, [])]
ABSENT = [
    "surfboard", "kitchen knife", "sofa", "car tyre", "garden hose", "lawn mower", "flower pot", "garden shovel",
    "watering can", "smartphone", "television", "refrigerator", "microwave oven", "bicycle", "office chair",
    "dining table", "coffee maker", "vacuum cleaner", "power drill", "pizza", "dog food", "wine glass", "bed frame",
    "ceiling fan", "printer ink", "hammer", "frying pan", "toaster", "desk lamp", "car battery", "golf club",
]


@dataclass(frozen=True)
class Case:
    """One query, whether the catalog answers it, and the chip it runs under."""

    text: str | None
    answerable: bool
    kind: str
    filters: Mapping[str, list[str]] = field(default_factory=dict)
    image: Image.Image | None = None
    label: str = ""


# ---- catalogs and indexes
# ---------------------------------------------------------------------------------------------
def shard_products(shards: str) -> Iterator[tuple[dict, bytes]]:
    """(metadata, JPEG bytes) of every product of the KAGL shards, in shard order."""
    for path in resolve_shards(shards):
        with tarfile.open(path) as tar:
            pending: dict[str, dict] = {}
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                pending.setdefault(key, {})[ext] = tar.extractfile(member).read()
                if {"json", "jpg"} <= set(pending[key]):
                    item = pending.pop(key)
                    yield json.loads(item["json"]), item["jpg"]


def kagl_rows(shards: str) -> list[dict]:
    """The KAGL catalog's metadata (its catalog.csv beside the shards)."""
    with open(Path(shards).parent / "catalog.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def held_out_types(rows: Sequence[dict], count: int, seed: int) -> list[str]:
    """`count` article types of at least 30 products, drawn as benchmarks/shopper_queries.py draws them."""
    types = Counter(row.get(KAGL_ROLES["type"]) for row in rows)
    return sorted(random.Random(seed + 1).sample(sorted(t for t, n in types.items() if t and n >= 30), count))


def renamed_catalog(shards: str, folder: Path, products: int, leave_out: Sequence[str]) -> Path:
    """Every n-th KAGL product, but those of the `leave_out` types, as a folder catalog whose columns KAGL does not
    name (`sku,name,photo,colour,category,sex`)."""
    if (folder / "catalog.csv").is_file():
        return folder
    kept = [row[KAGL.id_field] for row in kagl_rows(shards) if row.get(KAGL_ROLES["type"]) not in set(leave_out)]
    chosen = set(kept[:: max(1, len(kept) // products)][:products])
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for meta, jpg in shard_products(shards):
        if meta[KAGL.id_field] not in chosen:
            continue
        (folder / "photos" / f"{meta[KAGL.id_field]}.jpg").write_bytes(jpg)
        row = {new: meta.get(old) or "" for old, new in RENAMED_COLUMNS.items()}
        rows.append({**row, "photo": f"photos/{meta[KAGL.id_field]}.jpg"})
    with open(folder / "catalog.csv.tmp", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["sku", "name", "photo", "colour", "category", "sex"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / "catalog.csv.tmp").rename(folder / "catalog.csv")
    return folder


def cached_index(catalog: Path, index: Path, model_name: str, runtime: str) -> Path:
    if not (index / "index.sqlite").is_file():
        start = time.perf_counter()
        result = build_index(str(catalog), str(index), create_model(model_name, runtime=runtime), progress=False)
        print(f"indexed {catalog}: {result.products} products in {time.perf_counter() - start:.0f} s", flush=True)
    return index


# ---- queries
# ------------------------------------------------------------------------------------------------------------
def matches(
    rows: Sequence[dict], roles: Mapping[str, str], wanted: Mapping[str, Sequence[str]], title_words: Sequence[str] = ()
) -> int:
    """How many products have every wanted role value and every title word ("a|b": either)."""
    count = 0
    for row in rows:
        if any(row.get(roles.get(role, "\0")) not in values for role, values in wanted.items()):
            continue
        title = set(stem(w) for w in words(row.get("title") or ""))
        if all(any(stem(alt) in title for alt in option.split("|")) for option in title_words):
            count += 1
    return count


def shopper_phrase(template: str, values: Mapping[str, str], role_of: Mapping[str, str], rng: random.Random) -> str:
    """A template over columns filled as a shopper types it: lower case, types often singular, genders as "men's" /
    "men" (the calibration's own queries are the values as they are)."""
    filled = {}
    for column in template_fields(template):
        value, role = values[column], role_of.get(column)
        if role == "type":
            filled[column] = type_phrase(value, rng)
        elif role == "gender":
            filled[column] = rng.choice([w.removeprefix("for ") for w in GENDER_WORDS.get(value, [value.lower()])])
        else:
            filled[column] = value.lower()
    return " ".join(template.format(**filled).split())


def generated_cases(rows: Sequence[dict], schema, count: int, rng: random.Random) -> list[Case]:
    """Shopper queries from the catalog's values over its role columns, each with at least MIN_MATCHES products."""
    role_of = {column: role for role, column in column_roles(schema).items()}
    templates = list(query_templates(schema))
    by_text: dict[str, dict] = {}
    for row in rng.sample(list(rows), len(rows)):
        template = rng.choice(templates)
        needed = template_fields(template)
        if any(not row.get(column) for column in needed):
            continue
        values = {column: row[column] for column in needed}
        text = shopper_phrase(template, values, role_of, rng)
        if (
            text not in by_text
            and matches(rows, {c: c for c in needed}, {c: [v] for c, v in values.items()}) >= MIN_MATCHES
        ):
            by_text[text] = values
        if len(by_text) >= count:
            break
    return [Case(text, True, "generated") for text in sorted(by_text)]


def chip_cases(rows: Sequence[dict], roles: Mapping[str, str], count: int, rng: random.Random) -> list[Case]:
    """Generated queries under a gender chip that at least MIN_MATCHES products satisfy: agreeing with the query, or
    overriding the gender it names (the issue's "red t-shirt for men" under the Women chip)."""
    if "gender" not in roles or "type" not in roles:
        return []
    genders = sorted({row[roles["gender"]] for row in rows if row.get(roles["gender"])})
    out: dict[tuple[str, str], Case] = {}
    for row in rng.sample(list(rows), len(rows)):
        if not row.get(roles["type"]) or not row.get(roles["gender"]):
            continue
        kept = {"type": [row[roles["type"]]]}
        if "colour" in roles and row.get(roles["colour"]) and rng.random() < 0.5:
            kept["colour"] = [row[roles["colour"]]]
        chip = rng.choice(genders)
        if matches(rows, roles, {**kept, "gender": [chip]}) < MIN_MATCHES:
            continue
        named = rng.choice([None, row[roles["gender"]]])  # the query names no gender, or one the chip may override
        template = "{colour} {type}" if "colour" in kept else "{type}"
        values = {r: v[0] for r, v in kept.items()} | ({"gender": named} if named else {})
        text = shopper_phrase(template + (" for {gender}" if named else ""), values, {r: r for r in values}, rng)
        out.setdefault(
            (text, chip), Case(text, True, "under a chip", {roles["gender"]: [chip]}, label=f"{text} [{chip}]")
        )
        if len(out) >= count:
            break
    return [out[key] for key in sorted(out)]


def absent_type_cases(
    kagl: Sequence[dict], catalog_types: set[str], count: int, seed: int, rng: random.Random
) -> tuple[list[str], list[Case]]:
    """Shopper queries for up to 12 common KAGL types the catalog has none of ("red watch for women" on a catalog
    without
    watches), made from KAGL products of those types."""
    types = Counter(row.get(KAGL_ROLES["type"]) for row in kagl)
    missing = sorted(t for t, n in types.items() if t and n >= 30 and t not in catalog_types)
    absent = sorted(random.Random(seed + 1).sample(missing, min(12, len(missing))))
    role_of = {column: role for role, column in KAGL_ROLES.items()}
    templates = [t for t in query_templates(KAGL) if "{" + KAGL_ROLES["type"] + "}" in t]
    texts: set[str] = set()
    for row in rng.sample(list(kagl), len(kagl)):
        if row.get(KAGL_ROLES["type"]) not in absent:
            continue
        template = rng.choice(templates)
        if all(row.get(column) for column in template_fields(template)):
            texts.add(shopper_phrase(template, row, role_of, rng))
        if len(texts) >= count:
            break
    return absent, [Case(text, False, "absent types") for text in sorted(texts)]


def drawings() -> list[tuple[str, Image.Image]]:
    """Pictures of no product: discs, shapes, stripes, gradients, noise."""
    rng = np.random.default_rng(0)
    colours = {
        "yellow": (240, 220, 30), "green": (40, 150, 60), "red": (210, 40, 40), "blue": (40, 70, 200),
        "white": (250, 250, 250), "black": (15, 15, 15), "orange": (240, 140, 30), "purple": (120, 50, 150),
    }
    out = []
    for fg, bg in [
        ("yellow", "green"), ("red", "white"), ("blue", "yellow"), ("white", "black"), ("orange", "blue"),
        ("black", "white"),
    ]:
        image = Image.new("RGB", (256, 256), colours[bg])
        ImageDraw.Draw(image).ellipse((64, 64, 192, 192), fill=colours[fg])
        out.append((f"{fg} disc on {bg}", image))
    for fg, bg in [("purple", "white"), ("green", "yellow")]:
        image = Image.new("RGB", (256, 256), colours[bg])
        ImageDraw.Draw(image).polygon([(128, 30), (230, 220), (26, 220)], fill=colours[fg])
        out.append((f"{fg} triangle on {bg}", image))
    for name, axis in [("horizontal", 0), ("vertical", 1)]:
        stripes = (np.arange(256) // 32 % 2).astype(np.uint8)
        grid = np.repeat(stripes[:, None], 256, 1) if axis == 0 else np.repeat(stripes[None, :], 256, 0)
        out.append(
            (
                f"{name} stripes",
                Image.fromarray(
                    (grid[..., None] * np.array([200, 30, 30]) + (1 - grid[..., None]) * 255).astype(np.uint8)
                ),
            )
        )
    checker = ((np.arange(256)[:, None] // 32 + np.arange(256)[None, :] // 32) % 2).astype(np.uint8) * 255
    out.append(("checkerboard", Image.fromarray(np.stack([checker] * 3, -1))))
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    out.append(
        (
            "gradient",
            Image.fromarray(
                np.stack(
                    [np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)), np.full((256, 256), 128, np.uint8)], -1
                )
            ),
        )
    )
    out.append(("noise", Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))))
    for name, colour in [("plain grey", (128, 128, 128)), ("plain blue", colours["blue"])]:
        out.append((name, Image.new("RGB", (256, 256), colour)))
    rings = Image.new("RGB", (256, 256), colours["white"])
    for r in range(120, 0, -20):
        ImageDraw.Draw(rings).ellipse(
            (128 - r, 128 - r, 128 + r, 128 + r), fill=colours["red"] if r // 20 % 2 else colours["white"]
        )
    out.append(("target rings", rings))
    face = Image.new("RGB", (256, 256), colours["yellow"])
    draw = ImageDraw.Draw(face)
    draw.ellipse((80, 80, 110, 110), fill=colours["black"])
    draw.ellipse((146, 80, 176, 110), fill=colours["black"])
    draw.arc((70, 100, 186, 200), 20, 160, fill=colours["black"], width=8)
    out.append(("smiley", face))
    text = Image.new("RGB", (256, 256), colours["white"])
    ImageDraw.Draw(text).text((60, 120), "HELLO WORLD", fill=colours["black"])
    out.append(("text", text))
    return out


def photo_cases(shards: str, held: set[str], types: Counter, count: int, rng: random.Random) -> list[Case]:
    """KAGL photos of products outside the catalog, of types it has at least MIN_MATCHES of."""
    keep = {t for t, n in types.items() if n >= MIN_MATCHES}
    kind = KAGL_ROLES["type"]
    pool = [
        (meta, jpg)
        for meta, jpg in shard_products(shards)
        if meta[KAGL.id_field] not in held and meta.get(kind) in keep
    ]
    picked = rng.sample(pool, min(count, len(pool)))
    return [
        Case(
            None, True, "image: product photo", image=Image.open(io.BytesIO(jpg)).convert("RGB"),
            label=f"photo {meta[KAGL.id_field]} ({meta[kind]})",
        )
        for meta, jpg in picked
    ]


# ---- judging
# ------------------------------------------------------------------------------------------------------------
def query_vectors(model, cases: Sequence[Case]) -> np.ndarray:
    """(len(cases), D): each case's text or image encoded, in batches."""
    out = [None] * len(cases)
    texts = [i for i, c in enumerate(cases) if c.image is None]
    images = [i for i, c in enumerate(cases) if c.image is not None]
    with torch.inference_mode():
        for rows, encode in (
            (texts, lambda chunk: model.encode_text([cases[i].text for i in chunk])),
            (images, lambda chunk: model.encode_image(model.preprocess([cases[i].image for i in chunk]))),
        ):
            for start in range(0, len(rows), 32):
                chunk = rows[start : start + 32]
                for i, vector in zip(chunk, encode(chunk).float().numpy()):
                    out[i] = vector
    return np.stack(out)


def judged(ranker: Ranker, vectors: np.ndarray, cases: Sequence[Case], calibration) -> list[dict]:
    return [
        ranker.rank(vector[None], c.text, 10, c.filters, calibration=calibration).relevance
        for vector, c in zip(vectors, cases)
    ]


def rate(verdicts: Sequence[bool | None], answerable: bool) -> float:
    """Answerable: the share not called "no close match"; absent: the share called so."""
    return float(np.mean([v is not False for v in verdicts]) if answerable else np.mean([v is False for v in verdicts]))


def sweep(ranker: Ranker, vectors: np.ndarray, cases: Sequence[Case], calibration) -> None:
    """The shopper method at other thresholds: text queries by `quiet_above`, image queries by `image_quiet_above`."""
    for kind, name, values, default in (
        ("text", "quiet_above", (0.02, 0.05, 0.1, 0.15), calibration.quiet_above),
        ("image", "image_quiet_above", (0.02, 0.05, 0.1, 0.15, 0.2), calibration.image_quiet_above),
    ):
        rows = [i for i, c in enumerate(cases) if (c.image is None) == (kind == "text")]
        print(f"| {kind} threshold | answerable quiet | absent fires | false alarms |")
        print("|---|---|---|---|")
        for value in values:
            verdicts = judged(ranker, vectors[rows], [cases[i] for i in rows], replace(calibration, **{name: value}))
            by = {i: v["close_match"] for i, v in zip(rows, verdicts)}
            alarms = [cases[i].label or cases[i].text for i in rows if cases[i].answerable and by[i] is False]
            shown = ", ".join(alarms[:8]) + (f" and {len(alarms) - 8} more" if len(alarms) > 8 else "")
            print(
                f"| {value}{' (default)' if value == default else ''} | "
                f"{rate([by[i] for i in rows if cases[i].answerable], True):.3f} | "
                f"{rate([by[i] for i in rows if not cases[i].answerable], False):.3f} | {shown or '-'} |"
            )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hires", default="../shared/data/kagl-hires")
    parser.add_argument("--shards", default="../shared/data/kagl/shards")
    parser.add_argument(
        "--renamed-products", type=int, default=4000, help="KAGL products in the renamed-columns catalog"
    )
    parser.add_argument("--model", default="vitrine:kagl-base")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--cache", default="runs/bench/no-close-match")
    parser.add_argument("--generated", type=int, default=200, help="generated answerable queries per catalog")
    parser.add_argument("--chips", type=int, default=100, help="generated queries under a gender chip per catalog")
    parser.add_argument("--photos", type=int, default=100, help="product photos from outside the catalog per catalog")
    parser.add_argument(
        "--held-out-types", type=int, default=12, help="common KAGL types the renamed catalog leaves out"
    )
    parser.add_argument(
        "--absent-type-queries", type=int, default=100, help="queries for common KAGL types a catalog lacks"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also the after method's rates at other thresholds")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cache = Path(args.cache)
    model = create_model(args.model, runtime=args.runtime)
    model.eval()
    kagl = kagl_rows(args.shards)
    leave_out = held_out_types(kagl, args.held_out_types, args.seed)
    renamed = f"renamed-{args.renamed_products}-without-{args.held_out_types}-seed{args.seed}"
    print(f"the renamed catalog leaves out {len(leave_out)} types: {', '.join(leave_out)}")
    catalogs = {
        "kagl-hires": Path(args.hires),
        renamed: renamed_catalog(args.shards, cache / f"{renamed}-catalog", args.renamed_products, leave_out),
    }

    def encode(texts):
        with torch.inference_mode():
            return (
                torch.cat([model.encode_text(list(texts[i : i + 128])) for i in range(0, len(texts), 128)])
                .float()
                .numpy()
            )

    for name, catalog in catalogs.items():
        rng = random.Random(args.seed)
        index = cached_index(catalog, cache / name, args.model, args.runtime)
        store = open_store(str(index))
        ranker = Ranker(store)
        schema = index_schema(store)
        roles = column_roles(schema)
        rows = store.sample(store.stats()["products"])
        cases = generated_cases(rows, schema, args.generated, rng)
        if name == "kagl-hires":
            for text, wanted, title in HAND_WRITTEN:
                if matches(rows, roles, wanted, title) >= MIN_MATCHES:
                    cases.append(Case(text, True, "hand-written"))
                else:
                    print(f"  (left out {text!r}: fewer than {MIN_MATCHES} matching products)")
            for text, chip, wanted, title in HAND_WRITTEN_CHIPS:
                if matches(rows, roles, {**wanted, "gender": [chip["gender"]]}, title) >= MIN_MATCHES:
                    cases.append(
                        Case(
                            text, True, "under a chip", {roles["gender"]: [chip["gender"]]},
                            label=f"{text} [{chip['gender']}]",
                        )
                    )
        cases += chip_cases(rows, roles, args.chips, rng)
        cases += [Case(text, False, "absent") for text in ABSENT]
        missing, absent_types = absent_type_cases(
            kagl, {row.get(roles.get("type")) for row in rows}, args.absent_type_queries, args.seed, rng
        )
        cases += absent_types
        if "gender" in roles:
            commonest = Counter(row.get(roles["gender"]) for row in rows).most_common(1)[0][0]
            cases += [
                Case(text, False, "absent under a chip", {roles["gender"]: [commonest]}, label=f"{text} [{commonest}]")
                for text in ABSENT
            ]
        types = Counter(row.get(roles["type"]) for row in rows) if "type" in roles else Counter()
        cases += photo_cases(args.shards, {row["id"] for row in rows}, types, args.photos, rng)
        cases += [Case(None, False, "image: drawing", image=image, label=label) for label, image in drawings()]

        vectors = query_vectors(model, cases)
        results, seconds, calibrations = {}, {}, {}
        for method in ("titles", "shopper"):
            start = time.perf_counter()
            calibrations[method] = calibrate(store, encode, method)
            seconds[method] = time.perf_counter() - start
            results[method] = judged(ranker, vectors, cases, calibrations[method])
        print(
            f"\n{name}: {store.stats()['products']} products, roles {dict(sorted(roles.items()))}; calibration took "
            f"{seconds['titles']:.1f} s before, {seconds['shopper']:.1f} s after (once per index generation); absent "
            "types "
            f"queried: {', '.join(missing)}"
        )
        print("| queries | n | before (titles): quiet / fires | after (shopper queries): quiet / fires |")
        print("|---|---|---|---|")
        kinds = list(dict.fromkeys(c.kind for c in cases))
        groups = [(kind, [i for i, c in enumerate(cases) if c.kind == kind]) for kind in kinds]
        groups += [
            ("all answerable", [i for i, c in enumerate(cases) if c.answerable]),
            ("all absent", [i for i, c in enumerate(cases) if not c.answerable]),
        ]
        for label, rows_of in groups:
            answerable = cases[rows_of[0]].answerable
            cells = []
            for method in ("titles", "shopper"):
                verdicts = [results[method][i]["close_match"] for i in rows_of]
                if all(v is None for v in verdicts):
                    cells.append("not judged")
                    continue
                cells.append(
                    f"quiet {rate(verdicts, True):.3f}" if answerable else f"fires {rate(verdicts, False):.3f}"
                )
            print(f"| {label} | {len(rows_of)} | {cells[0]} | {cells[1]} |")
        for method in ("titles", "shopper"):
            alarms = [
                cases[i].label or cases[i].text
                for i, c in enumerate(cases)
                if c.answerable and results[method][i]["close_match"] is False
            ]
            misses = [
                cases[i].label or cases[i].text
                for i, c in enumerate(cases)
                if not c.answerable and results[method][i]["close_match"] is not False
            ]
            when = "before" if method == "titles" else "after"
            print(f"false alarms {when} ({len(alarms)}): {', '.join(alarms) or '-'}")
            print(f"absent not flagged {when} ({len(misses)}): {', '.join(misses) or '-'}")
        if args.sweep:
            sweep(ranker, vectors, cases, calibrations["shopper"])
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
