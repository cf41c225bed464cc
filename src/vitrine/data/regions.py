"""Garment regions of a product image (RaF-CLIP): the whole image, the segmented foreground, body-part crops.

A provider maps an image to a list of `Region`s (box, optional mask, name); `crop` turns one into a picture,
optionally with the background blanked. Everything is numpy/PIL: no model needed for product shots on a
plain background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vitrine.errors import InvalidInput, MissingFile

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), in pixels


@dataclass(frozen=True)
class Region:
    name: str
    box: Box
    mask: np.ndarray | None = None  # bool (H, W) over the whole image; None: the whole box


def crop(
    image: Image.Image, region: Region, segmented: bool = False, fill: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """The region's box; with `segmented`, pixels outside its mask are set to `fill`."""
    rgb = image.convert("RGB")
    if segmented and region.mask is not None:
        background = Image.new("RGB", rgb.size, fill)
        rgb = Image.composite(rgb, background, Image.fromarray(region.mask.astype(np.uint8) * 255))
    return rgb.crop(region.box)


class WholeImage:
    """One region: the whole picture."""

    def __call__(self, image: Image.Image, key: str | None = None) -> list[Region]:
        return [Region("whole", (0, 0, *image.size))]


class Foreground:
    """The garment on a plain background: pixels far from the border colour, cleaned by morphology,
    keeping the largest connected components. Returns 'garment' (tight box + mask), or nothing if no
    foreground is found.
    """

    def __init__(
        self, threshold: float = 30.0, work_size: int = 160, min_area: float = 0.02, keep: int = 2, open_size: int = 3
    ):
        self.threshold, self.work_size, self.min_area, self.keep, self.open_size = (
            threshold, work_size, min_area, keep, open_size,
        )

    def mask(self, image: Image.Image) -> np.ndarray:
        rgb = image.convert("RGB")
        scale = min(1.0, self.work_size / max(rgb.size))
        small = (
            rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
            if scale < 1
            else rgb
        )
        pixels = np.asarray(small, dtype=np.float32)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        background = np.median(border, axis=0)
        raw = np.linalg.norm(pixels - background, axis=2) > self.threshold
        cleaned = Image.fromarray(raw.astype(np.uint8) * 255)
        if self.open_size > 1:  # opening removes specks, closing fills small holes
            cleaned = cleaned.filter(ImageFilter.MinFilter(self.open_size)).filter(
                ImageFilter.MaxFilter(self.open_size)
            )
            cleaned = cleaned.filter(ImageFilter.MaxFilter(self.open_size)).filter(
                ImageFilter.MinFilter(self.open_size)
            )
        kept = _largest_components(np.asarray(cleaned) > 0, self.keep, self.min_area)
        if scale < 1:
            kept = np.asarray(Image.fromarray(kept.astype(np.uint8) * 255).resize(rgb.size, Image.NEAREST)) > 0
        return kept

    def __call__(self, image: Image.Image, key: str | None = None) -> list[Region]:
        mask = self.mask(image)
        box = _bounding_box(mask)
        return [] if box is None else [Region("garment", box, mask)]


class BodyParts:
    """Upper, lower and full crops of the foreground, for garments worn by a model.

    The split is by height of the foreground box: 'upper' is its top `upper` share, 'lower' its bottom
    `lower` share (they overlap around the waist).
    """

    def __init__(self, foreground: Foreground | None = None, upper: float = 0.55, lower: float = 0.55):
        if not (0 < upper <= 1 and 0 < lower <= 1):
            raise InvalidInput("upper and lower must be shares in (0, 1]")
        self.foreground, self.upper, self.lower = foreground or Foreground(), upper, lower

    def __call__(self, image: Image.Image, key: str | None = None) -> list[Region]:
        found = self.foreground(image)
        if not found:
            return []
        mask = found[0].mask
        x0, y0, x1, y1 = found[0].box
        height = y1 - y0
        parts = {
            "full": (x0, y0, x1, y1),
            "upper": (x0, y0, x1, y0 + max(1, round(height * self.upper))),
            "lower": (x0, y1 - max(1, round(height * self.lower)), x1, y1),
        }
        regions = []
        for name, box in parts.items():
            part = np.zeros_like(mask)
            part[box[1] : box[3], box[0] : box[2]] = mask[box[1] : box[3], box[0] : box[2]]
            tight = _bounding_box(part)
            if tight is not None:
                regions.append(Region(name, tight, part))
        return regions


