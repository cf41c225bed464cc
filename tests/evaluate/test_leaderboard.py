"""`vitrine eval kagl-leaderboard`: the leaderboard's metrics on hand-computed cases, its query sampling, the
0.9 image + 0.1 title documents, and the CLI's table and clip_benchmark-shaped records."""

import json

import torch
import torch.nn.functional as F
from tests.conftest import make_rows, write_folder

from vitrine.cli import main
from vitrine.data.records import Item
from vitrine.evaluate.leaderboard import documents, retrieval_metrics, run_leaderboard
from vitrine.evaluate.leaderboard_tasks import TASKS, leaderboard_table, output_name, task_queries


def test_metrics_follow_the_leaderboard_definitions():
    # query 0: relevant {5, 7}; 7 at rank 1, 5 at rank 4 -> R@1 1/2, R@10 1, P@1 1, P@10 2/10, MRR 1
    # query 1: relevant {9}; found at rank 3 -> R@1 0, R@10 1, P@1 0, P@10 1/10, MRR 1/3
    # query 2: relevant {0}; not retrieved -> all 0
    top = torch.tensor(
        [[7, 1, 2, 5, 3, 4, 6, 8, 9, 10], [1, 2, 9, 3, 4, 5, 6, 7, 8, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    )
    metrics = retrieval_metrics(top, [[5, 7], [9], [0]])
    assert metrics["recall@1"] == round(0.5 / 3, 5)
    assert metrics["recall@10"] == round(2 / 3, 5)
    assert metrics["precision@1"] == round(1 / 3, 5)
    assert metrics["precision@10"] == round(0.3 / 3, 5)
    assert metrics["mrr"] == round((1 + 1 / 3) / 3, 5)


def _items(titles, categories):
    return [
        Item(id=str(i), image=None, title=t, attributes={"masterCategory": c, "subCategory": c}, source="x", row=i)
        for i, (t, c) in enumerate(zip(titles, categories))
    ]


def test_queries_group_identical_titles_and_sample_with_the_seed():
    items = _items(["a", "b", "a", "c", " ", None], ["Apparel", "Footwear", "Apparel", None, "NA-free", "Apparel"])
    queries = task_queries(items, TASKS["text-to-image"])
    assert queries == {"a": [0, 2], "b": [1], "c": [3]}  # blank and missing titles are no queries
    categories = task_queries(items, TASKS["category-to-product"])
    assert categories["Apparel"] == [0, 2, 5] and "None" not in categories
    many = _items([f"title {i}" for i in range(50)], ["Apparel"] * 50)
    first, again = (
        task_queries(many, TASKS["text-to-image"], max_queries=10, seed=3),
        task_queries(many, TASKS["text-to-image"], max_queries=10, seed=3),
    )
    other = task_queries(many, TASKS["text-to-image"], max_queries=10, seed=4)
    assert len(first) == 10 and first == again and first != other


def test_documents_mix_unit_image_and_title_vectors():
    image, title = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    doc = documents(image, title, (0.9, 0.1))
    assert torch.allclose(doc, F.normalize(torch.tensor([[0.9, 0.1]]), dim=-1))
    assert torch.allclose(documents(image, title, (1.0, 0.0)), torch.tensor([[1.0, 0.0]]))


def test_run_matches_a_direct_computation(tmp_path, small_model):
    rows = make_rows(12)
    rows[3]["title"] = rows[0]["title"]  # two products share a title: both are relevant to it
    rows[5]["masterCategory"] = "Footwear"
    write_folder(tmp_path / "cat", rows)
    records = run_leaderboard(str(tmp_path / "cat"), small_model, cache_dir=None, progress=False)
    assert [r["task"] for r in records] == list(TASKS)
    text = records[0]
    assert text["dataset"] == "kagl" and text["model"] == small_model.name
    assert text["details"]["n_queries"] == 11 and text["details"]["gallery_size"] == 12
    from vitrine.data.catalog import open_catalog

    items = list(open_catalog(tmp_path / "cat"))
    with torch.no_grad():
        images = F.normalize(small_model.encode_image(small_model.preprocess([i.image for i in items])), dim=-1)
        titles = F.normalize(small_model.encode_text([i.title for i in items]), dim=-1)
    queries = sorted({i.title for i in items})
    scores = F.normalize(small_model.encode_text(queries), dim=-1) @ images.t()
    hits_at_1 = [
        sum(items[j].title == q for j in scores[n].topk(1).indices.tolist()) / sum(i.title == q for i in items)
        for n, q in enumerate(queries)
    ]
    assert abs(text["metrics"]["recall@1"] - sum(hits_at_1) / len(queries)) < 1e-4
    category = records[1]
    assert category["details"]["n_queries"] == 2  # Apparel, Footwear
    docs = F.normalize(0.9 * images + 0.1 * titles, dim=-1)
    apparel = F.normalize(small_model.encode_text(["Apparel"]), dim=-1) @ docs.t()
    footwear = F.normalize(small_model.encode_text(["Footwear"]), dim=-1) @ docs.t()
    p_at_1 = (items[int(apparel.argmax())].attributes["masterCategory"] == "Apparel") + (
        items[int(footwear.argmax())].attributes["masterCategory"] == "Footwear"
    )
    assert abs(category["metrics"]["precision@1"] - p_at_1 / 2) < 1e-6


def test_cli_prints_the_table_and_writes_records(tmp_path, capsys):
    write_folder(tmp_path / "cat", make_rows(8))
    code = main(
        [
            "eval", "kagl-leaderboard", "--data", str(tmp_path / "cat"), "--model", "vitrine:small", "--tasks",
            "text-to-image", "category-to-product", "--output", str(tmp_path / "out"), "--cache-dir", "",
            "--no-progress",
        ]
    )
    table = capsys.readouterr().out
    assert code == 0
    assert "| Marqo-FashionSigLIP (published) | 0.334 | 0.179 | 0.489 | 0.293 | |" in table
    assert "### text-to-image" in table and "### category-to-product" in table and "sub-category" not in table
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["kagl_vitrine-small_category-to-product.json", "kagl_vitrine-small_text-to-image.json"]
    record = json.loads((tmp_path / "out" / files[1]).read_text())
    assert set(record) == {"dataset", "model", "task", "metrics", "details"}
    assert set(record["metrics"]) == {"recall@1", "recall@10", "precision@1", "precision@10", "mrr"}
    recall = record["metrics"]
    row = f"| vitrine:small | {(recall['recall@1'] + recall['recall@10']) / 2:.3f} | {recall['recall@1']:.3f}"
    assert row in table


def test_unknown_task_is_refused(tmp_path, small_model):
    import pytest

    write_folder(tmp_path / "cat", make_rows(4))
    with pytest.raises(ValueError, match="unknown leaderboard task"):
        run_leaderboard(str(tmp_path / "cat"), small_model, tasks=["colour-to-product"], cache_dir=None, progress=False)
    assert output_name({"dataset": "kagl", "model": "hf:/a b/c", "task": "t"}) == "kagl_hf--a-b-c_t.json"
    assert "published" not in leaderboard_table([], with_published=True)


def test_query_split_samples_titles_of_the_accepted_products_against_the_whole_gallery(tmp_path, small_model):
    items = _items(["a", "b", "a", "c"], ["Apparel"] * 4)
    only_b_and_a = task_queries(items, TASKS["text-to-image"], query_filter=lambda item: item.id in {"1", "2"})
    assert only_b_and_a == {"a": [0, 2], "b": [1]}  # "a" keeps its relevant product outside the split
    rows = make_rows(12)
    write_folder(tmp_path / "cat", rows)
    records = run_leaderboard(
        str(tmp_path / "cat"), small_model, cache_dir=None, progress=False,
        tasks=["text-to-image", "category-to-product"], query_filter=lambda item: int(item.id) % 3 == 0,
        query_split="val",
    )
    assert records[0]["details"]["n_queries"] == 4 and records[0]["details"]["gallery_size"] == 12
    assert records[0]["details"]["query_split"] == "val" and records[1]["details"]["query_split"] == "all"
    assert records[1]["details"]["n_queries"] == 1  # category queries are the field's values either way


def test_cli_query_split_reads_the_models_own_split(tmp_path, capsys):
    import json as _json

    write_folder(tmp_path / "cat", make_rows(40))
    (tmp_path / "split.json").write_text(_json.dumps({"split": {"seed": 0, "val_fraction": 0.25}}))
    code = main(
        [
            "eval", "kagl-leaderboard", "--data", str(tmp_path / "cat"), "--model", "vitrine:small", "--tasks",
            "text-to-image", "--query-split", "val", "--split-config", str(tmp_path / "split.json"), "--cache-dir", "",
            "--json", "--no-progress",
        ]
    )
    record = _json.loads(capsys.readouterr().out)[0]
    from vitrine.data.splits import load_split_config

    split = load_split_config(str(tmp_path / "split.json"))
    val = [r for r in make_rows(40) if split.assign(r["id"], r) == "val"]
    assert (
        code == 0
        and record["details"]["query_split"] == "val"
        and record["details"]["n_queries"] == len({r["title"] for r in val}) > 0
    )
