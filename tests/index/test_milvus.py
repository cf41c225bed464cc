"""The Milvus backend end to end: index specs, index planning, the CLI and the service on Milvus Lite."""

import json

import numpy as np
import pytest
from tests.conftest import make_rows, require_scale, write_folder

require_scale("pymilvus")

from vitrine.cli import main  # noqa: E402
from vitrine.index.milvus_filters import filter_expression, quote  # noqa: E402
from vitrine.index.milvus_store import milvus_index  # noqa: E402
from vitrine.index.plan import IndexOptions  # noqa: E402
from vitrine.index.store import MilvusTarget, images_dir  # noqa: E402
from vitrine.index.stores import open_store, store_exists  # noqa: E402


def test_index_specs_pick_lite_or_server_and_read_the_token():
    lite = MilvusTarget.parse("milvus:./runs/catalog.db")
    assert lite.is_lite and lite.uri.endswith("/runs/catalog.db") and lite.collection == "vitrine_products"
    server = MilvusTarget.parse(
        "milvus:http://milvus.internal:19530#shop_a",
        environ={"VITRINE_MILVUS_TOKEN": "root:secret", "VITRINE_MILVUS_REPLICAS": "2"},
    )
    assert (
        not server.is_lite
        and server.uri == "http://milvus.internal:19530"
        and server.collection == "shop_a"
        and server.replicas == 2
    )
    with pytest.raises(ValueError, match="REPLICAS"):
        MilvusTarget.parse("milvus:http://h:19530", environ={"VITRINE_MILVUS_REPLICAS": "two"})
    assert server.token == "root:secret" and str(server) == "milvus:http://milvus.internal:19530#shop_a"
    assert str(images_dir("milvus:/data/catalog.db")) == "/data/catalog-images"
    for bad, message in (
        ("milvus:", "Milvus Lite file"), ("milvus:./catalog", "ends in .db"),
        ("milvus:x.db#bad-name", "collection name"),
    ):
        with pytest.raises(ValueError, match=message):
            MilvusTarget.parse(bad)


def test_filter_expressions_quote_values_and_unusual_field_names():
    assert quote('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    expression = filter_expression(
        {"gender": ["Men", "Boys"], "size (EU)": "42", "and": "x"}, declared={"gender", "and"}
    )
    assert (
        expression == '($meta["and"] == "x") and (gender == "Men" or gender == "Boys") and ($meta["size (EU)"] == "42")'
    )
    assert filter_expression({"gender": []}, declared=set()) is None


