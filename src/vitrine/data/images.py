"""Safe image decoding: every image comes out as an RGB PIL image, or as an `ImageDecodeError`."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable

from PIL import Image, ImageFile, UnidentifiedImageError

from vitrine.data.errors import ImageDecodeError
from vitrine.errors import MissingFile

# Large enough for any real product photo; a larger image is almost certainly a decompression bomb.
DEFAULT_MAX_PIXELS = 64_000_000

# PIL must never silently pad truncated files with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    draft: Callable[[int, int], tuple[int, int]] | None = None,
) -> Image.Image:
    """Decode image bytes into an RGB image; alpha is composited onto `background`.

    `draft(width, height)` gives the smallest size the caller needs: a JPEG is then decoded by libjpeg at the
    coarsest DCT scale (1/2, 1/4, 1/8) that still covers it, which skips most of the decoding of a large photo.
    """
    if not data:
        raise ImageDecodeError("file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image has {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
                )
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", draft(width, height))
            image.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("file is not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image is too large (decompression bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"image is corrupt or truncated: {exc}") from None
    return to_rgb(image, background)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode (L, P, CMYK, RGBA, LA, I;16, ...) to RGB."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale need scaling into 8 bits before the RGB conversion.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        high = array.max() if array.size else 0.0
        scale = 255.0 / high if high > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype("uint8"), mode="L")
    return image.convert("RGB")


def load_image_file(path: str, **kwargs) -> Image.Image:
    """Read and decode an image file; a missing file raises `FileNotFoundError`."""
    with open(path, "rb") as handle:
        data = handle.read()
    return decode_image(data, **kwargs)


def load_image(source: Image.Image | str | os.PathLike, what: str = "image") -> Image.Image:
    """An RGB image from a PIL image or an image file; a missing or unreadable file's error names it (as `what`)."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    try:
        return load_image_file(os.fspath(source))
    except FileNotFoundError:
        raise MissingFile(f"{what} not found: {os.fspath(source)}") from None
    except ImageDecodeError as exc:
        raise ImageDecodeError(exc.detail, source=os.fspath(source)) from None
