import pytest
import torch

from vitrine.evaluate.metrics import f1_scores, mean_reciprocal_rank, recall_at_k, target_ranks, topk_accuracy
from vitrine.evaluate.retrieval import retrieval_report
from vitrine.evaluate.zeroshot import classify, zero_shot_report


def test_target_ranks_by_hand():
    gallery = torch.eye(4)
    queries = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0],  # target 0 scores highest: rank 0
            [0.5, 0.2, 0.9, 0.0],  # target 1 (0.2) is beaten by 0.5 and 0.9: rank 2
            [0.1, 0.2, 0.3, 0.4],  # target 3 is top: rank 0
        ]
    )
    ranks = target_ranks(queries, gallery, torch.tensor([0, 1, 3]), chunk=2)
    assert ranks.tolist() == [0, 2, 0]
    assert recall_at_k(ranks, 1) == pytest.approx(2 / 3)
    assert recall_at_k(ranks, 3) == 1.0
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 1) / 3)
    report = retrieval_report(queries, gallery, torch.tensor([0, 1, 3]))
    assert report == {"n_queries": 3, "gallery_size": 4, "R@1": 0.6667, "R@5": 1.0, "R@10": 1.0, "MRR": 0.7778}


def test_topk_and_f1_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 1, 2])
    # predictions: 0, 2, 1, 0
    assert topk_accuracy(scores, labels, 1) == 0.5
    assert topk_accuracy(scores, labels, 2) == 0.75
    macro, weighted = f1_scores(scores.argmax(1), labels, 3)
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: tp1 fp0 fn1 -> 2/3; class 2: tp0 -> 0
    assert macro == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert weighted == pytest.approx((2 / 3 * 1 + 2 / 3 * 2 + 0 * 1) / 4)
    report = zero_shot_report(scores, labels, ["a", "b", "c"], "field")
    assert report["per_class"] == {
        "a": {"n": 1, "correct": 1}, "b": {"n": 2, "correct": 1}, "c": {"n": 1, "correct": 0},
    }
    assert (report["n"], report["classes"], report["top1"]) == (4, 3, 0.5)


def test_calibrated_stacking_moves_predictions_to_unseen_classes():
    image = torch.tensor([[1.0, 0.0]])
    classes = torch.tensor([[1.0, 0.0], [0.95, 0.312]])  # class 0 seen (score 1.0), class 1 unseen (0.95)
    seen = torch.tensor([True, False])
    assert classify(image, classes).argmax(1).item() == 0
    assert classify(image, classes, seen, calibration=0.1).argmax(1).item() == 1


def test_tune_calibration_picks_the_best_harmonic_mean():
    from vitrine.evaluate.zeroshot import tune_calibration

    # Class 0 is seen, class 1 held out. Item 0 (seen) wins by 0.3; item 1 (held out) loses by 0.1.
    scores = torch.tensor([[0.9, 0.6], [0.8, 0.7]])
    labels = torch.tensor([0, 1])
    best = tune_calibration(scores, labels, torch.tensor([True, False]), grid=[0.0, 0.05, 0.2, 0.4])
    # 0.0, 0.05: unseen wrong (H=0). 0.2: both right (H=1). 0.4: seen wrong.
    assert best == {"gamma": 0.2, "seen_top1": 1.0, "heldout_top1": 1.0, "harmonic": 1.0}
