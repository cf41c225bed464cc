"""The open_clip -> transformers key mapping, checked against an independent open_clip-style forward pass."""

import pytest
import torch
import torch.nn.functional as F
from tests.support.random_checkpoints import openclip_state_dict, write_openclip
from torch import nn

from vitrine.models import create_model
from vitrine.models.openclip import read_state_dict


def _block(x, sd, p, heads, act, mask=None):
    width = x.shape[-1]
    attn = nn.MultiheadAttention(width, heads, batch_first=True)
    attn.load_state_dict(
        {
            "in_proj_weight": sd[f"{p}.attn.in_proj_weight"], "in_proj_bias": sd[f"{p}.attn.in_proj_bias"],
            "out_proj.weight": sd[f"{p}.attn.out_proj.weight"], "out_proj.bias": sd[f"{p}.attn.out_proj.bias"],
        }
    )
    y = F.layer_norm(x, (width,), sd[f"{p}.ln_1.weight"], sd[f"{p}.ln_1.bias"])
    x = x + attn(y, y, y, need_weights=False, attn_mask=mask)[0]
    y = F.layer_norm(x, (width,), sd[f"{p}.ln_2.weight"], sd[f"{p}.ln_2.bias"])
    y = F.linear(y, sd[f"{p}.mlp.c_fc.weight"], sd[f"{p}.mlp.c_fc.bias"])
    y = y * torch.sigmoid(1.702 * y) if act == "quick_gelu" else F.gelu(y)
    return x + F.linear(y, sd[f"{p}.mlp.c_proj.weight"], sd[f"{p}.mlp.c_proj.bias"])


def reference_image(sd, pixels, act="gelu", layers=2):
    """open_clip's VisionTransformer.forward, written out from its state-dict names."""
    width, _, patch, _ = sd["visual.conv1.weight"].shape
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (width,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    for i in range(layers):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}", width // 64, act)
    pooled = F.layer_norm(x[:, 0], (width,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    return F.normalize(pooled @ sd["visual.proj"], dim=-1)


def reference_text(sd, ids, act="gelu", layers=2):
    """open_clip's encode_text: causal transformer, pooled at the end-of-text (argmax) token."""
    width = sd["ln_final.weight"].shape[0]
    length = ids.shape[1]
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    for i in range(layers):
        x = _block(x, sd, f"transformer.resblocks.{i}", width // 64, act, mask=causal)
    x = F.layer_norm(x, (width,), sd["ln_final.weight"], sd["ln_final.bias"])
    pooled = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
    return F.normalize(pooled @ sd["text_projection"], dim=-1)


@pytest.mark.parametrize("arch,act", [("ViT-B-32", "gelu"), ("ViT-B-32-quickgelu", "quick_gelu")])
def test_mapped_model_matches_open_clip_forward(tmp_path, arch, act):
    path = write_openclip(tmp_path)
    model = create_model(f"openclip:{arch}@{path}")
    sd = openclip_state_dict()
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    batch = model.tokenize(["a red dress", "blue jeans for men"])
    with torch.no_grad():
        assert torch.allclose(model.encode_image(pixels), reference_image(sd, pixels, act), atol=1e-5)
        ours = model.text_features_from_tokens(batch).embeds
        assert torch.allclose(ours, reference_text(sd, batch["input_ids"], act), atol=1e-5)
    assert model.model.config.vision_config.num_attention_heads == 2  # width 128 // 64


def test_checkpoint_wrappers_and_clear_errors(tmp_path):
    path = write_openclip(tmp_path)
    assert "visual.conv1.weight" in read_state_dict(path)  # {'CLIP': ...} and 'module.' unwrapped
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an open_clip ViT checkpoint"):
        read_state_dict(tmp_path / "other.pt")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    torch.save(openclip_state_dict(), lonely / "ckpt.pt")
    with pytest.raises(FileNotFoundError, match="no CLIP tokenizer"):
        create_model(f"openclip:ViT-B-32@{lonely / 'ckpt.pt'}")
