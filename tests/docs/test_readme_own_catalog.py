"""The README's "Your own catalog" lines, run as written on a shop-format catalog (`sku,name,photo,colour,...`):
schema inference, a tagged build from the catalog's own vocabulary, adapt, and serving the adapted model (answered in
process instead of listening on a port)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from tests.conftest import make_rows, write_stranger_folder

from vitrine.cli import main

ROOT = Path(__file__).resolve().parents[2]


def own_catalog_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- own-catalog:begin", 1)[1].split("<!-- own-catalog:end -->", 1)[0]
    return [line for line in block.splitlines() if line.startswith(".venv/bin/vitrine ")]


def test_the_own_catalog_lines_run_as_written(tmp_path, monkeypatch, capsys):
    write_stranger_folder(tmp_path / "mycat", make_rows(40))
    monkeypatch.chdir(tmp_path)
    served = {}

    def answer_in_process(*args, **kwargs):
        from fastapi.testclient import TestClient

        from vitrine.serve.app import create_app
        from vitrine.serve.settings import SETTINGS_ENV, ServeSettings

        app = create_app(ServeSettings.from_json(os.environ[SETTINGS_ENV]))
        with TestClient(app) as client:
            served["text"] = client.get("/search", params={"text": "red tshirts", "k": "5"}).json()
            served["refused"] = client.get("/search", params={"text": "jeans", "filter": "sex=women"})
            photo = (tmp_path / "mycat" / "pics" / "p-1000.jpg").read_bytes()  # an adapted model has no Combiner: sum
            served["composed"] = client.post(
                "/search", data={"modification": "in blue", "k": "3"}, files={"image": ("q.jpg", photo, "image/jpeg")}
            )
        app.state.service.close()
        return True

    monkeypatch.setattr("vitrine.serve.server.serve_forever", answer_in_process)
    lines = own_catalog_lines()
    assert [shlex.split(line)[1] for line in lines] == ["schema", "index", "adapt", "serve"]
    for line in lines:
        args = shlex.split(line)[1:]
        assert main(args + (["--no-progress"] if args[0] in ("index", "adapt") else [])) == 0, line
        if args[0] == "schema":
            captured = capsys.readouterr()
            assert json.loads(captured.out)["id_field"] == "sku" and "facets=colour,category,sex" in captured.err
        if args[0] == "index":
            err = capsys.readouterr().err
            assert "tags from the catalog's own columns (colour, category, sex)" in err and "precision" in err
    model = json.loads((tmp_path / "runs/mycat-adapted/model/training.json").read_text())
    assert model["load_as"] == f"vitrine:{(tmp_path / 'runs/mycat-adapted/model').resolve()}"
    hits = served["text"]["results"]
    assert len(hits) == 5 and all(hit["id"].startswith("SKU-") for hit in hits)
    assert served["composed"].status_code == 200 and len(served["composed"].json()["results"]) == 3
    assert served["refused"].status_code == 400 and "'Women'" in served["refused"].json()["error"]["message"]
