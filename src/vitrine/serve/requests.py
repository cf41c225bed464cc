"""Checks on request values (images, texts, k, image URLs): each failure is a vitrine.errors class with its code and
status."""

from __future__ import annotations

import io
from urllib.parse import quote, unquote, urlparse

from fastapi import UploadFile
from PIL import Image

from vitrine.data.errors import ImageDecodeError
from vitrine.data.images import decode_image
from vitrine.errors import InvalidRequest, TooLarge, UnsupportedMediaType
from vitrine.serve.settings import ServeSettings


def read_image(upload: UploadFile, settings: ServeSettings, draft=None) -> Image.Image:
    """An uploaded file as an RGB image (see `image_from_bytes`); the declared content type is never trusted."""
    data = upload.file.read(settings.max_upload_bytes + 1)
    return image_from_bytes(data, upload.filename or "the upload", settings, draft)


def image_from_bytes(data: bytes, name: str, settings: ServeSettings, draft=None) -> Image.Image:
    """The bytes as an RGB image, judged by their content: 413 over the byte or pixel limit, 415 when not an image."""
    if len(data) > settings.max_upload_bytes:
        raise TooLarge(f"image {name!r} is over the upload limit of {settings.max_upload_bytes} bytes")
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only: the pixel check comes before decoding
            width, height = probe.size
    except Exception:
        raise UnsupportedMediaType(
            f"{name} is not an image vitrine can read (JPEG, PNG, WebP, GIF, BMP, TIFF)"
        ) from None
    if width * height > settings.max_pixels:
        raise TooLarge(f"image is {width}x{height} = {width * height} pixels, over the limit of {settings.max_pixels}")
    try:
        return decode_image(data, max_pixels=settings.max_pixels, draft=draft)
    except ImageDecodeError as exc:
        raise UnsupportedMediaType(f"{name}: {exc.detail}") from None


def clean_text(name: str, text: str | None, settings: ServeSettings) -> str | None:
    """Stripped text, None when empty; 400 over the length limit."""
    if text is None or not text.strip():
        return None
    if len(text) > settings.max_text_chars:
        raise InvalidRequest(f"{name} is {len(text)} characters; the limit is {settings.max_text_chars}")
    return text.strip()


def checked_k(k: int, settings: ServeSettings) -> int:
    if not 1 <= k <= settings.max_k:
        raise InvalidRequest(f"k must be between 1 and {settings.max_k}, got {k}")
    return k


def image_url(product_id: str) -> str:
    return f"/products/{quote(product_id, safe='')}/image"


def product_id_from_image_url(url: str) -> str:
    """The id in `/products/{id}/image` (absolute URLs too); vitrine fetches no other URLs."""
    parts = [unquote(p) for p in urlparse(url).path.split("/") if p]
    if len(parts) != 3 or parts[0] != "products" or parts[2] != "image":
        raise InvalidRequest(
            "image_url must be the image URL of a catalog product, /products/{id}/image (vitrine fetches no other URLs)"
        )
    return parts[1]
