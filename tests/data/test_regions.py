"""Region providers find the garment on a plain background and split worn garments into body parts."""
import numpy as np
from PIL import Image, ImageDraw

from vitrine.data.regions import BodyParts, Foreground, Region, WholeImage, crop


def product_shot(size=(120, 160), box=(30, 20, 90, 140), colour=(200, 30, 30), speck=True):
    image = Image.new("RGB", size, (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)
    if speck:
        draw.point((5, 5), fill=(0, 0, 0))  # a one-pixel speck must not widen the box
    return image


def test_whole_image_and_foreground_box_and_mask():
    image = product_shot()
    assert WholeImage()(image) == [Region("whole", (0, 0, 120, 160))]
    [garment] = Foreground()(image)
    assert garment.name == "garment" and garment.box == (30, 20, 90, 140)
    assert garment.mask.shape == (160, 120) and garment.mask[80, 60] and not garment.mask[5, 5]
    assert abs(garment.mask.sum() - 60 * 120) <= 60 * 120 * 0.02
    assert Foreground()(Image.new("RGB", (50, 50), (250, 250, 250))) == []  # nothing to find


def test_large_image_is_segmented_at_work_size_and_mapped_back():
    image = product_shot(size=(600, 800), box=(150, 100, 450, 700), speck=False)
    [garment] = Foreground(work_size=160)(image)
    assert all(abs(a - b) <= 6 for a, b in zip(garment.box, (150, 100, 450, 700)))


def test_segmented_crop_blanks_the_background():
    image = product_shot(speck=False)
    draw = ImageDraw.Draw(image)
    draw.ellipse((100, 145, 118, 158), fill=(20, 20, 200))  # a small second object, kept out by keep=1
    [garment] = Foreground(keep=1)(image)
    view = np.asarray(crop(image, garment, segmented=True))
    assert view.shape == (120, 60, 3) and (view == (200, 30, 30)).all(axis=2).mean() > 0.97
    loose = Region("loose", (20, 10, 100, 150), garment.mask)
    blanked = np.asarray(crop(image, loose, segmented=True))
    assert (blanked[0, 0] == 255).all() and (np.asarray(crop(image, loose))[0, 0] == 250).all()


def test_body_parts_split_the_foreground_by_height():
    image = Image.new("RGB", (100, 200), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((30, 10, 69, 99), fill=(30, 30, 200))  # top
    draw.rectangle((35, 100, 64, 189), fill=(20, 20, 20))  # trousers
    parts = {r.name: r for r in BodyParts()(image)}  # segmented at 160 px, so boxes may be 2 px off

    def near(box, expected):
        return all(abs(a - b) <= 2 for a, b in zip(box, expected))

    assert set(parts) == {"full", "upper", "lower"} and near(parts["full"].box, (30, 10, 70, 190))
    assert near(parts["upper"].box, (30, 10, 70, 10 + round(180 * 0.55)))
    assert near(parts["lower"].box, (30, 190 - round(180 * 0.55), 70, 190))  # overlaps the waist: the top's hem too
    assert BodyParts()(Image.new("RGB", (40, 40), "white")) == []
