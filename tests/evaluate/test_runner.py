"""`vitrine eval zero-shot|retrieval` on tiny catalogs: output shape, splits, distractors, and agreement with a direct
computation."""

import json

import torch
from tests.conftest import make_rows, write_folder, write_shards

from vitrine.cli import main
from vitrine.data.catalog import open_catalog
from vitrine.data.splits import SplitConfig
from vitrine.evaluate.runner import run_retrieval, run_zero_shot


def test_zero_shot_report_and_classes_from(tmp_path, small_model):
    rows = make_rows(12)
    write_folder(tmp_path / "a", rows[:8])
    other = make_rows(12)[8:]
    for row in other:
        row["baseColour"] = "Purple"
    write_folder(tmp_path / "b", other)
    report = run_zero_shot(
        str(tmp_path / "a"), "baseColour", small_model, classes_from=[str(tmp_path / "b")], progress=False
    )
    assert report["field"] == "baseColour" and report["n"] == 8
    assert report["classes"] == 6  # five colours of a, plus Purple from b
    assert sum(c["n"] for c in report["per_class"].values()) == 8
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0
    usage = run_zero_shot(str(tmp_path / "a"), "usage", small_model, progress=False)
    assert usage["n"] == sum(1 for r in rows[:8] if r["usage"] != "NA")  # NA values are skipped
    single = run_zero_shot(str(tmp_path / "a"), "baseColour", small_model, ensemble=False, progress=False)
    assert single["ensemble"] is False


def test_retrieval_with_distractors_matches_a_direct_computation(tmp_path, small_model):
    rows = make_rows(10)
    write_shards(tmp_path / "q", rows[:6], per_shard=3)
    write_folder(tmp_path / "g", rows)  # shares 6 ids with q: they must not be counted twice
    report = run_retrieval(str(tmp_path / "q"), small_model, galleries=[str(tmp_path / "g")], progress=False)
    assert report["n_queries"] == 6 and report["gallery_size"] == 10
    items = list(open_catalog(tmp_path / "g"))
    with torch.no_grad():
        gallery = small_model.encode_image(small_model.preprocess([i.image for i in items]))
        queries = small_model.encode_text([r["title"] for r in rows[:6]])
    top1 = (queries @ gallery.t()).argmax(1)
    assert report["R@1"] == round(float((top1 == torch.arange(6)).float().mean()), 4)
    assert set(report["image_to_text"]) == {"n_queries", "gallery_size", "R@1", "R@5", "R@10", "MRR"}


def test_split_selection_and_cli_json(tmp_path, capsys):
    rows = make_rows(20)
    write_folder(tmp_path / "cat", rows)
    split = SplitConfig(seed=0, val_fraction=0.3, holdout_field="articleType", holdout_values=("Jeans",))
    (tmp_path / "split.json").write_text(
        json.dumps(
            {"split": {"seed": 0, "val_fraction": 0.3, "holdout_field": "articleType", "holdout_values": ["Jeans"]}}
        )
    )
    unseen = [r for r in rows if split.assign(r["id"], r) == "unseen"]
    code = main(
        [
            "eval", "zero-shot", "--data", str(tmp_path / "cat"), "--field", "articleType", "--split", "unseen",
            "--split-config", str(tmp_path / "split.json"), "--classes-from", str(tmp_path / "cat"), "--json",
            "--no-progress",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["n"] == len(unseen) == 5 and report["classes"] == 4
    assert set(report["per_class"]) == {"Jeans"}
    code = main(
        [
            "eval", "retrieval", "--data", str(tmp_path / "cat"), "--split", "heldout", "--split-config",
            str(tmp_path / "split.json"), "--gallery", str(tmp_path / "cat"), "--json", "--no-progress",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    heldout = [r for r in rows if split.assign(r["id"], r) in ("val", "unseen")]
    assert code == 0 and report["n_queries"] == len(heldout) and report["gallery_size"] == 20
