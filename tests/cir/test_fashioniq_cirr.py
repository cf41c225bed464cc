"""FashionIQ and CIRR readers and protocols on the real annotation files, with generated stand-in images.

Stand-ins: every connected group of (reference, target) images gets one picture, so with the `image`
combiner each target scores exactly like its reference. Any wiring mistake (wrong row, wrong id,
reference not removed) then shows up as a recall below 1. Images not generated count as missing.
"""

import json
from pathlib import Path

from PIL import Image
from tests.support.data import needs_data

from vitrine.cir.compose import Composer
from vitrine.cir.protocols import evaluate_cirr, evaluate_fashioniq, fashioniq_text

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
pytestmark = needs_data("fashioniq", "cirr")


def groups(pairs):
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    return {x: find(x) for x in list(parent)}


def paint(path: Path, group: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((group * 97) % 256, (group * 53 + 40) % 256, (group * 151 + 90) % 256)
    image = Image.new("RGB", (24, 32), colour)
    image.paste((255 - colour[0], colour[2], colour[1]), (0, 0, 6 + group % 12, 8 + group % 17))
    image.save(path)


class ColourCode:
    """An encoder whose image embedding is a one-hot of the picture's colour: identical stand-ins score exactly 1,
    different ones 0, so ranks have no floating-point ties to break."""

    name, embed_dim = "test:colour-code", 97

    def preprocess(self, images):
        import torch

        return torch.tensor([hash(image.getpixel((23, 31))) % self.embed_dim for image in images])

    def encode_image(self, codes):
        import torch

        return torch.nn.functional.one_hot(codes, self.embed_dim).float()

    def encode_text(self, texts):
        import torch

        generator = torch.Generator().manual_seed(len(texts))
        return torch.nn.functional.normalize(torch.randn(len(texts), self.embed_dim, generator=generator), dim=-1)


def test_fashioniq_join_follows_clip4cir():
    assert (
        fashioniq_text(["is shiny and silver with shorter sleeves", "fit and flare."])
        == "Is shiny and silver with shorter sleeves and fit and flare"
    )
    import random

    flipped = {fashioniq_text(["a", "b"], random.Random(seed)) for seed in range(20)}
    assert flipped == {"A and b", "B and a"}


def test_fashioniq_protocol_on_real_annotations(tmp_path, small_model):
    every = json.loads((SHARED / "fashioniq/captions/cap.dress.val.json").read_text())
    painted = {n for c in every[:40] for n in (c["candidate"], c["target"])}
    # every query among painted images gets one picture for reference and target
    owner = groups((c["candidate"], c["target"]) for c in every if c["candidate"] in painted and c["target"] in painted)
    labels = {root: i for i, root in enumerate(sorted(set(owner.values())))}
    for name, root in owner.items():
        paint(tmp_path / "images" / f"{name}.png", labels[root])
    report = evaluate_fashioniq(
        Composer(small_model, "image"), SHARED / "fashioniq", tmp_path / "images", categories=["dress", "shirt"],
        progress=False,
    )
    dress = report["categories"]["dress"]
    split = json.loads((SHARED / "fashioniq/image_splits/split.dress.val.json").read_text())
    present = len({n for n in owner if n in set(split)})
    assert dress["gallery_size"] == present and dress["missing_images"] == len(split) - present
    assert dress["n_queries"] == sum(c["candidate"] in owner and c["target"] in owner for c in every) >= 40
    assert dress["skipped_queries"] == len(every) - dress["n_queries"]
    assert dress["R@10"] == dress["R@50"] == 1.0
    assert (
        report["categories"]["shirt"]["n_queries"] == 0 and "R@10" not in report["categories"]["shirt"]
    )  # all missing: reported, not fatal
    assert report["R@10"] == 1.0 and report["average"] == 1.0
    from vitrine.cli import main

    assert (
        main(
            [
                "eval", "composed", "--protocol", "fashioniq", "--data", str(SHARED / "fashioniq"), "--images",
                str(tmp_path / "images"), "--model", "vitrine:small", "--combiner", "image", "--json", "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval", "composed", "--protocol", "cirr", "--data", str(SHARED / "cirr"), "--images",
                str(tmp_path / "nowhere"), "--model", "vitrine:small", "--combiner", "image", "--no-progress",
            ]
        )
        == 2
    )  # a clear error, no traceback


def test_cirr_protocol_and_submission_on_real_annotations(tmp_path):
    root = SHARED / "cirr"
    for split, count in (("val", 30), ("test1", 10)):
        every = json.loads((root / f"captions/cap.rc2.{split}.json").read_text())
        paths = json.loads((root / f"image_splits/split.rc2.{split}.json").read_text())
        painted = {
            n
            for c in every[:count]
            for n in (c["reference"], c.get("target_hard") or c["reference"], *c["img_set"]["members"])
        }
        pairs = [
            (c["reference"], c.get("target_hard") or c["reference"])
            for c in every
            if c["reference"] in painted and (c.get("target_hard") or c["reference"]) in painted
        ]
        owner = groups(pairs + [(n, n) for n in painted])
        labels = {r: i for i, r in enumerate(sorted(set(owner.values())))}
        for name, r in owner.items():
            paint(tmp_path / "images" / paths[name], labels[r])
    composer = Composer(ColourCode(), "image")
    report = evaluate_cirr(composer, root, tmp_path / "images", split="val", progress=False)
    every = json.loads((root / "captions/cap.rc2.val.json").read_text())
    assert report["n_queries"] >= 30 and report["n_queries"] + report["skipped_queries"] == len(every)
    assert report["R@1"] == 1.0 and report["Rsubset@1"] == 1.0
    assert (
        report["missing_images"]
        == len(json.loads((root / "image_splits/split.rc2.val.json").read_text())) - report["gallery_size"]
    )
    # the `text` combiner ignores the reference image: recall can no longer be perfect on this gallery
    assert (
        evaluate_cirr(Composer(ColourCode(), "text"), root, tmp_path / "images", split="val", progress=False)["R@1"]
        < 1.0
    )

    test = evaluate_cirr(
        composer, root, tmp_path / "images", split="test1", submission=tmp_path / "sub", progress=False
    )
    assert test["n_queries"] >= 10 and "R@1" not in test
    recall_file = json.loads((tmp_path / "sub/recall_submission.json").read_text())
    subset_file = json.loads((tmp_path / "sub/recall_subset_submission.json").read_text())
    assert recall_file["version"] == subset_file["version"] == "rc2"
    assert (recall_file["metric"], subset_file["metric"]) == ("recall", "recall_subset")
    captions = json.loads((root / "captions/cap.rc2.test1.json").read_text())[:10]
    for c in captions:
        top, sub = recall_file[str(c["pairid"])], subset_file[str(c["pairid"])]
        assert len(top) == min(50, test["gallery_size"] - 1) and c["reference"] not in top
        assert len(sub) == 3 and c["reference"] not in sub and set(sub) <= set(c["img_set"]["members"])