def test_server_versions_and_which_errors_mean_the_server_is_unavailable():
    import grpc
    from pymilvus.exceptions import MilvusException

    from vitrine.index.milvus_store import _address, server_version, unavailable_kind

    assert (
        server_version("v2.3.5-lite") == (2, 3, 5)
        and server_version("2.5.10") == (2, 5, 10)
        and server_version("master-abc") == ()
    )
    down = MilvusException(
        code=2, message="Fail connecting to server on 127.0.0.1:19530, illegal connection params or server unavailable"
    )
    assert unavailable_kind(down) == "unreachable"
    assert unavailable_kind(MilvusException(message="[search] Retry timeout: 30s, message=...")) == "unreachable"
    assert (
        unavailable_kind(MilvusException(code=101, message="failed to search: collection not loaded[collection=1]"))
        == "loading"
    )
    assert (
        unavailable_kind(MilvusException(code=1100, message="invalid parameter")) is None
    )  # a bad request stays an error
    assert unavailable_kind(ValueError("no")) is None

    class Refused(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

    assert unavailable_kind(Refused()) == "unreachable"
    assert _address("https://root:secret@milvus.internal:19530") == "https://milvus.internal:19530"
    assert _address("http://127.0.0.1:19530") == "http://127.0.0.1:19530"


def test_planner_kinds_map_to_milvus_index_types():
    options = IndexOptions()
    assert milvus_index("flat", 10, 384, options, lite=True) == ("FLAT", {})
    assert milvus_index("hnsw", 10**6, 384, options, lite=False) == ("HNSW", {"M": 32, "efConstruction": 64})
    assert milvus_index("ivfpq", 10**6, 384, options, lite=False) == ("IVF_PQ", {"nlist": 4000, "m": 192, "nbits": 8})
    assert milvus_index("ivfpq", 10**6, 384, options, lite=True) == ("IVF_SQ8", {"nlist": 4000})


@pytest.mark.parametrize("approximate,kind,milvus_type", [("hnsw", "hnsw", "HNSW"), ("ivfpq", "ivfpq", "IVF_SQ8")])
def test_the_store_moves_to_the_planned_index_as_the_catalog_grows(tmp_path, approximate, kind, milvus_type):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10_000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = open_store(
        f"milvus:{tmp_path}/grow.db", model="m", dim=8, create=True,
        options={"exact_max": 100, "approximate": approximate},
    )
    try:
        store.upsert([f"p{i}" for i in range(50)], vectors[:50])
        assert store.stats()["index_kind"] == "flat"
        store.upsert([f"p{i}" for i in range(50, 10_000)], vectors[50:])
        assert store.stats()["index_kind"] == kind
        assert store.client.describe_index(store.collection, "vector")["index_type"] == milvus_type
        exact = np.argsort(-(vectors @ vectors[:20].T), axis=0)[:10].T
        found = store.search(vectors[:20], k=10)
        recall = np.mean([len({f"p{j}" for j in row} & {h.id for h in hits}) / 10 for row, hits in zip(exact, found)])
        assert recall >= 0.9, recall
    finally:
        store.close()
    reopened = open_store(f"milvus:{tmp_path}/grow.db")
    assert reopened.stats()["index_kind"] == kind and reopened.options.exact_max == 100
    reopened.close()


def test_cli_builds_searches_and_deletes_on_milvus_lite(tmp_path, capsys):
    write_folder(tmp_path / "cat", make_rows(12))
    index = f"milvus:{tmp_path}/catalog.db"
    common = ["--data", str(tmp_path / "cat"), "--index", index, "--model", "vitrine:small", "--no-progress"]
    assert not store_exists(index) and not (tmp_path / "catalog.db").exists()  # asking does not create the file
    assert main(["index", "build", *common]) == 0
    assert store_exists(index)
    assert main(["index", "add", *common]) == 0  # nothing new: the saved build position covers the catalog
    assert "12 products; added 0" in capsys.readouterr().err
    assert main(["index", "stats", "--index", index, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["products"] == 12 and stats["backend"] == "milvus-lite" and stats["model"] == "vitrine:small"
    assert (
        main(["search", "--index", index, "--text", "a dress", "-k", "12", "--filter", "gender=Women", "--json"]) == 0
    )
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 6 and all(r["attributes"]["gender"] == "Women" for r in results)
    assert main(["index", "delete", "--index", index, results[0]["id"], "nope"]) == 0
    assert "deleted 1 of 2 ids; 11 products left" in capsys.readouterr().err
    assert main(["search", "--index", index, "--text", "x", "--model", "vitrine:kagl-small"]) == 2
    assert "cannot be queried" in capsys.readouterr().err


def test_service_on_milvus_lite_searches_writes_and_refuses_two_workers(tmp_path):
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app
    from vitrine.serve.prepare import prepare_index
    from vitrine.serve.settings import ServeSettings

    write_folder(tmp_path / "cat", make_rows(12))
    settings = ServeSettings(
        index=f"milvus:{tmp_path}/served.db", tag_model="vitrine:small", combiner="sum", write_token="test-write-token"
    )
    prepare_index(str(tmp_path / "cat"), settings, "vitrine:small", progress=False)
    assert len(list((tmp_path / "served-images").glob("*.jpg"))) == 12
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            hits = client.get("/search", params={"text": "a shirt", "k": 12, "filter": "gender=Men"}).json()["results"]
            assert len(hits) == 6 and all(h["attributes"]["gender"] == "Men" for h in hits)
            assert client.get(f"/products/{hits[0]['id']}/image").status_code == 200
            auth = {"Authorization": "Bearer test-write-token"}
            assert client.delete(f"/products/{hits[0]['id']}", headers=auth).status_code == 204
            assert client.get(f"/products/{hits[0]['id']}").status_code == 404
            assert client.get("/healthz").json()["products"] == 11
    finally:
        app.state.service.close()
    with pytest.raises(ValueError, match="one process per file"):
        ServeSettings(index=f"milvus:{tmp_path}/served.db", workers=2)


@pytest.mark.parametrize("suffix", [".sidx", ".idx"])
def test_truncated_lite_index_sidecars_are_rebuilt_on_open(tmp_path, caplog, suffix):
    """Milvus Lite writes its per-segment index files in place; a process killed mid-write leaves one truncated.

    Regression for a CI failure: `index build` SIGKILLed mid-commit left a 6-byte scalar index file and every later
    open failed with "File is too small: 6". The sidecars are derived from the rows, so opening drops and rebuilds them.
    """
    spec = f"milvus:{tmp_path / 'cat.db'}"
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((12, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = open_store(spec, model="vitrine:test", dim=8, create=True, attributes=["gender"])
    store.upsert([f"p{i}" for i in range(12)], vectors, [{"gender": ["Men", "Women"][i % 2]} for i in range(12)])
    store.close()
    sidecars = sorted((tmp_path / "cat.db").rglob(f"*{suffix}"))
    assert sidecars, "Milvus Lite wrote no index sidecar: the layout this recovery relies on changed"
    sidecars[0].write_bytes(sidecars[0].read_bytes()[:6])
    with caplog.at_level("WARNING", logger="vitrine.index.milvus_store"):
        again = open_store(spec, model="vitrine:test")
    try:
        assert "removed" in caplog.text and "index sidecar" in caplog.text
        hits = again.search(vectors[:3], k=12, filters={"gender": "Men"})
        assert hits[0][0].id == "p0" and hits[2][0].id == "p2"  # each Men vector finds itself first
        assert all(h.id in {f"p{i}" for i in range(0, 12, 2)} for row in hits for h in row)
        assert len(hits[0]) == 6 and again.stats()["products"] == 12
    finally:
        again.close()


def test_cli_names_an_unreachable_milvus_server_in_one_line(capsys):
    require_scale("pymilvus")
    from tests.support.http import free_port

    from vitrine.cli import main

    port = free_port()  # a port nothing listens on
    assert main(["index", "stats", "--index", f"milvus:http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not reachable" in err and "Traceback" not in err


def shop_catalog() -> tuple[list[str], np.ndarray, list[dict]]:
    """24 products whose titles name a brand, a colour and a type (ids, unit vectors, metadata)."""
    kinds = {"Running Shoes": "Sports Shoes", "T-shirt": "Tshirts", "Watch": "Watches", "Jeans": "Jeans"}
    metas = [
        {"title": f"{brand} {gender} {colour} {kind}", "gender": gender, "articleType": article}
        for brand in ("Nike", "Puma", "Titan")
        for kind, article in kinds.items()
        for colour, gender in (("Black", "Men"), ("Red", "Women"))
    ]
    metas[0].update(
        {"usage": "Formal", "predicted_articleType": "Dresses"}
    )  # a catalog value is searched, a predicted tag is not
    vectors = np.random.default_rng(4).standard_normal((len(metas), 8)).astype(np.float32)
    return [f"p{i}" for i in range(len(metas))], vectors / np.linalg.norm(vectors, axis=1, keepdims=True), metas


def test_lexical_on_milvus_lite_ranks_title_and_attribute_words_by_bm25(tmp_path):
    from vitrine.index.metadata import _TEXT_SCHEMA
    from vitrine.index.milvus_store import FTS5_TOKENIZER

    assert FTS5_TOKENIZER in _TEXT_SCHEMA  # Milvus's text is cut and stemmed as the embedded store's FTS5 table cuts it
    ids, vectors, metas = shop_catalog()
    store = open_store(f"milvus:{tmp_path}/shop.db", model="vitrine:test", dim=8, create=True, attributes=["gender"])
    try:
        store.upsert(ids, vectors, metas)
        shoes = store.lexical(["shoe"], 30)  # the singular finds "Shoes": both sides are stemmed
        assert {h.id for h in shoes} == {i for i, m in zip(ids, metas) if "Shoes" in m["title"]}
        assert [h.score for h in shoes] == sorted((h.score for h in shoes), reverse=True) and shoes[-1].score > 0
        assert all(h.similarity is None for h in shoes)
        best = store.lexical(["puma", "red", "watches", "watch"], 30)
        assert best[0].metadata == {"id": "p13", **metas[13]} and metas[13]["title"] == "Puma Women Red Watch"
        women = store.lexical(["shoe"], 30, {"gender": "Women"})
        assert {h.id for h in women} == {h.id for h in shoes if h.metadata["gender"] == "Women"} and len(women) == 3
        assert store.lexical(["shoe"], 30, {"gender": "Nobody"}) == [] and store.lexical(["zzz", "?!"], 30) == []
        assert [h.id for h in store.lexical(["formal"], 30)] == ["p0"] and store.lexical(["dresses"], 30) == []
        query = vectors[5]
        scored = store.lexical(["nike", "t-shirt", "tshirt"], 30, vector=query)
        by_vector = {h.id: h for h in store.search(query[None], k=30)[0]}
        assert len(scored) == 12 and len(by_vector) == 24  # the 8 Nike products and the 6 T-shirts
        for hit in scored:  # the cosine the vector search gives the same product, and the same metadata
            assert (
                hit.similarity == pytest.approx(by_vector[hit.id].score, abs=1e-5)
                and hit.metadata == by_vector[hit.id].metadata
            )
    finally:
        store.close()


def test_a_collection_made_without_the_text_field_keeps_the_vector_fallback(tmp_path, monkeypatch):
    from vitrine.index.milvus_store import FULL_TEXT_SINCE, MilvusStore
    from vitrine.index.store import LexicalUnsupported
    from vitrine.ranking import Ranker, RankOptions

    ids, vectors, metas = shop_catalog()
    spec = f"milvus:{tmp_path}/old.db"
    with monkeypatch.context() as patch:  # as vitrine made collections before they had a BM25 field
        patch.setattr(MilvusStore, "_has", lambda self, since: since != FULL_TEXT_SINCE)
        old = open_store(spec, model="vitrine:test", dim=8, create=True, attributes=["gender"])
        old.upsert(ids[:12], vectors[:12], metas[:12])
        old.close()
    store = open_store(spec)
    try:
        store.upsert(ids[12:], vectors[12:], metas[12:])  # later writes leave it as it is
        assert "_text" not in {f["name"] for f in store.client.describe_collection(store.collection)["fields"]}
        assert "_text" not in store.fields()
        with pytest.raises(LexicalUnsupported, match="created without a BM25 text field: rebuild the collection"):
            store.lexical(["shoe"], 10)
        ranked = Ranker(store).rank(vectors[:1], "red shoes", 5)
        assert ranked.mode == "vector" and len(ranked.hits) == 5
        with pytest.raises(LexicalUnsupported, match="rebuild"):
            Ranker(store).rank(vectors[:1], "red shoes", 5, options=RankOptions(mode="lexical"))
    finally:
        store.close()