class Annotations:
    """Boxes and masks a dataset provides (DeepFashion2, ModaNet, Fashionpedia style), from a sidecar file.

    JSON: {"<image key>": [{"name": "top", "box": [x0, y0, x1, y1], "polygon": [[x, y], ...]}, ...]}
    (`polygon` optional, or a list of polygons); CSV: columns image,name,x0,y0,x1,y1. The key is the image's
    product id or file stem.
    """

    def __init__(self, path: str):
        import csv
        import json
        from pathlib import Path

        source = Path(path)
        if not source.is_file():
            raise MissingFile(f"region annotations not found: {path}")
        self.entries: dict[str, list[dict]] = {}
        if source.suffix.lower() == ".csv":
            with open(source, newline="", encoding="utf-8") as handle:
                for number, row in enumerate(csv.DictReader(handle), 2):
                    try:
                        box = [float(row[c]) for c in ("x0", "y0", "x1", "y1")]
                    except (KeyError, TypeError, ValueError):
                        raise InvalidInput(
                            f"{path}, line {number}: needs image,name,x0,y0,x1,y1 with numbers"
                        ) from None
                    self.entries.setdefault(row["image"], []).append({"name": row.get("name") or "region", "box": box})
        else:
            data = json.loads(source.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise InvalidInput(f"{path}: expected an object mapping image keys to region lists")
            self.entries = {str(k): list(v) for k, v in data.items()}

    def __call__(self, image: Image.Image, key: str | None = None) -> list[Region]:
        if key is None:
            raise InvalidInput("annotation regions need the image's key (product id or file stem)")
        regions = []
        for entry in self.entries.get(key, []):
            x0, y0, x1, y1 = (int(round(v)) for v in entry["box"])
            box = (max(0, x0), max(0, y0), min(image.width, x1), min(image.height, y1))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            mask = None
            polygons = entry.get("polygon")
            if polygons:
                polygons = [polygons] if isinstance(polygons[0][0], (int, float)) else polygons
                canvas = Image.new("L", image.size, 0)
                for polygon in polygons:
                    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon], fill=255)
                mask = np.asarray(canvas) > 0
            regions.append(Region(str(entry.get("name", "region")), box, mask))
        return regions


class LearnedSegmenter:
    """A transformers semantic-segmentation model (SegFormer, Mask2Former-style heads with `.logits`), named by path.

    Every label except the background ones becomes a region (largest first), named by the model's id2label,
    with its pixel mask and box. Preprocessing follows the directory's preprocessor_config.json when present.
    """

    BACKGROUND = ("background", "bg", "unlabelled", "unlabeled", "none")

    def __init__(self, path: str, min_area: float = 0.01, size: int | None = None):
        import json
        from pathlib import Path

        from transformers import AutoModelForSemanticSegmentation

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise MissingFile(f"{path} is not a transformers model directory (no config.json)")
        self.model = AutoModelForSemanticSegmentation.from_pretrained(str(folder)).eval()
        pre_path = folder / "preprocessor_config.json"
        pre = json.loads(pre_path.read_text(encoding="utf-8")) if pre_path.is_file() else {}
        wanted = pre.get("size", size or 512)
        if isinstance(wanted, dict):
            wanted = wanted.get("height") or wanted.get("shortest_edge") or 512
        self.size = int(size or wanted)
        self.mean = np.asarray(pre.get("image_mean", [0.485, 0.456, 0.406]), dtype=np.float32)
        self.std = np.asarray(pre.get("image_std", [0.229, 0.224, 0.225]), dtype=np.float32)
        self.labels = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        self.min_area = min_area

    def label_map(self, image: Image.Image) -> np.ndarray:
        """(H, W) label ids at the image's own size."""
        import torch

        rgb = image.convert("RGB")
        pixels = np.asarray(rgb.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(((pixels - self.mean) / self.std).transpose(2, 0, 1)).unsqueeze(0)
        with torch.inference_mode():
            logits = self.model(pixel_values=tensor).logits
            logits = torch.nn.functional.interpolate(
                logits, size=(rgb.height, rgb.width), mode="bilinear", align_corners=False
            )
        return logits[0].argmax(0).numpy()

    def __call__(self, image: Image.Image, key: str | None = None) -> list[Region]:
        labels = self.label_map(image)
        regions = []
        for label in np.unique(labels):
            name = self.labels.get(int(label), f"label-{int(label)}")
            mask = labels == label
            if name.lower() in self.BACKGROUND or mask.mean() < self.min_area:
                continue
            regions.append((int(mask.sum()), Region(name, _bounding_box(mask), mask)))
        return [region for _, region in sorted(regions, key=lambda pair: -pair[0])]


PROVIDERS = {"whole": WholeImage, "foreground": Foreground, "body": BodyParts}


def overlay(image: Image.Image, regions: list[Region]) -> Image.Image:
    """The image with each region's mask tinted and its box outlined and named, for a person to check."""
    colours = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]
    out = image.convert("RGB")
    for i, region in enumerate(regions):
        colour = colours[i % len(colours)]
        if region.mask is not None:
            tint = Image.new("RGB", out.size, colour)
            out = Image.composite(
                Image.blend(out, tint, 0.35), out, Image.fromarray(region.mask.astype(np.uint8) * 255)
            )
        draw = ImageDraw.Draw(out)
        draw.rectangle(
            (region.box[0], region.box[1], region.box[2] - 1, region.box[3] - 1),
            outline=colour,
            width=max(1, out.width // 150),
        )
        draw.text(
            (region.box[0] + 3, region.box[1] + 2 + 11 * i), region.name, fill=colour
        )  # stacked: boxes often share a corner
    return out


def _bounding_box(mask: np.ndarray) -> Box | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _largest_components(mask: np.ndarray, keep: int, min_area: float) -> np.ndarray:
    """The `keep` largest 4-connected components that cover at least `min_area` of the image (scipy labels them in
    raster order, as a flood fill from each first pixel would: ties keep that order)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.argsort(sizes)[::-1][:keep]
    chosen = [i + 1 for i in order if sizes[i] >= min_area * mask.size]
    return np.isin(labels, chosen)
