import io

import numpy as np
import pytest
from PIL import Image
from tests.conftest import jpeg_bytes, make_rows, write_folder

from vitrine.data.catalog import open_catalog
from vitrine.data.errors import ImageDecodeError
from vitrine.data.images import decode_image


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_cmyk_jpeg_becomes_rgb():
    image = decode_image(jpeg_bytes(colour=(200, 30, 30), mode="CMYK"))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((30, 40))
    assert r > 150 and g < 80 and b < 80


def test_grayscale_becomes_three_equal_channels():
    image = decode_image(jpeg_bytes(mode="L"))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((30, 40))
    assert r == g == b


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.putpixel((5, 5), (255, 0, 0, 255))
    image = decode_image(encode(rgba, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((5, 5)) == (255, 0, 0)


def test_palette_with_transparency_and_16_bit():
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    assert decode_image(buffer.getvalue()).getpixel((0, 0)) == (255, 255, 255)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert decode_image(encode(deep, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_pixel_limit_stops_decompression_bombs():
    big = encode(Image.new("RGB", (400, 300), (1, 2, 3)), "PNG")
    assert decode_image(big, max_pixels=200_000).size == (400, 300)
    with pytest.raises(ImageDecodeError, match="400x300 = 120000 pixels, over the limit of 100000"):
        decode_image(big, max_pixels=100_000)


def test_pixel_limit_names_the_row(tmp_path):
    rows = make_rows(3)
    write_folder(tmp_path, rows, images={rows[1]["id"]: encode(Image.new("RGB", (500, 500)), "PNG")})
    with pytest.raises(ImageDecodeError, match="row 2, id 1001: image has 500x500"):
        list(open_catalog(tmp_path, max_pixels=100_000))
    assert len(list(open_catalog(tmp_path, max_pixels=1_000_000))) == 3


def test_na_title_rejected_only_when_titles_are_required(tmp_path):
    rows = make_rows(3)
    rows[1]["title"] = "NA"
    write_folder(tmp_path, rows)
    with pytest.raises(Exception, match="row 2, id 1001: empty title"):
        list(open_catalog(tmp_path))
    items = list(open_catalog(tmp_path, require_title=False))
    assert [i.title for i in items] == [rows[0]["title"], None, rows[2]["title"]]
