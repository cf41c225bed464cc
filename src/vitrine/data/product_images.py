"""Chosen products' images, decoded once at a model's input geometry and held in memory as uint8."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import torch
from tqdm import tqdm

from vitrine.data.catalog import open_catalog
from vitrine.data.transforms import ImageTransform
from vitrine.errors import InvalidInput


def decode_products(
    catalogs: Sequence[str], ids: Collection[str], transform: ImageTransform, progress: bool = True
) -> tuple[dict[str, int], torch.Tensor]:
    """(row of each id, (N, 3, S, S) uint8) for the products of `ids` found in `catalogs`; a missing or
    undecodable product is an error, since the caller asked for it by name."""
    wanted, rows, pictures = set(ids), {}, []
    with tqdm(total=len(wanted), desc="decode product images", unit="img", disable=not progress) as bar:
        for path in catalogs:
            reader = open_catalog(path, on_error="skip", require_title=False)
            for record in reader.records():
                if record.id not in wanted or record.id in rows:
                    continue
                item = reader.decode_or_skip(record)
                if item is None:
                    continue
                rows[item.id] = len(pictures)
                pictures.append(np.asarray(transform.geometry(item.image), dtype=np.uint8).transpose(2, 0, 1))
                bar.update()
    missing = sorted(wanted - set(rows))
    if missing:
        raise InvalidInput(
            f"{len(missing)} products have no decodable image in {', '.join(catalogs)} (e.g. {missing[:3]})"
        )
    return rows, torch.from_numpy(np.stack(pictures)) if pictures else torch.zeros(
        0, 3, transform.size, transform.size, dtype=torch.uint8
    )
