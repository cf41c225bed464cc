"""FileTokenizer (ONNX exports' tokenizer without transformers) gives exactly transformers' ids and masks."""

from __future__ import annotations

import pytest
import torch
from tests.support.random_checkpoints import bert_tokenizer, write_tiny_clip_bpe

from vitrine.models.file_tokenizer import FileTokenizer

TEXTS = [
    "Men Navy Blue Solid Polo T-shirt", "", "a red dress", "Ünïcödé scarf — 100% silk, hand-wash ✓",
    " ".join(["very long title"] * 40), "UPPER case and   extra   spaces", "kurta",
]


def saved(kind: str, folder):
    if kind == "bert":
        tokenizer = bert_tokenizer()
    else:
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(write_tiny_clip_bpe(folder / "bpe") / "tokenizer.json"), pad_token="<|endoftext|>"
        )
    tokenizer.save_pretrained(folder / "saved")
    return folder / "saved"


@pytest.mark.parametrize("kind", ["bert", "clip-bpe"])
@pytest.mark.parametrize("padding", [True, "max_length"])
def test_ids_and_masks_equal_transformers(tmp_path, kind, padding):
    from transformers import AutoTokenizer

    folder = saved(kind, tmp_path)
    assert FileTokenizer.usable(folder)
    for max_length in (8, 64):
        ours = FileTokenizer(folder, max_length, padding)(TEXTS)
        theirs = AutoTokenizer.from_pretrained(str(folder))(
            TEXTS, padding=padding, truncation=True, max_length=max_length, return_tensors="pt"
        )
        assert torch.equal(ours["input_ids"], theirs["input_ids"]) and torch.equal(
            ours["attention_mask"], theirs["attention_mask"]
        )
        assert ours["input_ids"].shape[1] == (max_length if padding == "max_length" else theirs["input_ids"].shape[1])
