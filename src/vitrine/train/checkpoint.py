"""Training checkpoints: written atomically, so a kill mid-write leaves the previous one intact."""
from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(out: str | os.PathLike, state: dict) -> Path:
    path = Path(out) / CHECKPOINT_NAME
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(out: str | os.PathLike) -> dict | None:
    path = Path(out) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
