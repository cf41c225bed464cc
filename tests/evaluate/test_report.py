"""`vitrine eval zero-shot|retrieval|composed|attributes --report DIR`: the JSON carries the figures the pictures show
(checked against direct computations), and the page's images and links all point to real, decodable files."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from tests.conftest import COLOURS, colour_triplets, colourway_rows, jpeg_bytes, make_rows, write_folder, write_shards

from vitrine.cli import main
from vitrine.data.catalog import open_catalog
from vitrine.evaluate.zeroshot import confusion_figures

MODEL = ["--model", "vitrine:small"]


def check_page(folder: Path) -> str:
    """index.html exists; every <img src> is a non-empty PNG/JPEG that decodes; every <a href> exists."""
    page = (folder / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert sources and len(sources) == page.count("<img ")
    assert all(re.search(r'alt="[^"]+"', tag) for tag in re.findall(r"<img [^>]*>", page))
    for src in sources:
        path = folder / src
        assert path.suffix in (".png", ".jpg") and path.is_file() and path.stat().st_size > 0, src
        with Image.open(path) as image:
            assert image.format == ("PNG" if path.suffix == ".png" else "JPEG")
            image.load()
    for href in re.findall(r'<a [^>]*href="([^"]+)"', page):
        assert (folder / href).is_file(), href
    assert json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return page


def run_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def embeddings(model, path) -> tuple[list, torch.Tensor]:
    items = list(open_catalog(path))
    with torch.no_grad():
        return items, model.encode_image(model.preprocess([i.image for i in items]))


def test_confusion_figures_by_hand():
    # true:      a a a b b c c d
    # predicted: a b b a b a c a
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    predictions = torch.tensor([0, 1, 1, 0, 1, 0, 2, 0])
    figures = confusion_figures(predictions, labels, ["a", "b", "c", "d"], n_classes=3, n_pairs=2)
    # mistakes made + received: a 2 + 3 = 5, b 1 + 2 = 3, c 1, d 1 -> a, b, then c before d by name
    assert figures["confusion"] == {"classes": ["a", "b", "c"], "counts": [[1, 2, 0], [1, 1, 0], [1, 0, 1]]}
    assert figures["confused_pairs"] == [
        {"true": "a", "predicted": "b", "count": 2}, {"true": "b", "predicted": "a", "count": 1},
    ]
    perfect = confusion_figures(labels, labels, ["a", "b", "c", "d"])
    assert perfect == {"confusion": {"classes": [], "counts": []}, "confused_pairs": []}


def test_top_rows_put_targets_first_among_equal_scores():
    from vitrine.evaluate.metrics import top_rows

    scores = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.9, -torch.inf])
    assert top_rows(scores, 2) == [1, 2]
    assert top_rows(scores, 2, favoured=[4]) == [
        4,
        1,
    ]  # target_ranks gives row 4 rank 0: nothing scores strictly higher
    assert top_rows(scores, 4, favoured=[3]) == [1, 2, 4, 0]
    assert top_rows(scores, 9) == [1, 2, 4, 0, 3, 5] and top_rows(scores, 0) == []


def test_zero_shot_report(tmp_path, capsys, small_model):
    rows = make_rows(24)
    write_folder(tmp_path / "cat", rows)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.html").write_text("stale")  # an existing folder is written into
    report = run_json(
        capsys,
        [
            "eval", "zero-shot", "--data", str(tmp_path / "cat"), "--field", "baseColour", *MODEL, "--report",
            str(tmp_path / "out"), "--json", "--no-progress",
        ],
    )
    # direct computation: the same prompts, the same argmax
    from vitrine.data.prompts import resolve_prompts
    from vitrine.evaluate.zeroshot import class_embeddings

    items, embeds = embeddings(small_model, tmp_path / "cat")
    classes = sorted(COLOURS)
    predicted = (embeds @ class_embeddings(small_model, resolve_prompts(None), "baseColour", classes).t()).argmax(1)
    mistakes = Counter(
        (item.attributes["baseColour"], classes[p])
        for item, p in zip(items, predicted.tolist())
        if item.attributes["baseColour"] != classes[p]
    )
    assert {(p["true"], p["predicted"]): p["count"] for p in report["confused_pairs"]} == dict(mistakes)
    shown = report["confusion"]["classes"]
    assert set(shown) == {c for pair in mistakes for c in pair}
    for i, true in enumerate(shown):
        for j, guess in enumerate(shown):
            expected = report["per_class"][true]["correct"] if i == j else mistakes.get((true, guess), 0)
            assert report["confusion"]["counts"][i][j] == expected
    page = check_page(tmp_path / "out")
    assert page != "stale" and 'src="confusion.png"' in page and 'src="per_class.png"' in page
    assert f"<b>{report['top1']}</b><span>top1</span>" in page
    # a file where the folder should be: a one-line error before anything runs
    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "eval", "zero-shot", "--data", str(tmp_path / "cat"), "--field", "baseColour", *MODEL, "--report",
                str(tmp_path / "file"),
            ]
        )
        == 2
    )
    assert "a file is there, not a folder" in capsys.readouterr().err


def test_retrieval_report_lists_the_worst_queries(tmp_path, capsys, small_model):
    rows = make_rows(16)
    rows[3]["title"] = 'A "quoted" <b>bold</b> & title'  # escaped in the page
    images = {
        r["id"]: jpeg_bytes(((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)) for i, r in enumerate(rows)
    }  # no two alike: no tied ranks
    write_shards(tmp_path / "q", rows[:10], per_shard=4, images=images)
    write_folder(tmp_path / "g", rows, images=images)
    report = run_json(
        capsys,
        [
            "eval", "retrieval", "--data", str(tmp_path / "q"), "--gallery", str(tmp_path / "g"), *MODEL, "--report",
            str(tmp_path / "out"), "--json", "--no-progress",
        ],
    )
    items, gallery = embeddings(small_model, tmp_path / "g")
    with torch.no_grad():
        queries = small_model.encode_text([r["title"] for r in rows[:10]])
    scores = queries @ gallery.t()
    ranks = [
        int((scores[i] > scores[i, i]).sum()) + 1 for i in range(10)
    ]  # gallery rows: q's 10 ids first, then g's others
    worst = sorted(range(10), key=lambda i: (-ranks[i], i))
    assert [(q["query"], q["target_id"], q["rank"]) for q in report["worst_queries"]] == [
        (rows[i]["title"], rows[i]["id"], ranks[i]) for i in worst
    ]
    for q, i in zip(report["worst_queries"], worst):
        assert q["top5"] == [items[g].id for g in scores[i].topk(5).indices.tolist()]
    page = check_page(tmp_path / "out")
    assert "A &quot;quoted&quot; &lt;b&gt;bold&lt;/b&gt; &amp; title" in page and "<b>bold</b>" not in page
    thumbs = {p.name for p in (tmp_path / "out" / "thumbs").iterdir()}
    assert thumbs == {f"{i}.jpg" for q in report["worst_queries"] for i in (q["target_id"], *q["top5"])}
    assert max(Image.open(tmp_path / "out" / "thumbs" / name).size[1] for name in thumbs) <= 160


def test_composed_report_shows_successes_and_failures(tmp_path, capsys):
    rows = colourway_rows(("Puma", "Nike"), id_prefix="p/")
    write_shards(tmp_path / "cat", rows, per_shard=8)  # ids with a '/' become safe file names
    colour_triplets(str(tmp_path / "cat"), str(tmp_path / "t.jsonl"))
    report = run_json(
        capsys,
        [
            "eval", "composed", "--data", str(tmp_path / "cat"), "--triplets", str(tmp_path / "t.jsonl"), *MODEL,
            "--combiner", "sum", "--cache-dir", str(tmp_path / "cache"), "--report", str(tmp_path / "out"), "--json",
            "--no-progress",
        ],
    )
    triplets = {
        (t["reference"], t["modification"]): t for t in map(json.loads, (tmp_path / "t.jsonl").read_text().splitlines())
    }
    examples = report["examples"]
    assert examples["successes"] and examples["failures"] and len(examples["failures"]) <= 6
    assert all(x["rank"] == 1 for x in examples["successes"]) and all(x["rank"] > 1 for x in examples["failures"])
    assert [x["rank"] for x in examples["failures"]] == sorted((x["rank"] for x in examples["failures"]), reverse=True)
    hits = round(report["R@1"] * report["n_queries"])
    assert len(examples["successes"]) == min(6, hits)
    for x in examples["successes"] + examples["failures"]:
        triplet = triplets[(x["reference"], x["modification"])]
        assert x["reference"] not in x["top5"] and len(x["top5"]) == 5
        assert x["target"] in triplet["targets"] and x["n_targets"] == len(triplet["targets"])
        assert x["top5_is_target"] == [i in triplet["targets"] for i in x["top5"]]
        assert (x["rank"] == 1) == (x["top5"][0] == x["target"])
        assert x["kind"] == "colour"
    page = check_page(tmp_path / "out")
    assert "Successes" in page and "Failures" in page and "p/101" in page
    assert all(re.fullmatch(r"p_1\d\d-[0-9a-f]{10}\.jpg", p.name) for p in (tmp_path / "out" / "thumbs").iterdir())


def test_attributes_report(tmp_path, capsys):
    write_folder(tmp_path / "cat", make_rows(12))
    report = run_json(
        capsys,
        [
            "eval", "attributes", "--data", str(tmp_path / "cat"), *MODEL, "--attributes", "gender,baseColour",
            "--split", "all", "--report", str(tmp_path / "out"), "--json", "--no-progress",
        ],
    )
    assert set(report["per_attribute"]) == {"gender", "baseColour"}
    page = check_page(tmp_path / "out")
    assert 'src="attributes.png"' in page and f"<b>{report['mean_precision']}</b><span>mean_precision</span>" in page
    with Image.open(tmp_path / "out" / "attributes.png") as image:
        assert image.size[0] >= 400 and image.size[1] >= 300


def test_a_protocol_without_catalog_images_gets_a_page_with_a_note(tmp_path):
    from vitrine.evaluate.report import write_report

    report = {
        "categories": {
            "dress": {"n_queries": 3, "gallery_size": 9, "R@10": 1.0, "R@50": 1.0},
            "shirt": {"n_queries": 0, "gallery_size": 0},
        },
        "R@10": 1.0,
        "R@50": 1.0,
        "average": 1.0,
    }
    page = write_report(
        "composed", report, tmp_path / "out", command="vitrine eval composed --protocol fashioniq", progress=False
    )
    text = check_page(page.parent)
    assert "No example pictures" in text and "<th>categories</th>" in text and "<b>1.0</b><span>average</span>" in text
    with pytest.raises(ValueError, match="no report for"):
        write_report("leaderboard", report, tmp_path / "out")


def test_only_the_report_writer_imports_matplotlib_and_only_lazily():
    import ast

    root = Path(__file__).resolve().parents[2] / "src" / "vitrine"
    found = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "matplotlib" for name in names):
                found.setdefault(str(path.relative_to(root)), set()).add(
                    "top level" if id(node) in top_level else "in a function"
                )
    assert found == {"evaluate/report.py": {"in a function"}}
