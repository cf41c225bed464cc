"""Tiny catalogs that the tests write themselves: coloured JPEGs with KAGL-style metadata."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from PIL import Image
from tests.support import browser as support_browser
from tests.support import data as support_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ONNX exports made by the default runtime go to a temporary cache of this test run, never the user's ~/.cache. The
# first pytest process makes it; the test processes it starts (pytest -n N) and the servers the tests start inherit
# it, so each model is exported once per run (the cache's lock lets one process export while the others wait).
if "VITRINE_TEST_ONNX_CACHE" not in os.environ:
    _ONNX_CACHE = tempfile.TemporaryDirectory(prefix="vitrine-onnx-cache-")
    os.environ["VITRINE_TEST_ONNX_CACHE"] = _ONNX_CACHE.name
os.environ["VITRINE_ONNX_CACHE"] = os.environ["VITRINE_TEST_ONNX_CACHE"]
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # test processes (pytest -n N) share the cores: split torch's threads
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

COLOURS = {
    "Red": (200, 30, 30), "Blue": (30, 30, 200), "Green": (30, 160, 40), "Black": (10, 10, 10),
    "White": (245, 245, 245),
}
TYPES = ["Tshirts", "Jeans", "Dresses", "Watches"]
FIELDS = [
    "id", "title", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage",
]


def require_scale(module: str):
    """Import one of the `scale` extra's packages, or skip; in CI (VITRINE_REQUIRE_SCALE=1) a missing one fails."""
    if os.environ.get("VITRINE_REQUIRE_SCALE"):
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is missing: pip install -e '.[scale]' (CI requires it)")


