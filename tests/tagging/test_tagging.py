"""Open-vocabulary tagging: region pooling, a new attribute added through the vocabulary only, 'unknown', the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import make_rows, write_folder

from vitrine.cli import main
from vitrine.tagging.evaluate import attribute_report, embed_split
from vitrine.tagging.tagger import Tagger, fit_region_weight, fit_temperature
from vitrine.tagging.views import RegionViews, pool_scores
from vitrine.tagging.vocabulary import vocabulary_from_dict

HUES = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


class Palette(torch.nn.Module):
    """A stand-in encoder: an image's embedding is the mean colour of its non-white pixels, a text's the colour it
    names."""

    name, embed_dim = "test:palette", 3

    def preprocess(self, images):
        out = []
        for image in images:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
            garment = pixels[(pixels < 240).any(1)]
            out.append(torch.from_numpy((garment if len(garment) else pixels).mean(0)))
        return torch.stack(out)

    def encode_image(self, colours):
        return torch.nn.functional.normalize(colours, dim=-1)

    def encode_text(self, texts):
        rows = [next((HUES[w] for w in HUES if w in text), (1, 1, 1)) for text in texts]
        return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)

    @property
    def device(self):
        return torch.device("cpu")


def product(colour, size=(60, 80)):
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(Image.new("RGB", (size[0] // 3, size[1] // 3), colour), (size[0] // 3, size[1] // 3))
    return image


NEW_ATTRIBUTE = {
    "attributes": {
        "tone": {
            "values": {"warm": ["a red garment"], "cool": ["a blue garment", "a green garment"]},
            "temperature": 30,
        }
    }
}


def test_a_new_attribute_needs_only_the_vocabulary():
    tagger = Tagger(Palette(), vocabulary_from_dict(NEW_ATTRIBUTE), RegionViews.preset("foreground"))
    tags = tagger.tag_images([product(HUES["red"]), product(HUES["blue"]), product(HUES["green"])])
    assert [t["tone"].value for t in tags] == ["warm", "cool", "cool"]
    assert all(0.5 < t["tone"].probability <= 1 for t in tags)


def test_unknown_when_no_value_is_probable_enough():
    vocabulary = vocabulary_from_dict(
        {"colour": {"values": ["red", "green", "blue"], "temperature": 1, "min_probability": 0.9}}
    )
    tag = Tagger(Palette(), vocabulary).tag_images([product(HUES["red"])])[0]["colour"]
    assert tag.value == "unknown" and tag.best == "red" and tag.probability < 0.9


def test_region_views_and_pooling():
    views = RegionViews.preset("foreground")
    pictures = views(product(HUES["red"]))
    assert views.count == len(pictures) == 3
    assert pictures[1].size == (20, 26)  # the foreground crop: the garment's box
    assert len(RegionViews.preset("body")(product(HUES["red"]))) == 1 + 3
    blank = Image.new("RGB", (40, 40), (255, 255, 255))
    assert len(views(blank)) == 3  # nothing found: the whole image stands in for the crops
    scores = torch.tensor([[[0.25, 1.0], [0.5, 0.0]]])
    assert pool_scores(scores, "max").tolist() == [[0.5, 1.0]]
    assert pool_scores(scores, "mean").tolist() == [[0.375, 0.5]]
    assert pool_scores(scores, "whole").tolist() == [[0.25, 1.0]]
    assert pool_scores(scores, "blend", 0.5).tolist() == [[0.375, 0.5]]
    assert pool_scores(scores, "blend", 0.0).tolist() == [[0.25, 1.0]]
    with pytest.raises(ValueError, match="pooling"):
        pool_scores(scores, "median")


def test_attribute_report_precision_recall_and_calibration():
    vocabulary = vocabulary_from_dict({"colour": {"values": ["red", "green", "blue"], "temperature": 30}})
    tagger = Tagger(Palette(), vocabulary, RegionViews.preset("foreground"))
    from vitrine.data.records import Item

    labels = ["red", "green", "blue", "red", "purple"]  # purple is not in the vocabulary: counted apart
    colours = [HUES["red"], HUES["green"], HUES["blue"], HUES["blue"], HUES["red"]]
    items = [Item(id=str(i), image=None, title=None, attributes={"colour": label}) for i, label in enumerate(labels)]
    embeds = tagger.embed([(product(c), None) for c in colours])
    report = attribute_report(tagger, items, embeds)
    colour = report["per_attribute"]["colour"]
    assert colour["n"] == 4 and colour["not_in_vocabulary"] == 1 and colour["answered"] == 4
    assert colour["precision"] == colour["recall"] == report["top1"]["colour"] == 0.75
    assert report["mean_precision"] == 0.75
    scores = tagger.scores_for("colour", embeds[:3])
    assert fit_temperature(scores, torch.tensor([0, 1, 2])) > fit_temperature(scores, torch.tensor([2, 0, 1]))


def test_tag_and_eval_attributes_cli(tmp_path, capsys):
    rows = make_rows(12)
    write_folder(tmp_path / "cat", rows)
    vocabulary = tmp_path / "vocab.yaml"
    vocabulary.write_text(
        "attributes:\n  baseColour: [Red, Blue, Green, Black, White]\n  tone:\n    values: {warm: [a red garment], "
        "cool: [a blue garment]}\n"
    )
    image = tmp_path / "cat" / "images" / f"{rows[0]['id']}.jpg"
    assert (
        main(["tag", "--image", str(image), "--attributes", str(vocabulary), "--model", "vitrine:small", "--json"]) == 0
    )
    line = json.loads(capsys.readouterr().out.strip())
    assert set(line["tags"]) == {"baseColour", "tone"} and 0 <= line["tags"]["tone"]["probability"] <= 1
    assert (
        main(
            [
                "tag", "--data", str(tmp_path / "cat"), "--model", "vitrine:small", "--attributes", "gender,season",
                "--out", str(tmp_path / "tags.jsonl"), "--no-progress",
            ]
        )
        == 0
    )
    assert len((tmp_path / "tags.jsonl").read_text().splitlines()) == 12
    assert (
        main(
            [
                "eval", "attributes", "--data", str(tmp_path / "cat"), "--model", "vitrine:small", "--attributes",
                "gender,baseColour", "--split", "all", "--json", "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) >= {"mean_precision", "per_attribute", "top1"}
    assert report["per_attribute"]["gender"]["n"] == 12 and set(report["per_attribute"]["gender"]) >= {
        "precision", "recall", "n",
    }
    (tmp_path / "bad.yaml").write_text("attributes: {colour: [Red]}")
    assert (
        main(["tag", "--image", str(image), "--attributes", str(tmp_path / "bad.yaml"), "--model", "vitrine:small"])
        == 2
    )
    assert "at least two values" in capsys.readouterr().err


def test_embed_split_skips_filtered_rows_without_decoding(tmp_path):
    write_folder(tmp_path / "cat", make_rows(6))
    tagger = Tagger(Palette(), vocabulary_from_dict(NEW_ATTRIBUTE))
    items, embeds = embed_split(
        tagger, str(tmp_path / "cat"), keep=lambda record: int(record.id) % 2 == 0, progress=False
    )
    assert [item.id for item in items] == ["1000", "1002", "1004"] and embeds.shape == (3, 1, 3)


def test_index_stores_tags_so_filters_find_untagged_products(tmp_path, capsys):
    rows = make_rows(10)
    rows[3]["baseColour"] = ""  # the catalog lacks this product's colour
    write_folder(tmp_path / "cat", rows)
    vocabulary = tmp_path / "vocab.yaml"
    vocabulary.write_text(
        "attributes:\n  baseColour:\n    values: [Red, Blue, Green, Black, White]\n    min_probability: 0\n"
    )
    assert (
        main(
            [
                "index", "build", "--data", str(tmp_path / "cat"), "--index", str(tmp_path / "idx"), "--model",
                "vitrine:small", "--tag", "--attributes", str(vocabulary), "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--text", "a shirt", "-k", "10", "--json"]) == 0
    hits = {
        hit["id"]: hit for hit in json.loads(capsys.readouterr().out)["results"]
    }  # shown as POST /search shows them
    assert len(hits) == 10 and all(
        hit["tags"]["baseColour"] in ("Red", "Blue", "Green", "Black", "White") for hit in hits.values()
    )
    untagged = hits[rows[3]["id"]]
    assert (
        "baseColour" not in untagged["attributes"]
    )  # the value the tagger filled in is a tag, not a catalog attribute
    assert hits[rows[0]["id"]]["attributes"]["baseColour"] == "Red"  # labels win over predictions
    assert (
        main(
            [
                "search", "--index", str(tmp_path / "idx"), "--text", "a shirt", "-k", "10", "--json", "--filter",
                f"baseColour={untagged['tags']['baseColour']}",
            ]
        )
        == 0
    )
    assert rows[3]["id"] in {hit["id"] for hit in json.loads(capsys.readouterr().out)["results"]}


def test_region_weight_is_fitted_where_regions_help():
    # value 0 is right for every item; the whole view says 1, the region view says 0
    scores = torch.tensor([[[0.2, 0.6], [0.9, 0.1]]] * 4)
    labels = torch.zeros(4, dtype=torch.long)
    assert (
        fit_region_weight(scores, labels, lambda s, w: pool_scores(s, "blend", w)) == 0.4
    )  # the smallest weight that flips it
    assert fit_region_weight(scores, torch.ones(4, dtype=torch.long), lambda s, w: pool_scores(s, "blend", w)) == 0.0
