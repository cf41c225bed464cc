"""Image embeddings of whole catalogs, computed once per (model weights, catalog files) and cached on disk.

Stage-2 training, composed evaluation and the evaluation protocols rank against the same galleries again and
again; this is what makes them cheap on CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitrine.data.catalog import open_catalog
from vitrine.data.records import Item
from vitrine.embed.encode import encode_catalog
from vitrine.errors import InvalidInput


@dataclass
class ImageBank:
    """Unit-norm image embeddings of every product of some catalogs, with their metadata."""

    items: list[Item]
    embeds: torch.Tensor  # (N, D)
    tokens: torch.Tensor | None = None  # (N, T, W) float16 image-tower tokens, for token-reading combiners (AGCN)

    def __post_init__(self):
        self.row = {item.id: i for i, item in enumerate(self.items)}

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]


def built_model_fingerprint(model) -> str:
    """A hash of a built model's name and weights (the key of its feature caches), so a retrained model never reuses
    stale features. `vitrine.models.model_files_fingerprint` is the other kind: a model name's files, unbuilt."""
    digest = hashlib.sha1(model.name.encode())
    runtime = getattr(model, "runtime", "torch")
    if runtime != "torch":  # an ONNX export holds no torch weights: its directory names the weights' digest
        digest.update(f"{runtime}:{getattr(model, 'directory', '')}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _data_fingerprint(path: str) -> str:
    """Paths, sizes and modification times of the catalog's files."""
    root = Path(path)
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    parts = [f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
    if not parts:
        parts = [os.path.abspath(path)]  # a brace/glob spec: resolved by the reader
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def bank_folder(model, path: str, cache_dir: str | os.PathLike) -> Path:
    """Where the bank of `path` under `model` is (or would be) cached."""
    return Path(cache_dir) / "features" / f"{built_model_fingerprint(model)}-{_data_fingerprint(path)}"


def image_bank(
    model, paths: Sequence[str], cache_dir: str | os.PathLike | None = "runs/cache", schema=None,
    on_error: str = "skip", progress: bool = True, with_tokens: bool = False,
) -> ImageBank:
    """Embeddings (and with `with_tokens` the image tokens) of every product in `paths` (ids unique across
    them), from the cache when it is current."""
    items: list[Item] = []
    chunks: list[torch.Tensor] = []
    token_chunks: list[torch.Tensor] = []
    fingerprint = built_model_fingerprint(model) if cache_dir is not None else ""
    for path in paths:
        folder = (
            Path(cache_dir) / "features" / f"{fingerprint}-{_data_fingerprint(path)}" if cache_dir is not None else None
        )
        if folder is not None and (folder / "items.json").is_file():
            part_items = [
                Item(
                    id=d["id"], image=None, title=d["title"], attributes=d["attributes"], source=d["source"],
                    row=d["row"],
                )
                for d in json.loads((folder / "items.json").read_text(encoding="utf-8"))
            ]
            part = torch.from_numpy(np.load(folder / "embeds.npy"))
        else:
            reader = open_catalog(path, schema=schema, on_error=on_error, require_title=False)
            part_items, part = encode_catalog(model, reader, progress=progress, desc=f"embed {Path(path).name}")
            if reader.report.skipped:
                reader.report.print_summary()
            if folder is not None:
                _save(folder, part_items, part)
        if with_tokens:
            token_chunks.append(_bank_tokens(model, path, part_items, folder, schema, progress))
        items += part_items
        chunks.append(part)
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InvalidInput(f"product id {item.id} appears in more than one gallery catalog")
        seen.add(item.id)
    tokens = torch.cat(token_chunks) if token_chunks else None
    return ImageBank(items, torch.cat(chunks) if chunks else torch.zeros(0, model.embed_dim), tokens)


def _bank_tokens(model, path: str, items: list[Item], folder: Path | None, schema, progress: bool) -> torch.Tensor:
    """(N, T, W) float16 image tokens in `items` order, cached as tokens.npy beside the embeddings."""
    from tqdm import tqdm

    from vitrine.data.loader import iter_batches

    if folder is not None and (folder / "tokens.npy").is_file():
        return torch.from_numpy(np.load(folder / "tokens.npy"))
    row = {item.id: i for i, item in enumerate(items)}
    reader = open_catalog(path, schema=schema, on_error="skip", require_title=False)
    out = None
    bar = tqdm(
        total=len(items), desc=f"image tokens {Path(path).name}", unit="img", disable=not progress, dynamic_ncols=True
    )
    with torch.inference_mode():
        for batch in iter_batches(reader, model.image_transform, 64):
            tokens = model.image_features(batch.pixels.to(model.device)).tokens.to(torch.float16).cpu()
            if out is None:
                out = torch.zeros(len(items), *tokens.shape[1:], dtype=torch.float16)
            for item, t in zip(batch.items, tokens):
                if item.id in row:
                    out[row[item.id]] = t
            bar.update(len(batch.items))
    bar.close()
    if out is None:
        raise InvalidInput(f"no images in {path} to take tokens from")
    if folder is not None:
        tmp = folder / "tokens.tmp.npy"
        np.save(tmp, out.numpy())
        os.replace(tmp, folder / "tokens.npy")
    return out


def _save(folder: Path, items: list[Item], embeds: torch.Tensor) -> None:
    """Embeddings first, the item list last: the item list is the commit marker."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "embeds.tmp.npy"
    np.save(tmp, embeds.numpy())
    os.replace(tmp, folder / "embeds.npy")
    rows = [{"id": i.id, "title": i.title, "attributes": i.attributes, "source": i.source, "row": i.row} for i in items]
    tmp = folder / "items.tmp.json"
    tmp.write_text(json.dumps(rows), encoding="utf-8")
    os.replace(tmp, folder / "items.json")
