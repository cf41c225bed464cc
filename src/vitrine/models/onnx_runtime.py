"""The ONNX Runtime encoder: an export of `vitrine export onnx` behind the same `Encoder` interface.

`vitrine.models.onnx_cache` registers the `onnx` and `onnx-int8` runtimes and the `onnx:DIR` backend with the model
registry; this module only runs an export. Preprocessing is the model's own `ImageTransform` (rebuilt from the export's
manifest), and tokenisation its own
tokenizer, so the torch and ONNX paths share every step but the forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vitrine.constants import RUNTIMES
from vitrine.data.transforms import ImageTransform
from vitrine.errors import InvalidInput, MissingFile
from vitrine.models.base import Encoder, Features
from vitrine.models.file_tokenizer import FileTokenizer

RUNTIME_FILE = "runtime.json"  # an export's manifest: files, transform, tokenizer, parity


class ExportUnsupported(InvalidInput):
    """This model cannot be exported to ONNX (not one of vitrine's, hf: or openclip: encoders)."""

    code = "export_unsupported"


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise InvalidInput(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    return runtime


class OnnxEncoder(Encoder):
    """Image and text embeddings from ONNX graphs; no token features (AGCN needs `--runtime torch`)."""

    def __init__(
        self, directory: str | os.PathLike, int8: bool = False, threads: int | None = None, manifest: dict | None = None
    ):
        super().__init__()
        self.directory = Path(directory)
        path = self.directory / RUNTIME_FILE
        if manifest is None:
            if not path.is_file():
                raise MissingFile(
                    f"{self.directory} is not an ONNX export of vitrine (no {RUNTIME_FILE}); make one with `vitrine "
                    "export onnx`"
                )
            manifest = json.loads(path.read_text(encoding="utf-8"))
        self.manifest = manifest
        if int8 and "text_int8" not in manifest["files"]:
            raise MissingFile(f"{self.directory} has no int8 text graph; export it again without --no-int8")
        needed = [name for key, name in manifest["files"].items() if int8 or key != "text_int8"]
        missing = [name for name in needed if not (self.directory / name).is_file()]
        if missing:
            raise MissingFile(
                f"{self.directory} lacks {', '.join(missing)}: export it again with `vitrine export onnx`"
            )
        self.name = manifest["model"]
        self.runtime = "onnx-int8" if int8 else "onnx"
        self.embed_dim = int(manifest["embed_dim"])
        self.image_transform = ImageTransform.from_dict(manifest["transform"])
        self.max_length = int(manifest["max_length"])
        self.training_info = {}
        self.threads = threads if threads is not None else torch.get_num_threads()
        self._sessions: dict[
            str, object
        ] = {}  # opened on first use: a process that only embeds texts never loads the image graph
        self._sessions_lock = threading.Lock()
        self._text_outputs = list(manifest.get("text_outputs", ["embeds"]))
        self._tokenize = self._tokenizer_for(self.directory / "tokenizer")
        self.has_pooled_text = "pooled" in self._text_outputs

    concurrent_calls = True  # ONNX Runtime sessions may run calls from several threads at once

    @property
    def outputs_identity(self) -> str:
        """A digest of what fixes this encoder's outputs: its manifest, runtime and graph files (by size and mtime, so
        an export written again gets a new one); keys `vitrine.embed.text_cache.encoder_text_embeddings`."""
        digest = hashlib.sha256(f"{self.directory.resolve()}\n{self.runtime}\n".encode())
        digest.update(json.dumps(self.manifest, sort_keys=True).encode())
        for name in sorted(self.manifest["files"].values()):
            stat = (self.directory / name).stat()
            digest.update(f"\n{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:24]

    def with_threads(self, threads: int) -> "OnnxEncoder":
        """The same export with `threads` intra-op threads per call (one thread per call, several calls at once, is
        what `vitrine embed` runs: measured faster on 2 cores than two threads inside each call)."""
        return OnnxEncoder(self.directory, int8=self.runtime == "onnx-int8", threads=threads, manifest=self.manifest)

    def _session(self, part: str):
        """The image or text graph's session, opened once (several threads may ask at the same time)."""
        session = self._sessions.get(part)
        if session is None:
            with self._sessions_lock:
                session = self._sessions.get(part)
                if session is None:
                    session = self._sessions[part] = self._open(part)
        return session

    def _open(self, part: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # no busy-waiting between operators: the threads that decode images and serve requests need those cores
        # (measured on `vitrine embed`: 2-3 s less wall time and 15% less CPU on 1,012 photos)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_mem_pattern = (
            False  # batch and text length change with every call: a planned layout would be redone each time
        )
        files = self.manifest["files"]
        name = files["image"] if part == "image" else files["text_int8" if self.runtime == "onnx-int8" else "text"]
        return ort.InferenceSession(str(self.directory / name), options, providers=["CPUExecutionProvider"])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def parity(self) -> dict:
        return self.manifest.get("parity", {})

    def image_features(self, pixels: torch.Tensor) -> Features:
        array = np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)
        embeds = torch.from_numpy(self._session("image").run(["embeds"], {"pixels": array})[0])
        return Features(embeds=embeds, tokens=torch.zeros(len(embeds), 0, self.embed_dim))

    def _tokenizer_for(self, directory: Path):
        """The export's tokenizer: its tokenizer.json through `tokenizers` alone, or transformers' AutoTokenizer."""
        padding = self.manifest.get("padding", True)
        if FileTokenizer.usable(directory):
            return FileTokenizer(directory, self.max_length, padding)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory))

        def tokenize(texts: Sequence[str]) -> dict[str, torch.Tensor]:
            batch = tokenizer(
                list(texts), padding=padding, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

        return tokenize

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self._tokenize(texts)

    def text_features_from_tokens(self, batch: dict[str, torch.Tensor]) -> Features:
        embeds = self._run_text(batch)[0]
        return Features(embeds=embeds, tokens=torch.zeros(len(embeds), 0, self.embed_dim), mask=None)

    def pooled_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """The text tower's pooled output before its projection (what a Combiner's text projection reads)."""
        if not self.has_pooled_text:
            raise InvalidInput(
                f"the ONNX export of {self.name} has no pooled text output; a Combiner with a text projection needs "
                "--runtime torch"
            )
        return self._run_text(self.tokenize(texts))[1]

    def _run_text(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        session = self._session("text")
        # a graph whose tower reads no mask (SigLIP) takes none
        feed = {
            i.name: np.ascontiguousarray(batch[i.name].detach().cpu().numpy(), dtype=np.int64)
            for i in session.get_inputs()
        }
        return [torch.from_numpy(array) for array in session.run(self._text_outputs, feed)]
