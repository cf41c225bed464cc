"""transformers CLIP and SigLIP checkpoints (FashionCLIP, Marqo-FashionSigLIP, ...) behind vitrine's encoder
interface."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vitrine.data.transforms import CLIP_MEAN, CLIP_STD, ImageTransform
from vitrine.errors import InvalidInput, MissingFile
from vitrine.models.base import Encoder, Features, l2_normalize

_RESAMPLE_CODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}
PREPROCESSOR_NAME = "preprocessor_config.json"


def transform_from_preprocessor(path: str | os.PathLike, model_type: str, image_size: int) -> ImageTransform:
    """Rebuild the checkpoint's image preprocessing without transformers' image processors (no torchvision)."""
    file = Path(path) / PREPROCESSOR_NAME
    config = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    size = config.get("crop_size") or config.get("size") or image_size
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or image_size
    default_mean, default_std = ((0.5,) * 3, (0.5,) * 3) if model_type == "siglip" else (CLIP_MEAN, CLIP_STD)
    return ImageTransform(
        size=int(size),
        pad="none",
        stretch=model_type == "siglip",  # SigLIP resizes straight to a square; CLIP resizes then crops
        resample=_RESAMPLE_CODES.get(config.get("resample", 3), "bicubic"),
        mean=tuple(config.get("image_mean", default_mean)),
        std=tuple(config.get("image_std", default_std)),
    )


class HFEncoder(Encoder):
    """A transformers `CLIPModel` or `SiglipModel`, loaded from a local directory (never downloaded)."""

    onnx_exportable = True  # --runtime onnx|onnx-int8 and `vitrine export onnx` (vitrine.models.onnx_export)

    def __init__(self, model, tokenizer, image_transform: ImageTransform, name: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.name = name
        self.model_type = model.config.model_type
        self.embed_dim = int(getattr(model.config, "projection_dim", 0) or model.config.text_config.hidden_size)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        # SigLIP was trained on max-length padding; CLIP pools at the EOS token and is indifferent.
        self.padding: bool | str = "max_length" if self.model_type == "siglip" else True
        # The text output before the projection (`pooled_texts`): what a composed-query text projection and the
        # region recipe's cached text features read. SigLIP's projection is its text head (a linear layer with a bias).
        self.has_pooled_text = True
        self.eval()

    @classmethod
    def from_pretrained(cls, path: str, name: str | None = None) -> "HFEncoder":
        from transformers import AutoConfig, AutoTokenizer, CLIPModel, SiglipModel

        local = os.path.isdir(path)
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except OSError as exc:
            hint = (
                ""
                if local
                else " vitrine runs offline: download the checkpoint elsewhere and pass its directory, e.g. "
                "hf:/models/fashion-clip."
            )
            raise MissingFile(f"no transformers checkpoint at {path!r} ({exc.__class__.__name__}).{hint}") from None
        classes = {"clip": CLIPModel, "siglip": SiglipModel}
        if config.model_type not in classes:
            raise InvalidInput(f"hf:{path} is a {config.model_type!r} model; vitrine's hf backend takes clip or siglip")
        model = classes[config.model_type].from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        transform = transform_from_preprocessor(
            path if local else "", config.model_type, config.vision_config.image_size
        )
        return cls(model, tokenizer, transform, name or f"hf:{path}")

    # Fine-tuning (vitrine train clip|cir|regions with hf:/openclip: models).
    def parts(self) -> dict[str, nn.Module]:
        if self.model_type == "clip":
            return {
                "image_tower": self.model.vision_model, "text_tower": self.model.text_model,
                "image_proj": self.model.visual_projection, "text_proj": self.model.text_projection,
            }
        # SigLIP's projections are the towers' own heads (attention pooling for images, a linear layer for texts).
        return {
            "image_tower": self.model.vision_model, "text_tower": self.model.text_model,
            "image_proj": self.model.vision_model.head, "text_proj": self.model.text_model.head,
        }

    def tower_blocks(self, part: str) -> nn.ModuleList:
        return (self.model.vision_model if part == "image_tower" else self.model.text_model).encoder.layers

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    @property
    def logit_bias(self) -> torch.Tensor | None:
        return getattr(self.model, "logit_bias", None)

    def set_grad_checkpointing(self) -> None:
        self.model.gradient_checkpointing_enable()

    def save(self, directory: str | os.PathLike) -> Path:
        """A transformers directory (`save_pretrained`, the tokenizer, the image preprocessing) that `hf:DIR` loads
        back and that transformers reads outside vitrine."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        transform = self.image_transform
        resample = {name: code for code, name in _RESAMPLE_CODES.items()}.get(transform.resample, 3)
        (directory / PREPROCESSOR_NAME).write_text(
            json.dumps(
                {
                    "crop_size": {"height": transform.size, "width": transform.size},
                    "size": {"shortest_edge": transform.size},
                    "image_mean": list(transform.mean),
                    "image_std": list(transform.std),
                    "resample": resample,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        return directory

    def pooled_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, W) the text tower's output before `parts()["text_proj"]` (CLIP's `text_projection`, SigLIP's text
        head)."""
        return self.pooled_text_from_tokens({k: v.to(self.device) for k, v in self.tokenize(texts).items()})

    def pooled_text_from_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.model_type == "clip":
            return self.model.text_model(**batch).pooler_output
        # SigLIP's text tower was trained without a padding mask; its head reads the last position
        return self.model.text_model(input_ids=batch["input_ids"]).last_hidden_state[:, -1]

    def saved_name(self, directory: str | os.PathLike) -> str:
        """The name that loads what `save(directory)` wrote."""
        return f"hf:{Path(directory).resolve()}"

    def image_features(self, pixels: torch.Tensor) -> Features:
        out = self.model.vision_model(pixel_values=pixels)
        pooled = out.pooler_output
        if self.model_type == "clip":
            pooled = self.model.visual_projection(pooled)
        return Features(embeds=l2_normalize(pooled), tokens=out.last_hidden_state)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        return {"input_ids": batch["input_ids"], "attention_mask": mask}

    def text_features_from_tokens(self, batch: dict[str, torch.Tensor]) -> Features:
        # SigLIP's text tower was trained without a padding mask; the mask is still returned for token heads.
        inputs = batch if self.model_type == "clip" else {"input_ids": batch["input_ids"]}
        out = self.model.text_model(**inputs)
        pooled = out.pooler_output
        if self.model_type == "clip":
            pooled = self.model.text_projection(pooled)
        mask = batch.get("attention_mask")
        return Features(embeds=l2_normalize(pooled), tokens=out.last_hidden_state, mask=mask)
