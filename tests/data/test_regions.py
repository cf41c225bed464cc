"""Region providers find the garment on a plain background and split worn garments into body parts."""

import numpy as np
import pytest
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


def test_annotation_sidecars_json_polygons_and_csv(tmp_path):
    import json

    import pytest

    from vitrine.data.regions import Annotations

    image = product_shot(speck=False)
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "42": [
                    {"name": "top", "box": [30, 20, 90, 80], "polygon": [[30, 20], [89, 20], [89, 79], [30, 79]]},
                    {"name": "outside", "box": [500, 500, 600, 600]},
                ]
            }
        )
    )
    [top] = Annotations(str(tmp_path / "a.json"))(image, key="42")  # the box outside the image is dropped
    assert top.name == "top" and top.box == (30, 20, 90, 80) and top.mask[50, 60] and not top.mask[100, 60]
    assert Annotations(str(tmp_path / "a.json"))(image, key="7") == []
    (tmp_path / "b.csv").write_text("image,name,x0,y0,x1,y1\n42,trousers,30,80,90,140\n")
    assert Annotations(str(tmp_path / "b.csv"))(image, key="42") == [Region("trousers", (30, 80, 90, 140))]
    (tmp_path / "bad.csv").write_text("image,name,x0,y0,x1,y1\n42,x,a,b,c,d\n")
    with pytest.raises(ValueError, match="line 2"):
        Annotations(str(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="need the image's key"):
        Annotations(str(tmp_path / "a.json"))(image)


def test_regions_cli_writes_crops_overlay_and_json(tmp_path):
    import json

    from vitrine.cli import main

    product_shot().save(tmp_path / "shirt.jpg")
    assert (
        main(
            [
                "regions", "--image", str(tmp_path / "shirt.jpg"), "--out", str(tmp_path / "out"), "--provider",
                "foreground",
            ]
        )
        == 0
    )
    written = json.loads((tmp_path / "out/regions.json").read_text())
    assert [r["name"] for r in written["regions"]] == ["garment"]
    assert (
        Image.open(tmp_path / "out/00-garment-segmented.png").size == (60, 120)
        and (tmp_path / "out/overlay.png").is_file()
    )
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert main(["regions", "--image", str(tmp_path / "bad.jpg"), "--out", str(tmp_path / "o2")]) == 2


def test_learned_segmenter_from_a_tiny_random_transformers_model(tmp_path):
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from vitrine.data.regions import LearnedSegmenter
    from vitrine.tagging.views import RegionViews

    torch.manual_seed(0)
    config = SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=3,
        id2label={0: "background", 1: "top", 2: "trousers"}, label2id={"background": 0, "top": 1, "trousers": 2},
    )
    model = SegformerForSemanticSegmentation(config).eval()
    with torch.no_grad():  # make the random head predict 'top' everywhere
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.copy_(torch.tensor([0.0, 1.0, 0.5]))
    model.save_pretrained(tmp_path / "seg")
    (tmp_path / "seg" / "preprocessor_config.json").write_text('{"size": {"height": 64, "width": 64}}')
    segmenter = LearnedSegmenter(str(tmp_path / "seg"))
    assert segmenter.size == 64 and segmenter.labels[1] == "top"
    image = Image.new("RGB", (48, 96), (255, 255, 255))
    regions = segmenter(image)
    assert [r.name for r in regions] == ["top"]  # bias makes 'top' win everywhere; background is never a region
    assert regions[0].box == (0, 0, 48, 96) and regions[0].mask.shape == (96, 48) and regions[0].mask.all()
    views = RegionViews(segmenter, ("crop", "segmented"), slots=2)
    assert len(views(image)) == 1 + 2 * 2  # the missing second region falls back to the whole image
    with torch.no_grad():
        segmenter.model.decode_head.classifier.bias.copy_(torch.tensor([1.0, 0.0, 0.5]))
    assert segmenter(image) == []  # all background: no garment region
    with pytest.raises(FileNotFoundError, match="not a transformers model"):
        LearnedSegmenter(str(tmp_path))
