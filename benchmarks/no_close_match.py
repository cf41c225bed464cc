"""The "no close match" judgement on answerable shopper queries and on queries for things a catalog lacks, before
(calibrated on the catalog's titles, text only) and after (shopper-like queries from the catalog's own values, images
judged too, chips judged on what they hold), side by side, per catalog, with the false alarms listed.

Catalogs: the hi-res KAGL folder, and one with other column names (`sku,name,photo,colour,category,sex`) made here from
every n-th product of the KAGL shards. Indexes are built once and kept under --cache (default runs/bench/no-close-match).

    .venv/bin/python benchmarks/no_close_match.py
    .venv/bin/python benchmarks/no_close_match.py --renamed-products 4000 --generated 200

Answerable queries have at least 3 matching products each: generated from the catalog's values over its role columns
(`vitrine.data.roles`, phrased as a shopper types them: singular types, "men's"), plus, for kagl-hires, hand-written ones
(the issue's among them). Absent queries name things neither catalog has. Image queries: KAGL photos of products
outside the catalog, of types it has (answerable), and drawings (absent).
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
from dataclasses import dataclass, field
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
RENAMED_COLUMNS = {KAGL.id_field: "sku", KAGL.title_field: "name", KAGL_ROLES["colour"]: "colour", KAGL_ROLES["type"]: "category",
                   KAGL_ROLES["gender"]: "sex"}

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
ABSENT = ["surfboard", "kitchen knife", "sofa", "car tyre", "garden hose", "lawn mower", "flower pot", "garden shovel",
          "watering can", "smartphone", "television", "refrigerator", "microwave oven", "bicycle", "office chair",
          "dining table", "coffee maker", "vacuum cleaner", "power drill", "pizza", "dog food", "wine glass", "bed frame",
          "ceiling fan", "printer ink", "hammer", "frying pan", "toaster", "desk lamp", "car battery", "golf club"]


@dataclass(frozen=True)
class Case:
    """One query, whether the catalog answers it, and the chip it runs under."""

    text: str | None
    answerable: bool
    kind: str
    filters: Mapping[str, list[str]] = field(default_factory=dict)
    image: Image.Image | None = None
    label: str = ""


# ---- catalogs and indexes ---------------------------------------------------------------------------------------------
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


def renamed_catalog(shards: str, folder: Path, products: int) -> Path:
    """Every n-th KAGL product as a folder catalog whose columns KAGL does not name (`sku,name,photo,colour,category,sex`)."""
    if (folder / "catalog.csv").is_file():
        return folder
    total = sum(1 for _ in csv.DictReader(open(Path(shards).parent / "catalog.csv", encoding="utf-8")))
    step = max(1, total // products)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (meta, jpg) in enumerate(shard_products(shards)):
        if i % step or len(rows) >= products:
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


# ---- queries ------------------------------------------------------------------------------------------------------------
def matches(rows: Sequence[dict], roles: Mapping[str, str], wanted: Mapping[str, Sequence[str]], title_words: Sequence[str] = ()) -> int:
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
        if text not in by_text and matches(rows, {c: c for c in needed}, {c: [v] for c, v in values.items()}) >= MIN_MATCHES:
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
        out.setdefault((text, chip), Case(text, True, "under a chip", {roles["gender"]: [chip]}, label=f"{text} [{chip}]"))
        if len(out) >= count:
            break
    return [out[key] for key in sorted(out)]


def drawings() -> list[tuple[str, Image.Image]]:
    """Pictures of no product: discs, shapes, stripes, gradients, noise."""
    rng = np.random.default_rng(0)
    colours = {"yellow": (240, 220, 30), "green": (40, 150, 60), "red": (210, 40, 40), "blue": (40, 70, 200),
               "white": (250, 250, 250), "black": (15, 15, 15), "orange": (240, 140, 30), "purple": (120, 50, 150)}
    out = []
    for fg, bg in [("yellow", "green"), ("red", "white"), ("blue", "yellow"), ("white", "black"), ("orange", "blue"), ("black", "white")]:
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
        out.append((f"{name} stripes", Image.fromarray((grid[..., None] * np.array([200, 30, 30]) + (1 - grid[..., None]) * 255).astype(np.uint8))))
    checker = ((np.arange(256)[:, None] // 32 + np.arange(256)[None, :] // 32) % 2).astype(np.uint8) * 255
    out.append(("checkerboard", Image.fromarray(np.stack([checker] * 3, -1))))
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    out.append(("gradient", Image.fromarray(np.stack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)), np.full((256, 256), 128, np.uint8)], -1))))
    out.append(("noise", Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))))
    for name, colour in [("plain grey", (128, 128, 128)), ("plain blue", colours["blue"])]:
        out.append((name, Image.new("RGB", (256, 256), colour)))
    rings = Image.new("RGB", (256, 256), colours["white"])
    for r in range(120, 0, -20):
        ImageDraw.Draw(rings).ellipse((128 - r, 128 - r, 128 + r, 128 + r), fill=colours["red"] if r // 20 % 2 else colours["white"])
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
    pool = [(meta, jpg) for meta, jpg in shard_products(shards) if meta[KAGL.id_field] not in held and meta.get(kind) in keep]
    picked = rng.sample(pool, min(count, len(pool)))
    return [Case(None, True, "image: product photo", image=Image.open(io.BytesIO(jpg)).convert("RGB"),
                 label=f"photo {meta[KAGL.id_field]} ({meta[kind]})") for meta, jpg in picked]


# ---- judging ------------------------------------------------------------------------------------------------------------
def judged(ranker: Ranker, model, cases: Sequence[Case], calibration) -> list[dict]:
    texts = [c for c in cases if c.image is None]
    images = [c for c in cases if c.image is not None]
    with torch.inference_mode():
        vectors = {id(c): v for c, v in zip(texts, model.encode_text([c.text for c in texts]).float().numpy())} if texts else {}
        for start in range(0, len(images), 32):
            chunk = images[start:start + 32]
            vectors.update({id(c): v for c, v in zip(chunk, model.encode_image(model.preprocess([c.image for c in chunk])).float().numpy())})
    return [ranker.rank(vectors[id(c)][None], c.text, 10, c.filters, calibration=calibration).relevance for c in cases]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hires", default="../shared/data/kagl-hires")
    parser.add_argument("--shards", default="../shared/data/kagl/shards")
    parser.add_argument("--renamed-products", type=int, default=4000, help="KAGL products in the renamed-columns catalog")
    parser.add_argument("--model", default="vitrine:kagl-base")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--cache", default="runs/bench/no-close-match")
    parser.add_argument("--generated", type=int, default=200, help="generated answerable queries per catalog")
    parser.add_argument("--chips", type=int, default=100, help="generated queries under a gender chip per catalog")
    parser.add_argument("--photos", type=int, default=100, help="product photos from outside the catalog per catalog")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cache = Path(args.cache)
    model = create_model(args.model, runtime=args.runtime)
    model.eval()
    catalogs = {"kagl-hires": Path(args.hires),
                "renamed": renamed_catalog(args.shards, cache / f"renamed-{args.renamed_products}-catalog", args.renamed_products)}

    def encode(texts):
        with torch.inference_mode():
            return torch.cat([model.encode_text(list(texts[i:i + 128])) for i in range(0, len(texts), 128)]).float().numpy()

    for name, catalog in catalogs.items():
        rng = random.Random(args.seed)
        index = cached_index(catalog, cache / (name if name == "kagl-hires" else f"renamed-{args.renamed_products}"), args.model, args.runtime)
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
                    cases.append(Case(text, True, "under a chip", {roles["gender"]: [chip["gender"]]}, label=f"{text} [{chip['gender']}]"))
        cases += chip_cases(rows, roles, args.chips, rng)
        cases += [Case(text, False, "absent") for text in ABSENT]
        if "gender" in roles:
            commonest = Counter(row.get(roles["gender"]) for row in rows).most_common(1)[0][0]
            cases += [Case(text, False, "absent under a chip", {roles["gender"]: [commonest]}, label=f"{text} [{commonest}]") for text in ABSENT]
        types = Counter(row.get(roles["type"]) for row in rows) if "type" in roles else Counter()
        cases += photo_cases(args.shards, {row["id"] for row in rows}, types, args.photos, rng)
        cases += [Case(None, False, "image: drawing", image=image, label=label) for label, image in drawings()]

        results, seconds = {}, {}
        for method in ("titles", "shopper"):
            start = time.perf_counter()
            calibration = calibrate(store, encode, method)
            seconds[method] = time.perf_counter() - start
            results[method] = judged(ranker, model, cases, calibration)
        print(f"\n{name}: {store.stats()['products']} products, roles {dict(sorted(roles.items()))}; calibration took "
              f"{seconds['titles']:.1f} s before, {seconds['shopper']:.1f} s after (once per index generation)")
        print("| queries | n | before (titles): quiet / fires | after (shopper queries): quiet / fires |")
        print("|---|---|---|---|")
        kinds = list(dict.fromkeys(c.kind for c in cases))
        groups = [(kind, [i for i, c in enumerate(cases) if c.kind == kind]) for kind in kinds]
        groups += [("all answerable", [i for i, c in enumerate(cases) if c.answerable]),
                   ("all absent", [i for i, c in enumerate(cases) if not c.answerable])]
        for label, rows_of in groups:
            answerable = cases[rows_of[0]].answerable
            cells = []
            for method in ("titles", "shopper"):
                verdicts = [results[method][i]["close_match"] for i in rows_of]
                if all(v is None for v in verdicts):
                    cells.append("not judged")
                    continue
                share = np.mean([v is not False for v in verdicts]) if answerable else np.mean([v is False for v in verdicts])
                cells.append(f"quiet {share:.3f}" if answerable else f"fires {share:.3f}")
            print(f"| {label} | {len(rows_of)} | {cells[0]} | {cells[1]} |")
        for method in ("titles", "shopper"):
            alarms = [cases[i].label or cases[i].text for i, c in enumerate(cases) if c.answerable and results[method][i]["close_match"] is False]
            misses = [cases[i].label or cases[i].text for i, c in enumerate(cases) if not c.answerable and results[method][i]["close_match"] is not False]
            when = "before" if method == "titles" else "after"
            print(f"false alarms {when} ({len(alarms)}): {', '.join(alarms) or '-'}")
            print(f"absent not flagged {when} ({len(misses)}): {', '.join(misses) or '-'}")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
