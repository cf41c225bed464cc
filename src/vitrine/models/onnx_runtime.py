"""The ONNX Runtime encoder: an export of `vitrine export onnx` behind the same `Encoder` interface.

`create_model(name, runtime="onnx" | "onnx-int8")` finds the export of `name` in the cache (`$VITRINE_ONNX_CACHE`,
default `~/.cache/vitrine/onnx`), exporting it there the first time; `onnx:DIR` opens an export directory directly.
Preprocessing is the model's own `ImageTransform` (rebuilt from the export's manifest), and tokenisation its own
tokenizer, so the torch and ONNX paths share every step but the forward pass.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vitrine.data.transforms import ImageTransform
from vitrine.models.base import Encoder, Features

RUNTIMES = ("torch", "onnx", "onnx-int8")
DEFAULT_RUNTIME = "onnx"  # the fastest runtime that passes parity with torch (see README, "Fast CPU inference")


class ExportUnsupported(ValueError):
    """This model cannot be exported to ONNX (not a vitrine dual encoder with a Hugging Face tokenizer)."""


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    return runtime


class OnnxEncoder(Encoder):
    """Image and text embeddings from ONNX graphs; no token features (AGCN needs `--runtime torch`)."""

    def __init__(self, directory: str | os.PathLike, int8: bool = False, threads: int | None = None, manifest: dict | None = None):
        super().__init__()
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from vitrine.models.onnx_export import RUNTIME_FILE

        self.directory = Path(directory)
        path = self.directory / RUNTIME_FILE
        if manifest is None:
            if not path.is_file():
                raise FileNotFoundError(f"{self.directory} is not an ONNX export of vitrine (no {RUNTIME_FILE}); make one with `vitrine export onnx`")
            manifest = json.loads(path.read_text(encoding="utf-8"))
        self.manifest = manifest
        if int8 and "text_int8" not in manifest["files"]:
            raise FileNotFoundError(f"{self.directory} has no int8 text graph; export it again without --no-int8")
        self.name = manifest["model"]
        self.runtime = "onnx-int8" if int8 else "onnx"
        self.embed_dim = int(manifest["embed_dim"])
        self.image_transform = ImageTransform.from_dict(manifest["transform"])
        self.max_length = int(manifest["max_length"])
        self.training_info = {}
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.enable_mem_pattern = False  # batch and text length change with every call: a planned layout would be redone each time
        providers = ["CPUExecutionProvider"]
        self._image = ort.InferenceSession(str(self.directory / manifest["files"]["image"]), options, providers=providers)
        text_file = manifest["files"]["text_int8" if int8 else "text"]
        self._text = ort.InferenceSession(str(self.directory / text_file), options, providers=providers)
        self._text_outputs = list(manifest.get("text_outputs", ["embeds"]))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.directory / "tokenizer"))
        self.has_pooled_text = "pooled" in self._text_outputs

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def parity(self) -> dict:
        return self.manifest.get("parity", {})

    def image_features(self, pixels: torch.Tensor) -> Features:
        array = np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)
        embeds = torch.from_numpy(self._image.run(["embeds"], {"pixels": array})[0])
        return Features(embeds=embeds, tokens=torch.zeros(len(embeds), 0, self.embed_dim))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def text_features_from_tokens(self, batch: dict[str, torch.Tensor]) -> Features:
        embeds = self._run_text(batch)[0]
        return Features(embeds=embeds, tokens=torch.zeros(len(embeds), 0, self.embed_dim), mask=None)

    def pooled_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """The text tower's pooled output before its projection (what a Combiner's text projection reads)."""
        if not self.has_pooled_text:
            raise ValueError(f"the ONNX export of {self.name} has no pooled text output; a Combiner with a text projection needs --runtime torch")
        return self._run_text(self.tokenize(texts))[1]

    def _run_text(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        feed = {name: np.ascontiguousarray(batch[name].detach().cpu().numpy(), dtype=np.int64) for name in ("input_ids", "attention_mask")}
        return [torch.from_numpy(array) for array in self._text.run(self._text_outputs, feed)]


def cache_root() -> Path:
    return Path(os.environ.get("VITRINE_ONNX_CACHE") or Path.home() / ".cache" / "vitrine" / "onnx")


def export_dir_for(model) -> Path:
    """Where the cached export of a torch model lives: its name plus a digest of its weights and vitrine's version."""
    import vitrine

    digest = hashlib.sha256(f"{model.name}\n{vitrine.__version__}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(str(tuple(tensor.shape)).encode())
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.name)[:80]
    return cache_root() / f"{slug}-{digest.hexdigest()[:16]}"


def onnx_model(name: str, runtime: str, torch_model=None) -> OnnxEncoder:
    """The ONNX encoder of registry model `name`, exported into the cache on first use (one process at a time)."""
    from vitrine.models.onnx_export import RUNTIME_FILE, export_onnx

    check_runtime(runtime)
    if torch_model is None:
        from vitrine.models._registry import create_model

        torch_model = create_model(name)
    directory = export_dir_for(torch_model)
    int8 = runtime == "onnx-int8"
    if not _has_export(directory, int8):
        directory.parent.mkdir(parents=True, exist_ok=True)
        with open(directory.parent / f".{directory.name}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # several serve workers start at once: one exports, the others wait
            if not (directory / RUNTIME_FILE).is_file():
                export_onnx(torch_model, directory, int8=int8, overwrite=True)
            elif not _has_export(directory, int8):
                add_int8(torch_model, directory)
    return OnnxEncoder(directory, int8=int8)


def _has_export(directory: Path, int8: bool) -> bool:
    from vitrine.models.onnx_export import RUNTIME_FILE

    path = directory / RUNTIME_FILE
    return path.is_file() and (not int8 or "text_int8" in json.loads(path.read_text(encoding="utf-8"))["files"])


def add_int8(torch_model, directory: Path) -> None:
    """Add the int8 text graph (and its parity) to an fp32 export, atomically."""
    from vitrine.models.onnx_export import RUNTIME_FILE, measure_parity, quantize_text

    manifest = json.loads((directory / RUNTIME_FILE).read_text(encoding="utf-8"))
    tmp = directory / "text.int8.onnx.tmp"
    quantize_text(directory / manifest["files"]["text"], tmp)
    os.replace(tmp, directory / "text.int8.onnx")
    manifest["files"]["text_int8"] = "text.int8.onnx"
    manifest["parity"] = measure_parity(torch_model, directory, manifest)
    (directory / (RUNTIME_FILE + ".tmp")).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(directory / (RUNTIME_FILE + ".tmp"), directory / RUNTIME_FILE)
