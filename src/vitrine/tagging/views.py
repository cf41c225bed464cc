"""Region views of an image for tagging: the whole picture plus crops (and segmented crops) from a provider."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from tqdm import tqdm

from vitrine.data.regions import PROVIDERS, WholeImage, crop
from vitrine.errors import InvalidInput

VIEW_PRESETS = {
    "whole": ("whole", ()),  # whole image only: the baseline
    "foreground": ("foreground", ("crop", "segmented")),  # product shots on a plain background
    "body": ("body", ("crop",)),  # garments worn by a model: upper / lower / full crops
}


@dataclass(frozen=True)
class RegionViews:
    """Which pictures of one image are embedded: always the whole image, then each region as a crop
    and/or a segmented crop. An image where the provider finds nothing repeats the whole image, so every
    image has the same number of views."""

    provider: Callable
    kinds: tuple[str, ...] = ("crop", "segmented")
    slots: int = 1  # regions per image (e.g. 3 for body parts: full, upper, lower)

    @classmethod
    def preset(cls, name: str, provider: Callable | None = None) -> "RegionViews":
        if name not in VIEW_PRESETS:
            raise InvalidInput(f"unknown region views {name!r}; choose one of {', '.join(VIEW_PRESETS)}")
        provider_name, kinds = VIEW_PRESETS[name]
        slots = 3 if provider_name == "body" else 1
        return cls(provider or PROVIDERS[provider_name](), kinds, slots if kinds else 0)

    @property
    def count(self) -> int:
        return 1 + self.slots * len(self.kinds)

    def __call__(self, image: Image.Image, key: str | None = None) -> list[Image.Image]:
        image = image.convert("RGB")
        pictures = [image]
        if not self.kinds:
            return pictures
        regions = [r for r in self.provider(image, key=key) if r.name != "whole"][: self.slots]
        fallback = WholeImage()(image)[0]
        regions += [fallback] * (self.slots - len(regions))
        for region in regions:
            for kind in self.kinds:
                pictures.append(crop(image, region, segmented=kind == "segmented"))
        return pictures


@torch.inference_mode()
def encode_views(
    model, images: Iterable[tuple[Image.Image, str | None]], views: RegionViews, batch_size: int = 64,
    total: int | None = None, progress: bool = False,
) -> torch.Tensor:
    """(N, V, D) unit-norm embeddings of every view of every (image, key)."""
    chunks, pending = [], []

    def flush():
        flat = [picture for pictures in pending for picture in pictures]
        embeds = model.encode_image(model.preprocess(flat).to(model.device)).float().cpu()
        chunks.append(embeds.view(len(pending), views.count, -1))
        pending.clear()

    for image, key in tqdm(
        images, total=total, desc="embed regions", unit="img", disable=not progress, dynamic_ncols=True
    ):
        pending.append(views(image, key))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return torch.cat(chunks) if chunks else torch.zeros(0, views.count, model.embed_dim)


def pool_scores(scores: torch.Tensor, pooling: str, region_weight: float = 0.5) -> torch.Tensor:
    """(N, V, C) view scores -> (N, C): 'max' over views, 'mean', 'whole' (the first view only), or 'blend':
    (1 - region_weight) * whole + region_weight * max over the region views."""
    if pooling == "blend":
        if scores.shape[1] == 1:
            return scores[:, 0]
        return (1 - region_weight) * scores[:, 0] + region_weight * scores[:, 1:].amax(1)
    if pooling == "max":
        return scores.amax(1)
    if pooling == "mean":
        return scores.mean(1)
    if pooling == "whole":
        return scores[:, 0]
    raise InvalidInput(f"unknown pooling {pooling!r}; choose {', '.join(POOLINGS)}")


POOLINGS: Sequence[str] = ("blend", "max", "mean", "whole")
DEFAULT_REGION_WEIGHT = 0.5


def make_views(name: str, annotations: str | None = None, segmenter: str | None = None):
    """Views by preset name (whole | foreground | body), or from an annotation sidecar or a learned segmenter."""
    from vitrine.data.regions import Annotations, LearnedSegmenter

    if annotations:
        return RegionViews(Annotations(annotations), ("crop", "segmented"), slots=3)
    if segmenter:
        return RegionViews(LearnedSegmenter(segmenter), ("crop", "segmented"), slots=2)
    return RegionViews.preset(name)
