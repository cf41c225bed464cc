"""ONNX Runtime as a registry runtime: `create_model(name, runtime="onnx" | "onnx-int8")` finds the export of `name`
in the cache (`$VITRINE_ONNX_CACHE`, default `~/.cache/vitrine/onnx`), exporting it there the first time, and
`onnx:DIR` opens an export directory directly. Registered here, so the registry itself imports no runtime."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from vitrine.models._registry import create_model, model_files_fingerprint, register_backend, register_runtime
from vitrine.models.base import Encoder
from vitrine.models.onnx_export import export_onnx, measure_parity, quantize_text
from vitrine.models.onnx_runtime import RUNTIME_FILE, ExportUnsupported, OnnxEncoder, check_runtime


def cache_root() -> Path:
    return Path(os.environ.get("VITRINE_ONNX_CACHE") or Path.home() / ".cache" / "vitrine" / "onnx")


def weights_digest(model) -> str:
    """A digest of a built model's state dict (for models whose registration cannot fingerprint their files)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(str(tuple(tensor.shape)).encode())
    return "weights:" + digest.hexdigest()


def export_dir_for(name: str, torch_model=None) -> Path | None:
    """Where the cached export of model `name` lives: its name, vitrine's version and a digest of its weights, read
    from the files it is built from (nothing is built) or, where the registration cannot say, from `torch_model`.
    None when neither is at hand."""
    import vitrine

    source = model_files_fingerprint(name)
    if source is None:
        if torch_model is None:
            return None
        source = weights_digest(torch_model)
    digest = hashlib.sha256(f"{name}\n{vitrine.__version__}\n{source}".encode())
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    return cache_root() / f"{slug}-{digest.hexdigest()[:16]}"


def cached_export(name: str, runtime: str) -> OnnxEncoder | None:
    """The export of `name` already in the cache, found from its files alone (None if not there or not
    fingerprintable)."""
    int8 = runtime == "onnx-int8"
    directory = export_dir_for(name)
    return OnnxEncoder(directory, int8=int8) if directory is not None and _has_export(directory, int8) else None


def onnx_model(name: str, runtime: str, torch_model=None) -> OnnxEncoder:
    """The ONNX encoder of registry model `name`, exported into the cache on first use (one process at a time). The
    torch model is built only to export it, or to fingerprint a model whose files cannot be."""
    check_runtime(runtime)
    found = cached_export(name, runtime)
    if found is not None:
        return found
    if torch_model is None:
        torch_model = create_model(name)
    int8 = runtime == "onnx-int8"
    directory = export_dir_for(name, torch_model)
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
    path = directory / RUNTIME_FILE
    return path.is_file() and (not int8 or "text_int8" in json.loads(path.read_text(encoding="utf-8"))["files"])


def add_int8(torch_model, directory: Path) -> None:
    """Add the int8 text graph (and its parity) to an fp32 export, atomically."""
    manifest = json.loads((directory / RUNTIME_FILE).read_text(encoding="utf-8"))
    tmp = directory / "text.int8.onnx.tmp"
    quantize_text(directory / manifest["files"]["text"], tmp)
    os.replace(tmp, directory / "text.int8.onnx")
    manifest["files"]["text_int8"] = "text.int8.onnx"
    manifest["parity"] = measure_parity(torch_model, directory, manifest)
    (directory / (RUNTIME_FILE + ".tmp")).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(directory / (RUNTIME_FILE + ".tmp"), directory / RUNTIME_FILE)


@register_backend("onnx", "onnx:<directory>", "an ONNX export made by `vitrine export onnx` (ONNX Runtime)")
def _open_export(path: str) -> Encoder:
    return OnnxEncoder(path)


def _onnx_runtime(name: str, runtime: str, load_torch: Callable[[], Encoder], fallback: bool) -> Encoder:
    """The ONNX encoder of `name` (an export directory as is; a torch model exported into the cache on first use)."""
    if name.startswith("onnx:"):
        return OnnxEncoder(name[len("onnx:") :], int8=runtime == "onnx-int8")
    check_runtime(runtime)
    found = cached_export(name, runtime)
    if found is not None:
        return found
    torch_model = load_torch()
    if not getattr(torch_model, "onnx_exportable", False):
        if not fallback:
            raise ExportUnsupported(
                f"{name} cannot run on --runtime {runtime}: ONNX export covers vitrine's, hf: and openclip: encoders; "
                "use --runtime torch"
            )
        logging.getLogger(__name__).warning("%s has no ONNX export; running it on torch", name)
        return torch_model
    return onnx_model(name, runtime, torch_model=torch_model)


register_runtime("onnx", "ONNX Runtime, fp32 graphs (exported into the cache on first use)")(_onnx_runtime)
register_runtime("onnx-int8", "ONNX Runtime with the int8 text graph")(_onnx_runtime)
