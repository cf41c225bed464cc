"""The Python API (`vitrine.api`): the README's "Python API" examples, run as doctests on a catalog and index built
here with the shipped `vitrine:kagl-base`, and what those examples do not show (errors, norms, parity)."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import make_rows, write_folder

import vitrine

ROOT = Path(__file__).resolve().parents[2]
MIN_EXAMPLES = 25  # the section has 30: an emptied or truncated section fails


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> dict[str, str]:
    """20 products (every colour x type of tests.conftest once) indexed with the default model; product 1000 is a red
    T-shirt."""
    from vitrine.index.build import build_index
    from vitrine.models import create_model

    root = tmp_path_factory.mktemp("python-api")
    write_folder(root / "catalog", make_rows(20))
    build_index(str(root / "catalog"), str(root / "index"), create_model("vitrine:kagl-base"), progress=False)
    return {
        "catalog": str(root / "catalog"), "index_dir": str(root / "index"),
        "image_path": str(root / "catalog" / "images" / "1000.jpg"),
    }


@pytest.fixture(scope="module")
def model_and_preprocess():
    return vitrine.create_model_and_transforms("vitrine:kagl-base")


def readme_section() -> tuple[str, int]:
    """The README's "## Python API" section, code fences blanked (a fence line would read as expected output), and its
    first line number."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Python API\n") + 1
    end = text.index("\n## ", start)
    lines = ["" if line.startswith("```") else line for line in text[start:end].splitlines()]
    return "\n".join(lines) + "\n", text[:start].count("\n")


def test_the_readme_python_api_examples_run(catalog):
    section, line = readme_section()
    test = doctest.DocTestParser().get_doctest(
        section,
        {"index_dir": catalog["index_dir"], "image_path": catalog["image_path"]},
        "README.md#python-api",
        str(ROOT / "README.md"),
        line,
    )
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=report.append)
    assert result.attempted >= MIN_EXAMPLES, f"only {result.attempted} examples in the README's Python API section"
    assert result.failed == 0, "".join(report)


def test_import_vitrine_stays_cheap_and_resolves_the_api_lazily():
    code = (
        "import sys, vitrine; assert 'torch' not in sys.modules, 'import vitrine loaded torch'; "
        "names = set(dir(vitrine)); vitrine.Index; "
        "print(sorted(names & {'create_model_and_transforms', 'get_tokenizer', 'Index', 'Tagger'}), 'torch' in "
        "sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split("\n")[0]
    assert out == "['Index', 'Tagger', 'create_model_and_transforms', 'get_tokenizer'] True"
    from vitrine import Index, api

    assert Index is api.Index and vitrine.__version__
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        vitrine.nothing_here


def test_embeddings_are_unit_norm_and_match_the_encoder_that_indexes(catalog, model_and_preprocess):
    from vitrine.data.catalog import open_catalog
    from vitrine.embed.encode import encode_catalog
    from vitrine.models import create_model

    model, preprocess = model_and_preprocess
    paths = sorted(str(path) for path in Path(catalog["catalog"], "images").glob("*.jpg"))
    pixels = torch.stack([preprocess(Image.open(path)) for path in paths])
    embeds = model.encode_image(pixels)
    assert embeds.shape == (20, model.dim) and torch.allclose(embeds.norm(dim=1), torch.ones(20), atol=1e-5)
    encoder = create_model(
        "vitrine:kagl-base"
    )  # a model of its own, read through the catalog pipeline `index build` uses
    items, own = encode_catalog(encoder, open_catalog(catalog["catalog"]), progress=False)
    assert [f"{item.id}.jpg" for item in items] == [Path(path).name for path in paths]
    assert float((embeds * own).sum(1).min()) > 0.999
    assert float((torch.from_numpy(model.encode_images(paths, batch_size=8)) * own).sum(1).min()) > 0.999
    texts = ["a red t-shirt", "blue jeans for women"]
    tokenizer = vitrine.get_tokenizer("vitrine:kagl-base")
    tokens = tokenizer(texts)
    by_tokens = model.encode_text(tokens)
    assert torch.allclose(by_tokens.norm(dim=1), torch.ones(2), atol=1e-5)
    with torch.inference_mode():
        assert float((by_tokens * encoder.encode_text(texts)).sum(1).min()) > 0.999
    assert np.allclose(model.encode_texts(texts), by_tokens.numpy(), atol=1e-5)
    assert tokenizer("one string")["input_ids"].shape[0] == 1
    assert (
        model.encode_images([]).shape == (0, model.dim)
        and model.encoder is not None
        and model.name == "vitrine:kagl-base"
    )


def test_the_model_refuses_what_open_clip_code_might_pass(model_and_preprocess, catalog):
    model, preprocess = model_and_preprocess
    pixels = preprocess(Image.open(catalog["image_path"])).unsqueeze(0)
    with pytest.raises(ValueError, match="L2-normalised embeddings only"):
        model.encode_image(pixels, normalize=False)
    with pytest.raises(
        TypeError, match=r"encode_text takes the batch that vitrine.get_tokenizer\('vitrine:kagl-base'\) returns"
    ):
        model.encode_text(["a red t-shirt"])
    with pytest.raises(TypeError, match="encode_images takes a list of images"):
        model.encode_images(catalog["image_path"])
    with pytest.raises(TypeError, match="encode_texts takes a list of texts"):
        model.encode_texts("a red t-shirt")


def test_index_search_says_which_arguments_go_together(catalog):
    with vitrine.Index(catalog["index_dir"]) as index:
        # the words every surface uses (vitrine.search.Query checks them once)
        with pytest.raises(ValueError, match=r"^give a text query, an image, or an image with a modification$"):
            index.search()
        with pytest.raises(ValueError, match="give text or an image, not both"):
            index.search(text="red", image=catalog["image_path"])
        with pytest.raises(ValueError, match="a modification changes an image query: give an image too"):
            index.search(modify="in blue")
        with pytest.raises(ValueError, match="a modification changes an image query"):
            index.search(text="red t-shirt", modify="in blue")
        with pytest.raises(ValueError, match="the text query is empty"):
            index.search(text="  ")
        with pytest.raises(FileNotFoundError, match="query image not found: .*missing.jpg"):
            index.search(image=str(Path(catalog["catalog"]) / "missing.jpg"))
        by_path = index.search(image=catalog["image_path"], k=20)
        by_image = index.search(image=Image.open(catalog["image_path"]), k=20)
        assert [(hit.id, round(hit.score, 4)) for hit in by_path] == [(hit.id, round(hit.score, 4)) for hit in by_image]
        # the query image is product 1000's own photo: every other product, that one left out
        assert len(by_path) == len(index) - 1 == index.stats()["products"] - 1 == 19 and "1000" not in {
            hit.id for hit in by_path
        }


def test_tagger_and_vitrine_tag_build_the_same_tagger(catalog, capsys):
    from vitrine.cli import main

    tagger = vitrine.Tagger(vocabulary="baseColour,gender", regions="whole")
    with pytest.raises(TypeError, match="tag takes a list of images"):
        tagger.tag(catalog["image_path"])
    ours = tagger.tag([catalog["image_path"]])[0]
    assert (
        main(
            [
                "tag", "--image", catalog["image_path"], "--attributes", "baseColour,gender", "--regions", "whole",
                "--runtime", "torch", "--json",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip())
    assert line == {"id": catalog["image_path"], "tags": {name: tag.to_dict() for name, tag in ours.items()}}
    assert tagger.attributes == ["baseColour", "gender"] and ours["baseColour"].value == "Red"
