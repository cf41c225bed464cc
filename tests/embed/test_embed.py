"""`vitrine embed`: output files, resume after a crash without recomputation, and the CLI."""

import csv
import json

import numpy as np
import pytest
import torch
from tests.conftest import make_rows, write_folder, write_shards

from vitrine.cli import main
from vitrine.data.catalog import open_catalog
from vitrine.embed import run_embed


class Crash(RuntimeError):
    pass


class CountingEncoder:
    """Wraps a real encoder; counts images encoded and can crash after N batches."""

    def __init__(self, inner, crash_after: int | None = None):
        self.inner = inner
        self.crash_after = crash_after
        self.batches = 0
        self.images = 0
        self.embed_dim = inner.embed_dim
        self.image_transform = inner.image_transform

    def encode_image(self, pixels):
        if self.crash_after is not None and self.batches >= self.crash_after:
            raise Crash("simulated crash")
        self.batches += 1
        self.images += len(pixels)
        return self.inner.encode_image(pixels)

    def encode_text(self, texts):
        return self.inner.encode_text(texts)


@pytest.fixture
def catalog(tmp_path):
    rows = make_rows(23)
    write_shards(tmp_path / "shards", rows, per_shard=5)
    return tmp_path / "shards", rows


def read_ids(out):
    with open(out / "metadata.csv", newline="") as handle:
        return [row["id"] for row in csv.DictReader(handle)]


def test_embed_writes_aligned_embeddings_and_metadata(catalog, tmp_path, small_model):
    data, rows = catalog
    result = run_embed(
        str(data), out=str(tmp_path / "out"), batch_size=4, part_size=8, texts=True, progress=False, encoder=small_model
    )
    out = tmp_path / "out"
    images, texts = np.load(out / "image_embeddings.npy"), np.load(out / "text_embeddings.npy")
    assert images.shape == texts.shape == (23, small_model.embed_dim) and images.dtype == np.float32
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert read_ids(out) == [r["id"] for r in rows]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == result.count == 23 and manifest["errors"]["skipped"] == 0
    # Row i of the matrix is the embedding of metadata row i.
    seventh = list(open_catalog(data))[6]
    with torch.no_grad():
        assert np.allclose(
            small_model.encode_image(small_model.preprocess([seventh.image])).numpy()[0], images[6], atol=1e-5
        )


def test_resume_after_crash_recomputes_nothing_already_written(catalog, tmp_path, small_model):
    data, _ = catalog
    full = tmp_path / "full"
    run_embed(str(data), out=str(full), batch_size=4, part_size=8, progress=False, encoder=small_model)

    out = tmp_path / "resumed"
    crashing = CountingEncoder(small_model, crash_after=5)  # parts of 8 rows = 2 batches: parts 0 and 1 commit
    with pytest.raises(Crash):
        run_embed(str(data), out=str(out), batch_size=4, part_size=8, progress=False, encoder=crashing)
    assert len(list((out / "parts").glob("part-*.json"))) == 2 and not (out / "manifest.json").exists()

    counting = CountingEncoder(small_model)
    result = run_embed(str(data), out=str(out), batch_size=4, part_size=8, progress=False, encoder=counting)
    assert counting.images == 23 - 16 and result.computed == 7 and result.count == 23
    assert read_ids(out) == read_ids(full)
    assert np.array_equal(np.load(out / "image_embeddings.npy"), np.load(full / "image_embeddings.npy"))

    again = CountingEncoder(small_model)
    run_embed(str(data), out=str(out), batch_size=4, part_size=8, progress=False, encoder=again)
    assert again.images == 0  # a finished job is not redone


def test_resume_refuses_another_job_and_keeps_skip_counts(tmp_path, small_model):
    rows = make_rows(12)
    write_folder(tmp_path / "cat", rows, images={rows[1]["id"]: b"not an image", rows[9]["id"]: None})
    out = tmp_path / "out"
    crashing = CountingEncoder(small_model, crash_after=2)
    with pytest.raises(Crash):
        run_embed(
            str(tmp_path / "cat"), out=str(out), batch_size=4, part_size=4, on_error="skip", progress=False,
            encoder=crashing,
        )
    result = run_embed(
        str(tmp_path / "cat"), out=str(out), batch_size=4, part_size=4, on_error="skip", progress=False,
        encoder=small_model,
    )
    assert result.count == 10 and result.skipped == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["errors"]["by_kind"] == {"bad image": 1, "missing file": 1}
    assert rows[1]["id"] not in read_ids(out)
    with pytest.raises(ValueError, match="different embed job"):
        run_embed(
            str(tmp_path / "cat"), out=str(out), batch_size=2, part_size=4, on_error="skip", progress=False,
            encoder=small_model,
        )


