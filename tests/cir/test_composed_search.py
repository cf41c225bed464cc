"""Composed search in the engine and the CLI: image + modification text, filters still apply."""

import json

import pytest
import torch
from tests.conftest import make_rows, write_folder

from vitrine.cli import main
from vitrine.data.images import load_image
from vitrine.index.build import build_index
from vitrine.models.combiner import SumCombiner
from vitrine.ranking import RankOptions
from vitrine.search import Query, SearchEngine


def test_composed_search_with_filters(tmp_path, small_model, capsys):
    write_folder(tmp_path / "cat", make_rows(12))
    build_index(str(tmp_path / "cat"), str(tmp_path / "idx"), small_model, progress=False)
    SumCombiner().save(tmp_path / "sum", extra={"encoder": "vitrine:small"})
    engine = SearchEngine(str(tmp_path / "idx"))
    image = str(tmp_path / "cat" / "images" / "1000.jpg")
    hits = engine.composed(
        image, "in blue", k=12, combiner="sum", options=RankOptions(mode="vector", soft_filters=False)
    )
    # the sum query is normalize(image + text): exactly what the engine must have searched with (ranked by cosine alone)
    with torch.inference_mode():
        image_vector = engine.query_vectors([Query(image=load_image(image))])[0]
        expected = torch.nn.functional.normalize(image_vector + small_model.encode_text(["in blue"]), dim=-1)
    assert hits[0].score == pytest.approx(engine.store.search(expected.numpy(), k=1)[0][0].score, abs=1e-5)
    women = engine.composed(image, "in blue", k=12, filters={"gender": "Women"}, combiner=str(tmp_path / "sum"))
    # the catalog's 6 women's products, less the reference photo's own product (1000) when it is one of them
    reference = engine.store.product("1000")
    assert len(women) == 6 - (reference["gender"] == "Women") and all(h.metadata["gender"] == "Women" for h in women)
    assert "1000" not in {h.id for h in women}
    assert women[0].metadata["baseColour"] == "Blue"  # by default the change's named value is a soft filter
    with pytest.raises(ValueError, match="modification text is empty"):
        engine.composed(image, "  ")
    assert len(engine.composed(image, "in blue", k=3)) == 3  # no shipped combiner for vitrine:small: the sum, said once
    engine.close()
    assert (
        main(
            [
                "search", "--index", str(tmp_path / "idx"), "--image", image, "--modify", "in blue", "--combiner",
                "sum", "-k", "3", "--json",
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)  # the same answer as POST /search
    assert (
        len(answer["results"]) == 3
        and answer["query"]["kind"] == "composed"
        and answer["query"]["excluded"] == ["1000"]
    )
    assert main(["search", "--index", str(tmp_path / "idx"), "--text", "shirt", "--modify", "in blue"]) == 2
    assert "a modification changes an image query: give an image too" in capsys.readouterr().err  # as HTTP says it
