"""Registrations: vitrine's JSON configs, a local model directory, transformers and open_clip checkpoints."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from vitrine.errors import NotFound
from vitrine.models._registry import did_you_mean, list_models, register_backend, register_model
from vitrine.models.dual import WEIGHTS_NAME, DualEncoder, builtin_config, builtin_config_names
from vitrine.models.fingerprint import directory_files, fingerprint


def _register_configs() -> None:
    for config_name in builtin_config_names():
        config = builtin_config(config_name)

        def factory(config=config) -> DualEncoder:
            return DualEncoder(config)

        tower = config.image.get("tower")
        image = (
            f"pretrained {tower} image tower, untrained heads"
            if config.image_weights_from_package
            else f"from-scratch {config.image.get('type', 'cnn').upper()} image tower (seeded random init)"
        )
        register_model(
            config_name, f"{image} + pretrained MiniLM text tower, {config.embed_dim}-d",
            files_fingerprint=lambda name=config_name: DualEncoder.seeded_fingerprint(name),
        )(factory)


def _register_shipped_weights() -> None:
    """Trained models committed under `vitrine/models/weights/<name>/` register as `vitrine:<name>`."""
    folder = resources.files("vitrine.models").joinpath("weights")
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and entry.joinpath(WEIGHTS_NAME).is_file():
            description = f"trained model shipped with vitrine (model card: {entry.name}/MODEL_CARD.md)"
            register_model(
                entry.name, description, files_fingerprint=lambda path=str(entry): DualEncoder.fingerprint(path)
            )(lambda path=str(entry), name=entry.name: _load_named(path, name))


def _load_named(path: str, name: str) -> DualEncoder:
    model = DualEncoder.load(path)
    model.name = f"vitrine:{name}"
    return model


_register_configs()
_register_shipped_weights()


@register_backend(
    "vitrine",
    "vitrine:<directory>",
    "a vitrine model directory (config.json + model.safetensors), e.g. a training run",
    files_fingerprint=DualEncoder.fingerprint,
)
def _local_dir(path: str):
    if not os.path.isdir(path):
        known = list_models()
        raise NotFound(
            f"vitrine:{path} is neither a registered vitrine model nor a model directory"
            f"{did_you_mean(f'vitrine:{path}', known)}; registered: {', '.join(known)}",
            code="unknown_model",
        )
    return _load_named(path, path)


def _hf_fingerprint(path: str) -> str | None:
    """Every file of a checkpoint directory by content (a hub id is not fingerprinted: the model is built instead)."""
    return fingerprint([], directory_files(path)) if os.path.isdir(path) else None


def _openclip_fingerprint(spec: str) -> str | None:
    from vitrine.models.openclip import find_tokenizer_dir

    arch, _, checkpoint = spec.partition("@")
    return fingerprint([arch], [checkpoint, *directory_files(find_tokenizer_dir(Path(checkpoint)))])


@register_backend(
    "hf",
    "hf:<directory or hub id>",
    "transformers CLIP / SigLIP checkpoint (FashionCLIP, Marqo-FashionSigLIP), loaded offline",
    files_fingerprint=_hf_fingerprint,
)
def _hf(path: str):
    from vitrine.models.hf import HFEncoder

    return HFEncoder.from_pretrained(path)


@register_backend(
    "openclip",
    "openclip:<arch>@<checkpoint>",
    "open_clip ViT checkpoint (e.g. OpenFashionCLIP), mapped onto transformers CLIP",
    files_fingerprint=_openclip_fingerprint,
)
def _openclip(spec: str):
    from vitrine.models.openclip import load_openclip

    return load_openclip(spec)
