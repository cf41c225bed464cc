"""A saved fast tokenizer (`tokenizer.json`) run by the `tokenizers` library alone: the ids and mask transformers'
AutoTokenizer gives, without importing transformers (about 1.6 s of every ONNX process's start-up)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from vitrine.errors import InvalidInput


class FileTokenizer:
    """Tokenise, truncate to `max_length` and pad (to the longest text, or to `max_length`) as the export recorded."""

    def __init__(self, directory: str | os.PathLike, max_length: int, padding: bool | str = True):
        from tokenizers import Tokenizer

        directory = Path(directory)
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        pad_token = config.get("pad_token")
        if isinstance(pad_token, dict):  # an AddedToken written out in full
            pad_token = pad_token.get("content")
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        pad_id = self.tokenizer.token_to_id(pad_token) if pad_token else None
        if pad_id is None:
            raise InvalidInput(f"{directory}: pad token {pad_token!r} is not in the vocabulary")
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(
            pad_id=pad_id, pad_token=pad_token, length=max_length if padding == "max_length" else None
        )

    @classmethod
    def usable(cls, directory: str | os.PathLike) -> bool:
        """Whether the export holds what this tokenizer reads (older or slow-tokenizer exports need transformers)."""
        directory = Path(directory)
        return (directory / "tokenizer.json").is_file() and (directory / "tokenizer_config.json").is_file()

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(list(texts))
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
        }
