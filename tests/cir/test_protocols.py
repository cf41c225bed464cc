"""Composed-retrieval metrics on small rankings whose answers are worked out by hand."""

import pytest
import torch

from vitrine.cir.metrics import best_target_ranks, recall, subset_ranks

# Gallery of 5 unit vectors on a circle; the query q = e0 scores them 1.0, 0.8, 0.6, 0.4, 0.2 via a hand-made gallery.
GALLERY = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.4, 0.9165], [0.2, 0.9798]])
QUERY = torch.tensor([[1.0, 0.0]])


def test_best_target_rank_with_reference_removed():
    # targets {2, 4}: best is 2 at rank 2 (0-based) behind 0 and 1
    assert best_target_ranks(QUERY, GALLERY, [[2, 4]]).tolist() == [2]
    # removing reference 0 (CIRR / triplets) moves target 2 up to rank 1
    assert best_target_ranks(QUERY, GALLERY, [[2, 4]], exclude=[0]).tolist() == [1]
    # FashionIQ keeps the reference in the gallery: no exclusion
    assert best_target_ranks(QUERY.repeat(2, 1), GALLERY, [[1], [4]], exclude=[None, 1]).tolist() == [1, 3]
    ranks = torch.tensor([0, 1, 9, 10, 49, 50])
    assert [recall(ranks, k) for k in (1, 10, 50)] == pytest.approx([1 / 6, 3 / 6, 5 / 6])


def test_subset_rank_drops_the_reference_inside_the_subset():
    # img_set {0, 1, 3, 4} holds the reference 0: without it, target 3 ranks behind 1 only.
    assert subset_ranks(QUERY, GALLERY, [[0, 1, 3, 4]], targets=[3], references=[0]).tolist() == [1]
    # reference outside the subset: nothing removed, target 3 behind 0 and 1
    assert subset_ranks(QUERY, GALLERY, [[0, 1, 3, 4]], targets=[3], references=[2]).tolist() == [2]
    sub = torch.tensor([0, 1, 2, 3])
    assert [recall(sub, k) for k in (1, 2, 3)] == [0.25, 0.5, 0.75]
