import math

import pytest
import torch
import torch.nn.functional as F

from vitrine.losses import ClipLoss, clamp_logit_scale, clip_loss, multi_positive_loss, positives_from_ids


def test_clip_loss_matches_a_hand_computed_example():
    # Two orthogonal pairs: logits = s * [[1, 0], [0, 1]] with s = 2.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = clip_loss(image, text, torch.tensor(math.log(2.0)))
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))  # same in both directions
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_clip_loss_is_asymmetric_in_the_right_way():
    image = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=-1)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = image @ text.t()  # scale 1
    i2t = F.cross_entropy(logits, torch.arange(2))
    t2i = F.cross_entropy(logits.t(), torch.arange(2))
    assert float(clip_loss(image, text, torch.tensor(0.0))) == pytest.approx(float(0.5 * (i2t + t2i)), abs=1e-6)


def test_logit_scale_is_clamped_at_100():
    assert float(clamp_logit_scale(torch.tensor(10.0))) == pytest.approx(100.0)
    assert float(clamp_logit_scale(torch.tensor(1.0))) == pytest.approx(math.e)


def test_multi_positive_equals_clip_loss_with_unique_captions():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(2.0)
    ids = torch.arange(5)
    assert float(ClipLoss()(image, text, scale, ids)) == pytest.approx(float(clip_loss(image, text, scale)), abs=1e-6)


def test_multi_positive_hand_computed_with_a_duplicate_caption():
    # Images 0 and 1 share caption id 7, so texts 0 and 1 are the same string: both count as positives.
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    positives = positives_from_ids(torch.tensor([7, 7, 3]), torch.tensor([7, 7, 3]))
    assert positives.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    loss = multi_positive_loss(image, text, torch.tensor(0.0), positives)
    e = math.e
    rows_01 = -0.5 * 2 * math.log(e / (2 * e + 1))  # targets 1/2 on two logits of 1, one of 0
    row_2 = -math.log(e / (e + 2))
    expected = (2 * rows_01 + row_2) / 3  # identical in both directions here
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_multi_positive_rejects_rows_without_positives():
    with pytest.raises(ValueError, match="at least one positive"):
        multi_positive_loss(
            torch.eye(2), torch.eye(2), torch.tensor(0.0), torch.tensor([[True, False], [False, False]])
        )
