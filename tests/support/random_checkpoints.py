"""Random-weight checkpoints in each external format: tiny ones for tests, full-size ones for benchmarks (test
support: not part of the installed package)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

TINY_TEXT = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16
)
TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)


def bert_tokenizer():
    from transformers import AutoTokenizer

    from vitrine.models.towers import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


# ViT-B/32 sizes, as in FashionCLIP and OpenFashionCLIP.
BASE_TEXT = dict(
    hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77
)
BASE_VISION = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32
)


def write_hf_clip(folder: Path, text: dict = TINY_TEXT, vision: dict = TINY_VISION, projection_dim: int = 24) -> Path:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    tokenizer = bert_tokenizer()
    config = CLIPConfig(
        text_config={
            **text,
            "vocab_size": tokenizer.vocab_size,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.cls_token_id,
        },
        vision_config=vision,
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    size = vision["image_size"]
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": size, "width": size}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3,
                "resample": 3,
            }
        )
    )
    return folder


def write_hf_siglip(folder: Path, text: dict = TINY_TEXT, vision: dict = TINY_VISION) -> Path:
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    tokenizer = bert_tokenizer()
    config = SiglipConfig(text_config={**text, "vocab_size": tokenizer.vocab_size}, vision_config=vision)
    model = SiglipModel(config)
    with (
        torch.no_grad()
    ):  # the SigLIP paper's initial temperature and bias (t' = log 10, b = -10), as real checkpoints start
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_clip_bpe(folder: Path) -> Path:
    """A CLIP-style BPE tokenizer over letters; <|endoftext|> has the largest id, as in OpenAI's vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {ch: i for i, ch in enumerate(letters)}
    vocab.update({f"{ch}</w>": 26 + i for i, ch in enumerate(letters)})
    vocab["<|startoftext|>"] = 52
    vocab["<|endoftext|>"] = 53
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 52), ("<|endoftext|>", 53)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def openclip_state_dict(
    width=128, layers=2, patch=16, image=32, ctx=16, vocab=54, embed=24, seed=0, text_width=None
) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as open_clip's VisionTransformer + text Transformer."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    grid = image // patch
    text_width = text_width or width
    sd = {
        "visual.conv1.weight": r(width, 3, patch, patch), "visual.class_embedding": r(width),
        "visual.positional_embedding": r(grid * grid + 1, width), "visual.ln_pre.weight": 1 + r(width),
        "visual.ln_pre.bias": r(width), "visual.ln_post.weight": 1 + r(width), "visual.ln_post.bias": r(width),
        "visual.proj": r(width, embed), "token_embedding.weight": r(vocab, text_width),
        "positional_embedding": r(ctx, text_width), "ln_final.weight": 1 + r(text_width),
        "ln_final.bias": r(text_width), "text_projection": r(text_width, embed), "logit_scale": torch.tensor(4.6052),
    }
    for prefix, width in (("visual.transformer", width), ("transformer", text_width)):
        for i in range(layers):
            p = f"{prefix}.resblocks.{i}"
            sd.update(
                {
                    f"{p}.ln_1.weight": 1 + r(width), f"{p}.ln_1.bias": r(width),
                    f"{p}.attn.in_proj_weight": r(3 * width, width), f"{p}.attn.in_proj_bias": r(3 * width),
                    f"{p}.attn.out_proj.weight": r(width, width), f"{p}.attn.out_proj.bias": r(width),
                    f"{p}.ln_2.weight": 1 + r(width), f"{p}.ln_2.bias": r(width),
                    f"{p}.mlp.c_fc.weight": r(4 * width, width), f"{p}.mlp.c_fc.bias": r(4 * width),
                    f"{p}.mlp.c_proj.weight": r(width, 4 * width), f"{p}.mlp.c_proj.bias": r(width),
                }
            )
    return sd


def write_openclip(folder: Path, **kwargs) -> Path:
    """OpenFashionCLIP's release layout: `{'CLIP': state_dict}` in a .pt file, DDP `module.` prefixes included."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"module.{k}": v for k, v in openclip_state_dict(**kwargs).items()}
    path = folder / "finetuned_clip.pt"
    torch.save({"CLIP": state, "epoch": 3}, path)
    write_tiny_clip_bpe(folder / "tokenizer")
    return path
