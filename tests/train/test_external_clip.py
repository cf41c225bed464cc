"""OpenFashionCLIP's recipe on a CLIP or SigLIP that users bring (`hf:DIR`, `openclip:ARCH@FILE`), on tiny random
checkpoints the tests write and real KAGL items: the loss falls, the saved model loads back under the same name scheme
to the same embeddings, and resume is bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.support.data import needs_data
from tests.support.random_checkpoints import write_hf_clip, write_hf_siglip, write_openclip

from vitrine.data.transforms import to_input
from vitrine.losses import ClipLoss, positives_from_ids, sigmoid_loss
from vitrine.models import create_model
from vitrine.train.clip import train_clip
from vitrine.train.config import TrainConfig
from vitrine.train.data import load_pool

KAGL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "kagl"
pytestmark = needs_data("kagl")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    return {
        "clip": f"hf:{write_hf_clip(root / 'clip')}",
        "siglip": f"hf:{write_hf_siglip(root / 'siglip')}",
        "openclip": f"openclip:ViT-B-32@{write_openclip(root / 'openclip')}",
    }


def config_for(model: str, out: Path, **changes) -> TrainConfig:
    base = {
        "sources": [{"path": str(KAGL)}],
        "model": model,
        "out": str(out),
        "epochs": 4,
        "batch_size": 16,
        "amp": False,
        "max_items": 96,
        "val_max_items": 16,
        "checkpoint_every": 5,
        "cache_dir": str(out.parent / "cache"),
        "freeze": {"image_tower": False, "text_tower": False, "image_proj": False, "text_proj": False},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "weight_decay": 0.0},
        "split": {"seed": 0, "val_fraction": 0.2},
        "captions": {"title_prob": 1.0},
    }
    return TrainConfig.from_dict({**base, **changes})


def batch_loss(model, config: TrainConfig) -> float:
    """The training loss on the first 32 training items with their titles (fixed: no sampling, no augmentation)."""
    pool = load_pool(config, model.image_transform, progress=False)
    rows = pool.indices("train")[:32]
    ids = torch.as_tensor(pool.captions[rows, 0])
    model.eval()
    with torch.no_grad():
        image = model.image_features(to_input(pool.images[rows], model.image_transform)).embeds
        text = model.text_features([pool.strings[i] for i in ids.tolist()]).embeds
        if model.logit_bias is not None:
            return float(sigmoid_loss(image, text, model.logit_scale, model.logit_bias, positives_from_ids(ids, ids)))
        return float(ClipLoss()(image, text, model.logit_scale, ids))


@pytest.mark.parametrize("kind", ["clip", "siglip", "openclip"])
def test_fine_tuning_lowers_the_loss_and_saves_a_model_the_same_scheme_loads(checkpoints, tmp_path, kind):
    config = config_for(checkpoints[kind], tmp_path / "run")
    before = batch_loss(create_model(checkpoints[kind]), config)
    result = train_clip(config, progress=False)
    info = json.loads((Path(result.saved) / "training.json").read_text())
    scheme = checkpoints[kind].split(":")[0]
    assert info["load_as"].startswith(f"{scheme}:") and result.steps > 0
    tuned = create_model(info["load_as"])
    after = batch_loss(tuned, config)
    print(f"{kind}: loss on a fixed batch {before:.4f} -> {after:.4f} after {result.steps} steps")
    assert after < before, (before, after)
    # The saved files hold the trained weights: the same embeddings as the last checkpoint's state.
    fresh = create_model(checkpoints[kind])
    fresh.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["recipe"]["model"])
    fresh.eval()
    pixels = torch.rand(3, 3, *[tuned.image_transform.size] * 2)
    texts = ["a red dress", "blue jeans for men", "a black watch"]
    with torch.no_grad():
        assert torch.equal(tuned.encode_image(pixels), fresh.encode_image(pixels))
        assert torch.equal(tuned.encode_text(texts), fresh.encode_text(texts))
    # The fine-tuned result runs on the ONNX runtime too, at torch's embeddings (the export measures its parity).
    exported = create_model(info["load_as"], runtime="onnx")
    assert type(exported).__name__ == "OnnxEncoder" and exported.name == info["load_as"]
    assert min(exported.parity["onnx_vs_torch_text"]["min"], exported.parity["onnx_vs_torch_image"]["min"]) >= 0.9999
    with torch.no_grad():
        assert (
            float(torch.nn.functional.cosine_similarity(exported.encode_text(texts), tuned.encode_text(texts)).min())
            >= 0.9999
        )
    if kind != "openclip":  # a transformers directory that transformers itself reads
        from transformers import AutoModel

        assert (
            type(AutoModel.from_pretrained(result.saved)).__name__
            == {"clip": "CLIPModel", "siglip": "SiglipModel"}[kind]
        )


def test_resume_is_bit_identical_and_locked_towers_train_only_their_last_blocks(checkpoints, tmp_path):
    model = checkpoints["clip"]
    freeze = {
        "image_tower": True, "text_tower": True, "image_proj": False, "text_proj": False, "image_blocks": 1,
        "text_blocks": 1,
    }
    one_go = train_clip(config_for(model, tmp_path / "a", freeze=freeze), progress=False)
    half = train_clip(config_for(model, tmp_path / "b", freeze=freeze, max_steps=one_go.steps // 2), progress=False)
    assert half.steps == one_go.steps // 2
    resumed = train_clip(config_for(model, tmp_path / "b", freeze=freeze), progress=False)
    assert resumed.steps == one_go.steps
    a, b = (load_file(str(tmp_path / name / "model" / "model.safetensors")) for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = create_model(model).model.state_dict()
    moved = {k for k in a if not torch.equal(a[k], start[k])}
    assert any(k.startswith("vision_model.encoder.layers.1.") for k in moved)  # the last block of each tower trains
    assert any(k.startswith("text_model.encoder.layers.1.") for k in moved)
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= moved
    assert not any(
        k.startswith(("vision_model.encoder.layers.0.", "text_model.encoder.layers.0.", "vision_model.embeddings."))
        for k in moved
    )
    with pytest.raises(ValueError, match="has 2 blocks"):
        train_clip(config_for(model, tmp_path / "c", freeze={**freeze, "image_blocks": 3}), progress=False)


@pytest.mark.parametrize("kind", ["siglip", "openclip"])
def test_resume_is_bit_identical_for_a_siglip_and_an_open_clip_file(checkpoints, tmp_path, kind):
    one_go = train_clip(config_for(checkpoints[kind], tmp_path / "a", epochs=2), progress=False)
    train_clip(config_for(checkpoints[kind], tmp_path / "b", epochs=2, max_steps=one_go.steps // 2 + 1), progress=False)
    resumed = train_clip(config_for(checkpoints[kind], tmp_path / "b", epochs=2), progress=False)
    assert resumed.steps == one_go.steps > 2 and resumed.metrics == one_go.metrics
    a, b = ((tmp_path / name / "model" / "model.safetensors").read_bytes() for name in ("a", "b"))
    assert a == b


@pytest.mark.parametrize("kind", ["clip", "siglip", "openclip"])
def test_region_alignment_on_a_clip_resumes_bit_for_bit_and_saves_in_its_format(checkpoints, tmp_path, kind):
    import csv

    from tests.conftest import write_kagl_subset

    from vitrine.train.regions import RegionTrainConfig, train_regions

    shard = write_kagl_subset(tmp_path / "kagl-96.tar", 96)
    config = RegionTrainConfig(
        data=shard, model=checkpoints[kind], split_from=None, epochs=3, batch_size=16, lr=1e-3, warmup_steps=1,
        val_items=16, checkpoint_every=3, cache_dir=str(tmp_path / "cache"),
    )
    whole = train_regions(config.replace(out=str(tmp_path / "whole")), progress=False)
    losses = [float(row["loss"]) for row in csv.DictReader(open(tmp_path / "whole" / "metrics.csv")) if row.get("loss")]
    print(
        f"{kind} regions: loss at step 1 {losses[0]:.4f} -> last step {losses[-1]:.4f} ({whole.steps} steps), "
        f"{whole.metrics}"
    )
    assert losses[-1] < losses[0], losses
    train_regions(config.replace(out=str(tmp_path / "parts"), max_steps=whole.steps // 2 + 1), progress=False)
    resumed = train_regions(config.replace(out=str(tmp_path / "parts")), progress=False)
    assert (
        resumed.steps == whole.steps > 0
        and resumed.metrics == whole.metrics
        and set(whole.metrics) == {"top1_whole", "top1_regions"}
    )
    a, b = (load_file(str(tmp_path / name / "model" / "model.safetensors")) for name in ("whole", "parts"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = create_model(checkpoints[kind]).model.state_dict()
    image_proj = (
        "vision_model.head.probe" if kind == "siglip" else "visual_projection.weight"
    )  # SigLIP's attention-pooling head
    assert not torch.equal(a[image_proj], start[image_proj])  # the image side trained
    assert torch.equal(
        a["text_model.encoder.layers.0.mlp.fc1.weight"], start["text_model.encoder.layers.0.mlp.fc1.weight"]
    )  # text tower locked
    info = json.loads((tmp_path / "whole" / "model" / "training.json").read_text())
    assert info["load_as"].startswith({"clip": "hf:", "siglip": "hf:", "openclip": "openclip:"}[kind])
    reloaded = create_model(info["load_as"])
    assert torch.equal(reloaded.model.state_dict()[image_proj], a[image_proj])
    parity = create_model(
        info["load_as"], runtime="onnx"
    ).parity  # the result runs on ONNX Runtime at torch's embeddings
    assert min(parity["onnx_vs_torch_text"]["min"], parity["onnx_vs_torch_image"]["min"]) >= 0.9999
