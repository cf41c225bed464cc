"""docs/training.md's "Bring your own CLIP" walk-through, run line by line as written, on a tiny random CLIP and 400
real
KAGL products: the GPU configs it names are copied with the device, sizes and lengths made CPU-sized, and `serve`
is answered in process instead of listening on a port."""

from __future__ import annotations

import json
import os
import shlex
import tarfile
from pathlib import Path

from tests.conftest import write_kagl_subset
from tests.support.data import needs_data
from tests.support.random_checkpoints import write_hf_clip

from vitrine.cli import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = needs_data("kagl")
CPU_SIZED = {  # what changes in each GPU config for a CPU test; everything else is the file as shipped
    "openfashionclip-vit-b32.json": {
        "device": "cpu", "amp": False, "epochs": 1, "batch_size": 32, "max_items": 160, "val_max_items": 32,
    },
    "clip4cir-stage1.json": {"device": "cpu", "epochs": 2, "batch_size": 32, "lr": 1e-4},
    "clip4cir-stage2.json": {"device": "cpu", "epochs": 2, "batch_size": 64},
    "rafclip-regions.json": {"device": "cpu", "amp": False},
}


def walkthrough_lines() -> list[str]:
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    block = text.split("<!-- walkthrough:begin", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    return [line for line in block.splitlines() if line.startswith(".venv/bin/vitrine ")]


def test_every_gpu_config_reads_and_the_walkthrough_names_them():
    from vitrine.cir.config import CirTrainConfig
    from vitrine.train.config import TrainConfig
    from vitrine.train.regions import RegionTrainConfig

    loaders = {
        "openfashionclip-vit-b32.json": TrainConfig, "clip4cir-stage1.json": CirTrainConfig,
        "clip4cir-stage2.json": CirTrainConfig, "rafclip-regions.json": RegionTrainConfig,
    }
    assert sorted(p.name for p in (ROOT / "configs" / "gpu").glob("*.json")) == sorted(loaders)
    for name, loader in loaders.items():
        config = loader.from_file(str(ROOT / "configs" / "gpu" / name))
        assert config.device == "cuda" and config.model.startswith("hf:")
    named = " ".join(walkthrough_lines())
    assert all(f"configs/gpu/{name}" in named for name in loaders if name != "rafclip-regions.json")


def test_the_bring_your_own_clip_walkthrough_runs_end_to_end(tmp_path, monkeypatch, capsys):
    write_hf_clip(tmp_path / "models" / "clip-vit-base-patch32")
    shard = write_kagl_subset(tmp_path / "kagl-400.tar", 400)
    (tmp_path / "configs" / "gpu").mkdir(parents=True)
    for name, changes in CPU_SIZED.items():
        config = json.loads((ROOT / "configs" / "gpu" / name).read_text(encoding="utf-8"))
        config = {**config, **changes}
        config = json.loads(json.dumps(config).replace("../shared/data/kagl", shard))
        (tmp_path / "configs" / "gpu" / name).write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the walk-through's relative paths (models/, runs/, configs/gpu/) land here

    served = {}

    def answer_in_process(*args, **kwargs):
        from fastapi.testclient import TestClient

        from vitrine.serve.app import create_app
        from vitrine.serve.settings import SETTINGS_ENV, ServeSettings

        with tarfile.open(shard) as tar:
            image = tar.extractfile(next(m for m in tar if m.name.endswith(".jpg"))).read()
        app = create_app(ServeSettings.from_json(os.environ[SETTINGS_ENV]))
        with TestClient(app) as client:
            composed = client.post(
                "/search", data={"modification": "in red", "k": "5"}, files={"image": ("q.jpg", image, "image/jpeg")}
            )
            text = client.get("/search", params={"text": "a blue shirt for men", "k": "5"})
            served.update(
                composed=composed.status_code, composed_body=composed.json(), text=text.status_code,
                text_body=text.json(),
            )
        app.state.service.close()
        return True

    monkeypatch.setattr("vitrine.serve.server.serve_forever", answer_in_process)
    lines = walkthrough_lines()
    assert [shlex.split(line)[1] for line in lines] == ["train", "data", "train", "train", "index", "serve"]
    for line in lines:
        args = [shard if arg == "../shared/data/kagl" else arg for arg in shlex.split(line)[1:]]
        assert main(args + ["--no-progress"] if args[0] in ("train", "index") else args) == 0, line
    assert served["composed"] == 200 and served["composed_body"]["query"]["kind"] == "composed", served
    assert served["text"] == 200 and len(served["text_body"]["results"]) == 5, served
    stage1 = json.loads((tmp_path / "runs/gpu/clip4cir-stage1/combiner/combiner.json").read_text())
    assert stage1["stage1_trains"] == "text" and stage1["encoder"].endswith("runs/gpu/clip4cir-stage1/model")
    tuned = json.loads((tmp_path / "runs/gpu/openfashionclip-vit-b32/model/training.json").read_text())
    assert tuned["load_as"].startswith("hf:") and tuned["steps"] > 0
