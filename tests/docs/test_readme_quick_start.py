"""The README's Quick start, line by line: the set-up script and the test command are the ones `.ci/run` runs, and the
serve line indexes a hi-res catalog and answers (in process instead of on a port; a 24-product slice of the same
catalog, so that the check costs seconds, not the minutes the whole one takes)."""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.support.data import HIRES, needs_data

from vitrine.cli import main

ROOT = Path(__file__).resolve().parents[2]
SLICE = 24


def quick_start_lines() -> list[str]:
    """The shell lines of the fenced blocks between the quick-start markers."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- quick-start:begin", 1)[1].split("<!-- quick-start:end -->", 1)[0]
    fenced = block.split("```")[1::2]  # the insides of the fences: "bash\n<lines>\n"
    return [line for inside in fenced for line in inside.splitlines()[1:] if line.strip()]


def test_the_quick_start_is_the_set_up_and_the_test_command_ci_runs():
    setup_and_serve, tests = quick_start_lines()
    setup, serve = (part.strip() for part in setup_and_serve.split("&&"))
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert setup == "bash scripts/setup.sh" and setup in [line.split("||")[0].strip() for line in ci]
    assert tests in ci, f"{tests!r}: .ci/run runs another test command"
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "setup.sh")]).returncode == 0
    assert shlex.split(serve)[:3] == [".venv/bin/vitrine", "serve", "--catalog"]


def hires_slice(folder: Path, products: int) -> Path:
    """The first `products` rows of the hi-res catalog, its columns as they are, with their photos."""
    with open(HIRES / "catalog.csv", newline="", encoding="utf-8") as source:
        reader = csv.DictReader(source)
        rows = [row for _, row in zip(range(products), reader)]
        fields = reader.fieldnames
    (folder / "images").mkdir(parents=True)
    with open(folder / "catalog.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for photo in (HIRES / "images").iterdir():
        if photo.stem in {row[fields[0]] for row in rows}:
            shutil.copy(photo, folder / "images" / photo.name)
    return folder


@needs_data("kagl-hires/catalog.csv")
def test_the_serve_line_indexes_the_hires_catalog_and_answers(tmp_path, monkeypatch):
    serve = shlex.split(quick_start_lines()[0].split("&&")[1])
    catalog = hires_slice(tmp_path / "data" / Path(serve[3]).name, SLICE)
    monkeypatch.chdir(tmp_path)
    answered = {}

    def answer_in_process(*args, **kwargs):
        from fastapi.testclient import TestClient

        from vitrine.serve.app import create_app
        from vitrine.serve.settings import SETTINGS_ENV, ServeSettings

        app = create_app(ServeSettings.from_json(os.environ[SETTINGS_ENV]))
        with TestClient(app) as client:
            answered["page"] = client.get("/")
            answered["search"] = client.get("/search", params={"text": "a blue shirt", "k": "5"})
            answered["health"] = client.get("/healthz").json()
        app.state.service.close()
        return True

    monkeypatch.setattr("vitrine.serve.server.serve_forever", answer_in_process)
    assert main(serve[1:3] + [str(catalog), "--no-progress"]) == 0
    assert (tmp_path / "runs" / "serve" / catalog.name).is_dir()  # where the README says the index goes
    assert answered["page"].status_code == 200 and "<html" in answered["page"].text.lower()
    assert answered["health"]["products"] == SLICE
    hits = answered["search"].json()["results"]
    assert len(hits) == 5 and all((catalog / "images").glob(f"{hit['id']}.*") for hit in hits)
