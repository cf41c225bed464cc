"""`vitrine index build` resumes after a crash with exactly the right products; `vitrine search` answers and refuses
clearly."""

import json

import pytest
from tests.conftest import make_rows, write_folder, write_shards

from vitrine.cli import main
from vitrine.data.images import load_image
from vitrine.index.build import build_index
from vitrine.index.faiss_store import FaissStore, IndexMismatchError
from vitrine.search import Query, SearchEngine, parse_filters


class CrashAfter:
    """A real encoder that raises after `n` image batches, like a kill mid-build."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0
        self.name, self.embed_dim, self.image_transform = inner.name, inner.embed_dim, inner.image_transform

    def encode_image(self, pixels):
        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt("killed")
        return self.inner.encode_image(pixels)


def test_interrupted_build_resumes_without_duplicates(tmp_path, small_model):
    write_shards(tmp_path / "shards", make_rows(37), per_shard=10)
    index = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        build_index(
            str(tmp_path / "shards"), str(index), CrashAfter(small_model, 5), batch_size=4, commit_every=8,
            progress=False,
        )
    partial = FaissStore.open(index)
    assert partial.stats()["products"] == 16  # two commits of 8 survived the crash
    partial.close()
    result = build_index(
        str(tmp_path / "shards"), str(index), small_model, batch_size=4, commit_every=8, progress=False
    )
    assert result.added == 37 - 16 and result.products == 37
    store = FaissStore.open(index)
    assert store.stats()["vectors"] == store.meta.count() == 37
    store.close()


def test_search_engine_text_image_filters_and_refusals(tmp_path, small_model, capsys):
    rows = make_rows(12)
    write_folder(tmp_path / "cat", rows)
    build_index(str(tmp_path / "cat"), str(tmp_path / "idx"), small_model, progress=False)
    engine = SearchEngine(str(tmp_path / "idx"))
    ranked = engine.rank(Query(image=load_image(tmp_path / "cat" / "images" / "1003.jpg"), k=3))
    # ids 1003 and 1008 share a colour, so their generated images are identical: both score 1. The query image is a
    # stored product's photo, so that product is left out of its own results (one of the two), the other stays first.
    assert len(ranked.excluded) == 1 and ranked.excluded[0] in {"1003", "1008"}
    assert ranked.hits[0].id == ({"1003", "1008"} - set(ranked.excluded)).pop()
    assert ranked.hits[0].score == pytest.approx(1.0, abs=1e-4)
    women = engine.text("a dress", k=12, filters={"gender": ["Women"]})
    assert len(women) == 6 and all(h.metadata["gender"] == "Women" for h in women)
    with pytest.raises(
        ValueError, match="no product has gender='Nobody'"
    ):  # refused as HTTP refuses it (tests/ranking/test_filters.py)
        engine.text("a dress", k=5, filters={"gender": ["Nobody"]})
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(Exception, match="bad.jpg: file is not an image"):
        engine.image(str(tmp_path / "bad.jpg"))
    engine.close()
    with pytest.raises(IndexMismatchError, match="cannot be queried"):
        SearchEngine(str(tmp_path / "idx"), model="vitrine:kagl-small")
    assert (
        main(
            [
                "search", "--index", str(tmp_path / "idx"), "--text", "red t-shirt", "-k", "2", "--filter",
                "gender=Men", "--json",
            ]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["rank"] for r in results] == [1, 2] and all(r["attributes"]["gender"] == "Men" for r in results)
    assert main(["search", "--index", str(tmp_path / "idx"), "--image", str(tmp_path / "bad.jpg")]) == 2
    assert "not an image" in capsys.readouterr().err
    # ranking options: words only, and paging that continues the ranks
    assert main(["search", "--index", str(tmp_path / "idx"), "--text", "jeans", "--mode", "lexical", "--json"]) == 0
    lexical = json.loads(capsys.readouterr().out)["results"]
    assert lexical and all(r["attributes"]["articleType"] == "Jeans" for r in lexical)
    assert (
        main(
            [
                "search", "--index", str(tmp_path / "idx"), "--text", "red t-shirt", "-k", "2", "--offset", "2",
                "--no-soft-filters", "--json",
            ]
        )
        == 0
    )
    assert [r["rank"] for r in json.loads(capsys.readouterr().out)["results"]] == [3, 4]


def test_cli_index_options_stats_and_bad_values(tmp_path, capsys):
    from vitrine.cli import _parse_bytes

    assert _parse_bytes("8G") == 8 * 2**30 and _parse_bytes("512MiB") == 512 * 2**20 and _parse_bytes("1000") == 1000
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ValueError, match="memory size"):
            _parse_bytes(bad)
    write_folder(tmp_path / "cat", make_rows(6))
    common = [
        "--data", str(tmp_path / "cat"), "--index", str(tmp_path / "idx"), "--model", "vitrine:small", "--no-progress",
    ]
    assert main(["index", "build", *common, "--exact-max", "5000", "--memory-budget", "1G"]) == 0
    assert main(["index", "add", *common]) == 0  # options not given keep their saved values
    assert main(["index", "stats", "--index", str(tmp_path / "idx"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["products"] == stats["vectors"] == 6 and stats["index_kind"] == "flat"
    store = FaissStore.open(tmp_path / "idx")
    assert store.options.exact_max == 5000 and store.options.memory_budget == 2**30
    store.close()
    assert main(["index", "build", *common, "--memory-budget", "huge"]) == 2
    assert "memory size" in capsys.readouterr().err
    assert main(["index", "stats", "--index", str(tmp_path / "none")]) == 2


def test_parse_filters():
    assert parse_filters(["gender=Women", "articleType=Dresses", "gender=Girls"]) == {
        "gender": ["Women", "Girls"], "articleType": ["Dresses"],
    }
    with pytest.raises(ValueError, match="field=value"):
        parse_filters(["gender"])