def jpeg_bytes(colour=(200, 30, 30), size=(60, 80), mode="RGB", fmt="JPEG") -> bytes:
    image = Image.new("RGB", size, (255, 255, 255))
    inner = Image.new("RGB", (size[0] // 2, size[1] // 2), colour)
    image.paste(inner, (size[0] // 4, size[1] // 4))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        kind = TYPES[i % len(TYPES)]
        rows.append(
            {
                "id": str(1000 + i), "title": f"Brand {i} {colour} {kind}", "gender": ["Men", "Women"][i % 2],
                "masterCategory": "Apparel", "subCategory": "Topwear", "articleType": kind, "baseColour": colour,
                "season": "Summer", "year": "2012", "usage": "Casual" if i % 3 else "NA",
            }
        )
    return rows


def write_shards(folder, rows, per_shard=4, images: dict | None = None) -> list[str]:
    """WebDataset shards: `<id>.jpg` + `<id>.json` per row; `images` overrides an id's image bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(rows), per_shard):
        path = folder / f"test-{start // per_shard:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for row in rows[start : start + per_shard]:
                members = {
                    "jpg": (images or {}).get(row["id"], jpeg_bytes(COLOURS[row["baseColour"]])),
                    "json": json.dumps(row).encode(),
                }
                for ext, data in members.items():
                    if data is None:
                        continue
                    info = tarfile.TarInfo(f"{row['id']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(str(path))
    return paths


KAGL = str(support_data.KAGL)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_data(*paths): reads these paths under ../shared/data (tests/support/data.py)"
    )


# The test files that take longest (their summed `pytest --durations=0` seconds in a full run, 2026-12-04), run first:
# with one process per core (`--dist loadfile`), the long ones start at once and the short ones fill in around them,
# instead of a long file starting last and running alone.
LONGEST_FIRST = [
    "tests/embed/test_ray_engine.py",
    "tests/serve/test_milvus_faults.py",
    "tests/serve/test_crash_consistency.py",
    "tests/train/test_distributed.py",
    "tests/index/test_store_milvus_server.py",
    "tests/index/test_store_conformance.py",
    "tests/serve/test_service.py",
    "tests/tagging/test_shipped_tags_on_hires.py",
    "tests/docs/test_readme_own_catalog.py",
    "tests/models/test_shipped_on_hires.py",
    "tests/docs/test_readme_walkthrough.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest as collected


def pytest_runtest_setup(item):
    support_data.check_data(item)


def write_kagl_subset(path, items: int) -> str:
    """One shard holding the first `items` real KAGL products (their 60x80 images and metadata) of its first shard."""
    source = os.path.join(KAGL, "shards", "kagl-000000.tar")
    keys: list[str] = []
    with tarfile.open(source) as tar, tarfile.open(path, "w") as out:
        for member in tar:
            key = member.name.rsplit(".", 1)[0]
            if key not in keys:
                if len(keys) == items:
                    break
                keys.append(key)
            out.addfile(member, tar.extractfile(member))
    return str(path)


def write_folder(folder, rows, fmt="csv", images: dict | None = None):
    """images/<id>.jpg plus catalog.csv or catalog.jsonl; `images[id] = None` leaves the file out."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        data = (images or {}).get(row["id"], jpeg_bytes(COLOURS.get(row["baseColour"], (0, 0, 0))))
        if data is not None:
            (folder / "images" / f"{row['id']}.jpg").write_bytes(data)
    if fmt == "csv":
        with open(folder / "catalog.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        with open(folder / "catalog.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return folder


def colourway_rows(brands=("Puma", "Nike", "Adidas"), id_prefix: str = "") -> list[dict]:
    """Brands x (Tshirts, Jeans) x every colour: groups of colourways that colour triplets pair up."""
    rows = []
    for brand in brands:
        for article in ("Tshirts", "Jeans"):
            for colour in COLOURS:
                rows.append({
                    "id": f"{id_prefix}{101 + len(rows)}", "title": f"{brand} Men {colour} Classic {article}",
                    "gender": "Men", "masterCategory": "Apparel", "subCategory": "Topwear", "articleType": article,
                    "baseColour": colour, "season": "Summer", "year": "2012", "usage": "Casual",
                })
    return rows


def colour_triplets(catalog, out) -> str:
    """`vitrine data make-triplets --kinds colour` over `catalog` into `out` (reference, "in <colour>", target)."""
    from vitrine.cli import main

    assert main(["data", "make-triplets", "--data", str(catalog), "--out", str(out), "--kinds", "colour"]) == 0
    return str(out)


def cir_catalog(root, rows: list[dict] | None = None):
    """The colourway catalog at root/cat with its colour triplets at root/all.jsonl; returns `root`."""
    write_folder(root / "cat", rows if rows is not None else colourway_rows())
    colour_triplets(root / "cat", root / "all.jsonl")
    return root


def cir_config(root, **overrides):
    """A small CIR training config over `cir_catalog(root)` (triplets validated on themselves, the small model)."""
    from vitrine.cir.config import CirTrainConfig

    base = dict(
        data=(str(root / "cat"),), triplets=str(root / "all.jsonl"), val_triplets=str(root / "all.jsonl"),
        model="vitrine:small", batch_size=16, lr=1e-3, warmup_steps=1, cache_dir=str(root / "cache"),
    )
    return CirTrainConfig(**{**base, **overrides})


STRANGER_COLUMNS = {"id": "sku", "title": "name", "baseColour": "colour", "articleType": "category", "gender": "sex"}


def write_stranger_folder(folder, rows, blank_every: int = 5) -> str:
    """A shop's own catalog: `sku,name,photo,colour,category,sex,price`, string ids, photos under pics/ named by the
    photo column, and every `blank_every`-th colour cell blank (or NA)."""
    (folder / "pics").mkdir(parents=True, exist_ok=True)
    header = ["sku", "name", "photo", "colour", "category", "sex", "price"]
    with open(folder / "catalog.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, row in enumerate(rows):
            photo = f"pics/p-{row['id']}.jpg"
            (folder / photo).write_bytes(jpeg_bytes(COLOURS.get(row["baseColour"], (0, 0, 0))))
            colour = (
                ("" if i % 2 else "NA") if blank_every and i % blank_every == blank_every - 1 else row["baseColour"]
            )
            writer.writerow(
                [f"SKU-{row['id']}", row["title"], photo, colour, row["articleType"], row["gender"], f"{9.5 + i:.2f}"]
            )
    return str(folder)


@pytest.fixture
def rows():
    return make_rows(10)


@pytest.fixture(scope="session")
def small_model():
    from vitrine.models import create_model

    return create_model("vitrine:small")


def built_index(root, model, products: int) -> str:
    """A folder catalog of `products` generated rows under `root`, indexed with `model`; the index's path."""
    from vitrine.index.build import build_index

    write_folder(root / "catalog", make_rows(products))
    build_index(str(root / "catalog"), str(root / "index"), model, progress=False)
    return str(root / "index")


SMALL_SERVE = {"tag_model": "vitrine:small", "combiner": "sum"}  # the served test set-up: small tagger, sum combiner


def prepared_index(catalog, index: str, rows: list[dict] | None = None, **settings) -> str:
    """`rows` (when given) written as a folder catalog at `catalog`, then indexed into `index` as `vitrine serve
    --catalog` does (vectors, predicted tags, images) with the small random model; returns `index`."""
    from vitrine.serve.prepare import prepare_index
    from vitrine.serve.settings import ServeSettings

    if rows is not None:
        write_folder(catalog, rows)
    prepare_index(
        str(catalog), ServeSettings(index=index, **{**SMALL_SERVE, **settings}), "vitrine:small", progress=False
    )
    return index


def copy_index(source, tmp_path) -> Path:
    """A test's own copy of a module's index, so that its writes never leak into another test."""
    shutil.copytree(source, Path(tmp_path) / "index")
    return Path(tmp_path) / "index"


def served(index: str):
    """A test client of the app on `index` (small tag model, the sum combiner), closed with its service."""
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app
    from vitrine.serve.settings import ServeSettings

    app = create_app(ServeSettings(index=index, tag_model="vitrine:small", combiner="sum"))
    with TestClient(app) as client:
        yield client
    app.state.service.close()


@pytest.fixture(scope="module")
def http(index):
    """A test client of the app on the module's own `index` fixture."""
    yield from served(index)


@pytest.fixture(scope="module")
def browser():
    """Chromium, one per test module (its module calls tests.support.browser.require_browser() first)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = support_browser.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path):
    """Where a browser test saves its screenshots."""
    return support_browser.screenshot_folder(tmp_path)


# A real Milvus server for the whole session (or a skip that says why): tests/support/milvus_server.py.
from tests.support.milvus_server import milvus_server  # noqa: E402,F401