def test_cli_embed_and_models(tmp_path, capsys):
    rows = make_rows(6)
    write_folder(tmp_path / "cat", rows, fmt="jsonl")
    assert (
        main(
            [
                "embed", "--data", str(tmp_path / "cat"), "--out", str(tmp_path / "out"), "--batch-size", "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "out" / "image_embeddings.npy").shape == (
        6,
        384,
    )  # the default model, vitrine:kagl-base, is 384-d (MiniLM space)
    assert "wrote 6 embeddings" in capsys.readouterr().err
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "vitrine:small" in [m["name"] for m in listing["models"]]


def test_cli_reports_bad_rows_without_traceback(tmp_path, capsys):
    rows = make_rows(3)
    write_folder(tmp_path / "cat", rows, images={rows[2]["id"]: b"\xff\xd8\xff garbage"})
    code = main(["embed", "--data", str(tmp_path / "cat"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "ImageDecodeError: catalog.csv, row 3, id 1002" in err and "Traceback" not in err
    assert main(["embed", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "catalog not found" in capsys.readouterr().err


def test_cli_default_model_is_the_library_default():
    from vitrine.cli import build_parser
    from vitrine.models import DEFAULT_MODEL, DEFAULT_TAG_MODEL, list_models

    parser = build_parser()
    assert parser.parse_args(["tag", "--image", "x.jpg"]).model == DEFAULT_TAG_MODEL
    assert parser.parse_args(["export", "onnx", "--out", "x"]).model == DEFAULT_MODEL
    assert DEFAULT_TAG_MODEL in list_models()
    assert DEFAULT_MODEL in list_models()  # the shipped weights are installed with the package


class ConcurrentEncoder(CountingEncoder):
    """Claims concurrent calls (as ONNX Runtime does): batches finish out of order, each call on one thread."""

    concurrent_calls = True

    def __init__(self, inner, crash_after: int | None = None):
        super().__init__(inner, crash_after)
        self.threads_given: list[int] = []
        self.gate = __import__("threading").Lock()

    def with_threads(self, threads):
        self.threads_given.append(threads)
        return self

    def encode_image(self, pixels):
        import time

        with self.gate:
            batch = self.batches
            if self.crash_after is not None and batch >= self.crash_after:
                raise Crash("simulated crash")
            self.batches += 1
            self.images += len(pixels)
        time.sleep(0.02 * (batch % 3 == 0))  # the first of every three batches is slow: later ones overtake it
        return self.inner.encode_image(pixels)


def test_concurrent_encoding_writes_exactly_what_one_batch_at_a_time_does(catalog, tmp_path, small_model, monkeypatch):
    import vitrine.embed.job as job

    data, rows = catalog
    monkeypatch.setattr(job, "usable_cores", lambda: 3)
    run_embed(
        str(data), out=str(tmp_path / "one"), batch_size=4, part_size=8, texts=True, progress=False, encoder=small_model
    )
    concurrent = ConcurrentEncoder(small_model)
    run_embed(
        str(data), out=str(tmp_path / "many"), batch_size=4, part_size=8, texts=True, progress=False, encoder=concurrent
    )
    assert concurrent.threads_given == [1] and concurrent.images == 23
    for name in ("image_embeddings.npy", "text_embeddings.npy"):
        assert np.array_equal(np.load(tmp_path / "one" / name), np.load(tmp_path / "many" / name))
    assert read_ids(tmp_path / "many") == [r["id"] for r in rows]
    # a crash on the concurrent path keeps the parts committed before it, and a resume completes the same output
    crashing = ConcurrentEncoder(small_model, crash_after=4)
    with pytest.raises(Crash):
        run_embed(
            str(data), out=str(tmp_path / "resumed"), batch_size=4, part_size=8, texts=True, progress=False,
            encoder=crashing,
        )
    resumed = ConcurrentEncoder(small_model)
    run_embed(
        str(data), out=str(tmp_path / "resumed"), batch_size=4, part_size=8, texts=True, progress=False, encoder=resumed
    )
    assert 0 < resumed.images < 23
    assert np.array_equal(
        np.load(tmp_path / "one" / "image_embeddings.npy"), np.load(tmp_path / "resumed" / "image_embeddings.npy")
    )
