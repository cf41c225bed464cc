"""KAGL-style triplets from real-looking titles, the triplet file format, and both CIR training stages end to end."""

import json

import pytest
from tests.conftest import cir_catalog, cir_config

from vitrine.cir.train import train_cir
from vitrine.cir.triplets import Triplet, make_kagl_triplets, read_triplets, write_triplets
from vitrine.cli import main
from vitrine.data.records import Item


def item(i, title, colour, gender="Men", article="Tshirts"):
    return Item(
        id=str(i), image=None, title=title, attributes={"baseColour": colour, "gender": gender, "articleType": article}
    )


ITEMS = [
    item(1, "Puma Men Black Net Jersey", "Black"),
    item(2, "Puma Men Red Net Jersey", "Red"),
    item(3, "PUMA Men Red Net Jersey", "Red"),  # a duplicate: also a target
    item(4, "Puma Men Navy Blue Net Jersey", "Navy Blue"),
    item(5, "Puma Women Black Net Jersey", "Black", gender="Women"),
    item(6, "Puma Men Black Net Jersey", "Black", article="Jackets"),  # other article type: never paired with 1-4
    item(7, "Nike Men Black Net Jersey", "Black"),  # other brand
]


def test_colourway_and_gender_triplets():
    triplets = make_kagl_triplets(ITEMS)
    by_pair = {(t.reference, t.kind, t.targets): t.modification for t in triplets}
    assert {(r, k, tg) for r, k, tg in by_pair if r == "1"} == {
        ("1", "colour", ("2", "3")), ("1", "colour", ("4",)), ("1", "gender", ("5",)),
    }
    assert by_pair[("4", "colour", ("1",))].endswith("black") and "navy blue" in by_pair[("1", "colour", ("4",))]
    assert by_pair[("5", "gender", ("1",))].endswith("men") and by_pair[("1", "gender", ("5",))].endswith("women")
    assert not any(t.reference in ("6", "7") or {"6", "7"} & set(t.targets) for t in triplets)
    assert make_kagl_triplets(ITEMS) == triplets  # deterministic templates


def test_triplet_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "t.jsonl"
    assert write_triplets(path, [Triplet("1", "in red", ("2", "3"), "colour")]) == 1
    assert read_triplets(path) == [Triplet("1", "in red", ("2", "3"), "colour")]
    (tmp_path / "other.jsonl").write_text('{"reference": 5, "modification": "darker", "targets": [6]}\n\n')
    assert read_triplets(tmp_path / "other.jsonl") == [Triplet("5", "darker", ("6",))]  # other tools' files, int ids
    for text, message in (
        ("{oops", "line 1: not valid JSON"),
        ('{"reference": "1", "modification": "", "targets": ["2"]}', "modification"),
        ('{"reference": "1", "modification": "x", "targets": []}', "targets"),
        ("", "no triplets"),
    ):
        (tmp_path / "bad.jsonl").write_text(text)
        with pytest.raises(ValueError, match=message):
            read_triplets(tmp_path / "bad.jsonl")


def test_make_triplets_cli_and_both_stages_resume(tmp_path, capsys):
    cir_catalog(tmp_path)
    triplets = read_triplets(tmp_path / "all.jsonl")
    assert len(triplets) == 6 * 5 * 4  # 6 groups of 5 colourways, 4 targets each
    config = cir_config(tmp_path, stage=1, out=str(tmp_path / "s1"), epochs=2)
    first = train_cir(config.replace(max_steps=10), progress=False)
    assert first.steps == 10
    done = train_cir(config, progress=False)  # resumes at step 10 of 16
    assert done.steps == 16 and set(done.metrics) >= {"R@1", "R@10", "R@50", "n_queries"}
    saved = json.loads((tmp_path / "s1/combiner/combiner.json").read_text())
    assert (
        saved["kind"] == "sum"
        and saved["encoder"] == "vitrine:small"
        and (tmp_path / "s1/combiner/text_projection.safetensors").is_file()
    )
    with pytest.raises(ValueError, match="different cir config"):
        train_cir(config.replace(lr=5e-3), progress=False)

    assert (
        main(
            [
                "train", "cir", "--stage", "2", "--data", str(tmp_path / "cat"), "--triplets",
                str(tmp_path / "all.jsonl"), "--val-triplets", str(tmp_path / "all.jsonl"), "--model", "vitrine:small",
                "--start", str(tmp_path / "s1/combiner"), "--out", str(tmp_path / "s2"), "--epochs", "2",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval", "composed", "--data", str(tmp_path / "cat"), "--triplets", str(tmp_path / "all.jsonl"),
                "--model", "vitrine:small", "--combiner", str(tmp_path / "s2/combiner"), "--cache-dir",
                str(tmp_path / "cache"), "--json", "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (
        report["n_queries"] == 120
        and report["gallery_size"] == 30
        and 0 <= report["R@1"] <= report["R@10"] <= report["R@50"] == 1.0
    )
    assert (
        main(
            [
                "eval", "composed", "--data", str(tmp_path / "cat"), "--triplets", str(tmp_path / "all.jsonl"),
                "--combiner", str(tmp_path / "s2/combiner"), "--no-progress",
            ]
        )
        == 2
    )  # trained on vitrine:small, default model differs
    assert "trained on vitrine:small" in capsys.readouterr().err
