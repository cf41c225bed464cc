"""The product views RaF-CLIP trains on: each product's whole image, its foreground crop and its segmented crop
(background blanked), cut once at the model's input geometry and cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vitrine.data.catalog import open_catalog
from vitrine.data.regions import Foreground, WholeImage, crop
from vitrine.data.splits import SplitConfig
from vitrine.errors import InvalidInput

VIEWS = ("whole", "crop", "segmented")


@dataclass
class RegionPool:
    """Every view of every product as uint8 (N, V, 3, S, S), with attributes, titles and splits."""

    views: torch.Tensor
    ids: list[str]
    titles: list[str | None]
    attributes: list[dict]
    splits: np.ndarray

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def product_views(image, transform, views, foreground: Foreground) -> np.ndarray:
    """(V, 3, S, S) uint8: the whole image, the foreground crop, the segmented crop (the whole image when no
    foreground)."""
    found = foreground(image)
    region = found[0] if found else WholeImage()(image)[0]
    pictures = {"whole": image, "crop": crop(image, region), "segmented": crop(image, region, segmented=True)}
    return np.stack([np.asarray(transform.geometry(pictures[v]), dtype=np.uint8).transpose(2, 0, 1) for v in views])


def load_region_pool(
    data: str, views: tuple[str, ...], transform, split: SplitConfig, cache_dir: str, schema: str | None = None,
    max_items: int | None = None, progress: bool = True,
) -> RegionPool:
    """Decode the train and val products of `split` once and cut their views; cached on disk (segmentation is the
    slow part)."""
    key = hashlib.sha1(
        json.dumps(
            [os.path.abspath(data), _catalog_stamp(data), list(views), max_items, repr(transform), asdict(split)],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    folder = Path(cache_dir) / "regions" / key
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        return RegionPool(
            torch.from_numpy(np.load(folder / "views.npy")), meta["ids"], meta["titles"], meta["attributes"],
            np.asarray(meta["splits"]),
        )
    reader = open_catalog(data, schema=schema, on_error="skip", require_title=False)
    foreground = Foreground()
    cut, ids, titles, attributes, splits = [], [], [], [], []
    for record in tqdm(
        reader.records(), total=reader.count() if progress else None, desc="cut regions", unit="img",
        disable=not progress,
    ):
        assigned = split.assign(record.id, record.attributes)
        if assigned not in ("train", "val"):
            continue
        if max_items is not None and len(ids) >= max_items:
            break
        item = reader.decode_or_skip(record)
        if item is None:
            continue
        cut.append(product_views(item.image, transform, views, foreground))
        ids.append(item.id)
        titles.append(item.title)
        attributes.append(dict(item.attributes))
        splits.append(assigned)
    if not ids:
        raise InvalidInput(f"no train or val products in {data}")
    pool = RegionPool(torch.from_numpy(np.stack(cut)), ids, titles, attributes, np.asarray(splits))
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "views.tmp.npy", pool.views.numpy())
    os.replace(folder / "views.tmp.npy", folder / "views.npy")
    (folder / "meta.tmp.json").write_text(
        json.dumps({"ids": ids, "titles": titles, "attributes": attributes, "splits": splits}), encoding="utf-8"
    )
    os.replace(folder / "meta.tmp.json", folder / "meta.json")  # written last: the cache's commit marker
    return pool


def _catalog_stamp(path: str) -> str:
    root = Path(path)
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    return hashlib.sha1(
        "".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()).encode()
    ).hexdigest()
