"""open_clip checkpoints (e.g. OpenFashionCLIP's `{'CLIP': state_dict}` ViT-B/32), mapped onto transformers' CLIP.

open_clip itself needs torchvision, which vitrine cannot depend on, so its state dict is
translated key by key onto `transformers.CLIPModel`, which computes the same function.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from vitrine.data.transforms import ImageTransform
from vitrine.errors import InvalidInput, MissingFile
from vitrine.models.hf import HFEncoder

# Architectures whose MLP uses QuickGELU (OpenAI's originals); open_clip's plain names use GELU.
_QUICKGELU_SUFFIX = "-quickgelu"
KNOWN_ARCHS = ("ViT-B-32", "ViT-B-16", "ViT-L-14")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load an open_clip checkpoint, unwrapping `{'CLIP': ...}` / `{'state_dict': ...}` and DDP's `module.`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"open_clip checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("CLIP", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or "visual.conv1.weight" not in {k.removeprefix("module.") for k in state}:
        raise InvalidInput(f"{path} is not an open_clip ViT checkpoint (no visual.conv1.weight)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max(int(m.group(1)) for k in state if (m := pattern.match(k)))


def infer_config(state: dict[str, torch.Tensor], quick_gelu: bool):
    """Read the architecture off the tensor shapes (open_clip uses width // 64 attention heads)."""
    from transformers import CLIPConfig

    v_width, _, patch, _ = state["visual.conv1.weight"].shape
    n_positions = state["visual.positional_embedding"].shape[0]
    grid = round((n_positions - 1) ** 0.5)
    t_width = state["ln_final.weight"].shape[0]
    act = "quick_gelu" if quick_gelu else "gelu"
    vision = dict(
        hidden_size=v_width,
        intermediate_size=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=_count_layers(state, "visual.transformer.resblocks."),
        num_attention_heads=max(1, v_width // 64),
        image_size=grid * patch,
        patch_size=patch,
        hidden_act=act,
        layer_norm_eps=1e-5,
    )
    text = dict(
        vocab_size=state["token_embedding.weight"].shape[0],
        hidden_size=t_width,
        intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=_count_layers(state, "transformer.resblocks."),
        num_attention_heads=max(1, t_width // 64),
        max_position_embeddings=state["positional_embedding"].shape[0],
        hidden_act=act,
        layer_norm_eps=1e-5,
        # eos id 2 makes transformers pool at argmax(input_ids): open_clip's end-of-text token is the largest id.
        eos_token_id=2,
        bos_token_id=0,
        pad_token_id=1,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=state["text_projection"].shape[1])


_BLOCK_PAIRS = {
    "attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def _map_block(state: dict, src: str, dst: str, out: dict) -> None:
    weight, bias = state[f"{src}.attn.in_proj_weight"], state[f"{src}.attn.in_proj_bias"]
    for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3, dim=0), bias.chunk(3, dim=0)):
        out[f"{dst}.self_attn.{name}.weight"] = w
        out[f"{dst}.self_attn.{name}.bias"] = b
    for a, b in _BLOCK_PAIRS.items():
        out[f"{dst}.{b}.weight"] = state[f"{src}.{a}.weight"]
        out[f"{dst}.{b}.bias"] = state[f"{src}.{a}.bias"]


def map_state_dict(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """open_clip key names -> transformers CLIPModel key names."""
    out: dict[str, torch.Tensor] = {
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].t().contiguous(),
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].t().contiguous(),
        "logit_scale": state["logit_scale"].reshape(()),
    }
    for i in range(config.vision_config.num_hidden_layers):
        _map_block(state, f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}", out)
    for i in range(config.text_config.num_hidden_layers):
        _map_block(state, f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}", out)
    return out


def unmap_state_dict(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """transformers CLIPModel key names -> open_clip key names (the inverse of `map_state_dict`)."""
    out = {
        "visual.proj": state["visual_projection.weight"].t().contiguous(),
        "text_projection": state["text_projection.weight"].t().contiguous(),
        "logit_scale": state["logit_scale"].reshape(()),
    }
    singles = {
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
    }
    out.update({mine: state[theirs] for mine, theirs in singles.items()})
    blocks = [
        (f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}")
        for i in range(config.vision_config.num_hidden_layers)
    ]
    blocks += [
        (f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}")
        for i in range(config.text_config.num_hidden_layers)
    ]
    for mine, theirs in blocks:
        for kind in ("weight", "bias"):
            out[f"{mine}.attn.in_proj_{kind}"] = torch.cat(
                [state[f"{theirs}.self_attn.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj")]
            )
            for a, b in _BLOCK_PAIRS.items():
                out[f"{mine}.{a}.{kind}"] = state[f"{theirs}.{b}.{kind}"]
    return out


OPEN_CLIP_FILE = "open_clip_model.pt"


class OpenClipEncoder(HFEncoder):
    """An open_clip checkpoint run as a transformers CLIPModel; it saves in both formats."""

    def __init__(self, model, tokenizer, image_transform: ImageTransform, name: str, arch: str):
        super().__init__(model, tokenizer, image_transform, name)
        self.arch = arch

    def save(self, directory: str | os.PathLike) -> Path:
        """The transformers directory (`hf:DIR`), plus the open_clip checkpoint `openclip:ARCH@DIR/open_clip_model.pt`
        reads."""
        directory = super().save(directory)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save({"state_dict": unmap_state_dict(state, self.model.config)}, directory / OPEN_CLIP_FILE)
        return directory

    def saved_name(self, directory: str | os.PathLike) -> str:
        return f"openclip:{self.arch}@{Path(directory).resolve() / OPEN_CLIP_FILE}"


def find_tokenizer_dir(checkpoint: Path) -> Path:
    """The CLIP BPE tokenizer files (vocab.json + merges.txt, or tokenizer.json) beside the checkpoint."""
    for folder in (checkpoint.parent / "tokenizer", checkpoint.parent):
        if (folder / "tokenizer.json").is_file() or (
            (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
        ):
            return folder
    raise MissingFile(
        f"no CLIP tokenizer beside {checkpoint}: put vocab.json + merges.txt (or tokenizer.json) from any "
        f"transformers CLIP checkpoint in {checkpoint.parent / 'tokenizer'}"
    )


def load_openclip(spec: str) -> HFEncoder:
    """`<arch>@<checkpoint path>`, e.g. `ViT-B-32@/models/openfashionclip.pt`."""
    arch, sep, checkpoint = spec.partition("@")
    if not sep or not checkpoint:
        raise InvalidInput(
            f"openclip models are named openclip:<arch>@<checkpoint>, e.g. "
            f"openclip:ViT-B-32@/models/finetuned_clip.pt; got openclip:{spec}"
        )
    from transformers import CLIPModel, CLIPTokenizerFast, PreTrainedTokenizerFast

    quick_gelu = arch.endswith(_QUICKGELU_SUFFIX)
    state = read_state_dict(checkpoint)
    config = infer_config(state, quick_gelu)
    model = CLIPModel(config)
    mapped = map_state_dict(state, config)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise InvalidInput(
            f"openclip:{spec}: checkpoint does not fit {arch}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    folder = find_tokenizer_dir(Path(checkpoint))
    if (folder / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="<|endoftext|>")
    else:
        tokenizer = CLIPTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    transform = ImageTransform(size=config.vision_config.image_size, pad="none")
    return OpenClipEncoder(model, tokenizer, transform, f"openclip:{spec}", arch)
