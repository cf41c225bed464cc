"""`vitrine export onnx`: an encoder's towers (vitrine's dual encoders, hf: CLIP/SigLIP, openclip:) as ONNX graphs, with
the tokenizer and preprocessing beside them.

An export directory holds:

- `image.onnx`: pixels (B, 3, S, S), preprocessed by the model's own `ImageTransform` -> `embeds` (B, D), unit norm;
- `text.onnx`: `input_ids`, `attention_mask` (B, L) -> `embeds` (B, D) and `pooled` (B, W), the text tower's output
  before its projection (what a Combiner's fine-tuned projection reads); SigLIP's graph takes no mask (its tower
  reads none) and its tokenizer pads to the maximum length (`padding` in the manifest);
- `text.int8.onnx` (optional): the text graph with int8 weights (dynamic quantisation, per channel);
- `tokenizer/`: the tokenizer files, and `runtime.json`: the model name, the transform, the text length, the files and
  the parity measured at export (cosine of ONNX vs torch, int8 vs fp32), which decides what may be mixed in an index.

Both batch axes (and the text length) are dynamic. The image graph has no int8 version: dynamic quantisation of the
convolutions measured 8x slower than fp32 on CPU (ConvInteger), so `onnx-int8` runs the image tower in fp32.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

import vitrine
from vitrine.errors import AlreadyExists, InvalidInput
from vitrine.models.onnx_runtime import RUNTIME_FILE, OnnxEncoder

FORMAT_VERSION = 1
OPSET = 17
PARITY_MIN_COSINE = 0.99  # int8 text vectors may meet fp32 ones (an index built by another runtime) at or above this
# Texts the parity at export is measured on: catalog-like titles and the tagging prompts' shape, short and long.
PROBE_TEXTS = (
    "a photo of a t-shirt", "a red dress", "Men Black Leather Wallet", "Women Blue Slim Fit Denim Jeans",
    "Nike Men White Running Shoes with laces", "a photo of a handbag, a fashion product", "kurta", "sunglasses",
    "Puma Unisex Grey Printed Backpack for school and travel", "a green floral print summer skirt for girls",
    "Titan Women Gold-Toned Analogue Watch", "formal shirt", "like this but in red with long sleeves",
    "casual sports shorts", "ethnic wear saree in maroon with golden border", "socks",
)


class _ImageGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.image_features(pixels).embeds


class _TextGraph(nn.Module):
    """Texts -> embeds and, when the model exposes it, the pooled output its text projection reads."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.pooled = hasattr(model, "pooled_text_from_tokens")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if not self.pooled:
            return self.model.text_features_from_tokens(batch).embeds
        pooled = self.model.pooled_text_from_tokens(batch)
        return nn.functional.normalize(self.model.parts()["text_proj"](pooled), dim=-1), pooled


def export_onnx(model, out: str | os.PathLike, int8: bool = True, overwrite: bool = False) -> Path:
    """Write `model`'s towers to `out` (atomically: a temporary directory renamed at the end); returns `out`."""
    out = Path(out)
    if out.exists() and not overwrite:
        if (out / RUNTIME_FILE).is_file():
            raise AlreadyExists(f"{out} already holds an ONNX export; pass --overwrite to replace it")
        if any(out.iterdir()):
            raise AlreadyExists(f"{out} exists and is not an ONNX export; choose an empty or new directory")
    model = model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        size = model.image_transform.size
        pixels = torch.zeros(2, 3, size, size)
        text_graph = _TextGraph(model).eval()
        tokens = model.tokenize(["a photo of a red dress", "shoes"])
        text_outputs = ["embeds", "pooled"] if text_graph.pooled else ["embeds"]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape arithmetic: the shapes are fixed per input size
            torch.onnx.export(
                _ImageGraph(model).eval(),
                (pixels,),
                str(work / "image.onnx"),
                input_names=["pixels"],
                output_names=["embeds"],
                dynamic_axes={"pixels": {0: "batch"}, "embeds": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
            torch.onnx.export(
                text_graph,
                (tokens["input_ids"], tokens["attention_mask"]),
                str(work / "text.onnx"),
                input_names=["input_ids", "attention_mask"],
                output_names=text_outputs,
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "length"},
                    "attention_mask": {0: "batch", 1: "length"},
                    **{name: {0: "batch"} for name in text_outputs},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        files = {"image": "image.onnx", "text": "text.onnx"}
        if int8:
            quantize_text(work / "text.onnx", work / "text.int8.onnx")
            files["text_int8"] = "text.int8.onnx"
        tokenizer = _tokenizer_of(model)
        tokenizer.save_pretrained(str(work / "tokenizer"))
        manifest = {
            "format": FORMAT_VERSION, "vitrine": vitrine.__version__, "model": model.name,
            "embed_dim": int(model.embed_dim), "transform": _transform_dict(model.image_transform),
            "max_length": int(_max_length(model)), "text_outputs": text_outputs, "files": files, "opset": OPSET,
            "padding": getattr(model, "padding", True),
        }
        manifest["parity"] = measure_parity(model, work, manifest)
        (work / RUNTIME_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def quantize_text(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the text graph's matrix products (per-channel weights, uint8 activations)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(
        logging.WARNING
    )  # onnxruntime's advice to pre-process for static quantisation, printed on the root logger
    try:
        quantize_dynamic(
            str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        )
    finally:
        logging.disable(logging.NOTSET)


@torch.inference_mode()
def measure_parity(model, directory: Path, manifest: dict, texts: Sequence[str] = PROBE_TEXTS) -> dict:
    """Cosines between the exported graphs and torch (and int8 and fp32) on probe texts and images; min and mean."""
    texts = list(texts)
    generator = torch.Generator().manual_seed(0)
    size = model.image_transform.size
    pixels = torch.rand(8, 3, size, size, generator=generator) * 2 - 1
    reference_text, reference_image = model.encode_text(texts).float(), model.encode_image(pixels).float()
    fp32 = OnnxEncoder(directory, int8=False, manifest=manifest)
    report = {
        "probe_texts": len(texts),
        "probe_images": len(pixels),
        "onnx_vs_torch_text": _cosines(fp32.encode_text(texts), reference_text),
        "onnx_vs_torch_image": _cosines(fp32.encode_image(pixels), reference_image),
    }
    if "text_int8" in manifest["files"]:
        int8 = OnnxEncoder(directory, int8=True, manifest=manifest)
        report["int8_vs_fp32_text"] = _cosines(int8.encode_text(texts), fp32.encode_text(texts))
    return report


def _cosines(a: torch.Tensor, b: torch.Tensor) -> dict:
    cos = (nn.functional.normalize(a.float(), dim=-1) * nn.functional.normalize(b.float(), dim=-1)).sum(-1).numpy()
    return {"min": round(float(np.min(cos)), 6), "mean": round(float(np.mean(cos)), 6)}


def _tokenizer_of(model):
    text = getattr(model, "text", None)
    tokenizer = getattr(text, "tokenizer", None) or getattr(model, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "save_pretrained"):
        raise InvalidInput(
            f"{model.name}: ONNX export needs a Hugging Face tokenizer on the model (model.text.tokenizer)"
        )
    return tokenizer


def _max_length(model) -> int:
    return int(getattr(getattr(model, "text", None), "max_length", 0) or getattr(model, "max_length", 0) or 64)


def _transform_dict(transform) -> dict:
    from dataclasses import asdict

    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(transform).items()}
