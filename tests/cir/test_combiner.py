"""The Combiner follows CLIP4Cir: lambda mixes text and image, the fusion branch is a residual, the output is unit
norm."""

import math

import pytest
import torch

from vitrine.models.combiner import Combiner, CombinerConfig, SumCombiner
from vitrine.models.composed import load_combiner


def hand_written(fusion_bias=(0.5, 0.0)):
    """d = p = h = 2; projections are identities; lambda = sigmoid(ln 3) = 0.75 for image e1, text e2."""
    model = Combiner(CombinerConfig(embed_dim=2, projection_dim=2, hidden_dim=2)).eval()
    eye, zero2 = torch.eye(2), torch.zeros(2)
    state = {
        "text_projection.0.weight": eye,
        "text_projection.0.bias": zero2,
        "image_projection.0.weight": eye,
        "image_projection.0.bias": zero2,
        "fusion.0.weight": torch.zeros(2, 4),
        "fusion.0.bias": zero2,
        "fusion.3.weight": torch.zeros(2, 2),
        "fusion.3.bias": torch.tensor(fusion_bias),
        "mix.0.weight": torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]),
        "mix.0.bias": zero2,
        "mix.3.weight": torch.tensor([[math.log(3) / 2, 0.0]]),
        "mix.3.bias": torch.zeros(1),
    }
    model.load_state_dict(state)
    return model


IMAGE, TEXT = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])


def test_lambda_residual_and_norm_match_hand_computation():
    model = hand_written()
    # joint = [relu(text), relu(image)] = [0, 1, 1, 0]; mix hidden = [2, 0]; lambda = sigmoid(2 * ln3 / 2) = 3/4
    assert model.mix_weight(IMAGE, TEXT).item() == pytest.approx(0.75)
    # fusion = [0.5, 0]; output = [0.5, 0] + 0.75 * [0, 1] + 0.25 * [1, 0] = [0.75, 0.75] -> unit norm
    out = model(IMAGE, TEXT)
    assert out.tolist()[0] == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2)], abs=1e-6)
    assert model.logits(IMAGE, TEXT, torch.tensor([[2.0, 0.0]])).item() == pytest.approx(100 / math.sqrt(2), abs=1e-4)
    # with a zero fusion branch only the residual mix remains: [0.25, 0.75] / |.|
    bare = hand_written(fusion_bias=(0.0, 0.0))(IMAGE, TEXT)[0]
    assert bare.tolist() == pytest.approx([0.25 / math.sqrt(0.625), 0.75 / math.sqrt(0.625)], abs=1e-6)
    assert torch.linalg.norm(
        Combiner(CombinerConfig(embed_dim=8)).eval()(torch.randn(5, 8), torch.randn(5, 8)), dim=1
    ).tolist() == pytest.approx([1.0] * 5)


def test_default_widths_dropout_and_sum():
    model = Combiner(CombinerConfig(embed_dim=16))
    assert model.text_projection[0].out_features == 64 and model.fusion[0].out_features == 128
    assert [type(m).__name__ for m in model.mix] == ["Linear", "ReLU", "Dropout", "Linear", "Sigmoid"]
    assert all(m.p == 0.5 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert SumCombiner()(IMAGE, TEXT).tolist()[0] == pytest.approx([1 / math.sqrt(2)] * 2)


def test_save_load_round_trip_and_refusals(tmp_path):
    model = hand_written()
    model.save(tmp_path / "c", extra={"note": "test"})
    again = load_combiner(str(tmp_path / "c"), embed_dim=2)
    assert torch.allclose(again(IMAGE, TEXT), model(IMAGE, TEXT))
    with pytest.raises(ValueError, match="expects 2-d"):
        load_combiner(str(tmp_path / "c"), embed_dim=256)
    with pytest.raises(FileNotFoundError, match="no combiner"):
        load_combiner(str(tmp_path / "nothing"))
    assert isinstance(load_combiner("sum"), SumCombiner)
