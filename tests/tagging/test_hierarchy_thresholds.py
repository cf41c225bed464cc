"""Coarse attributes read off a finer one (derive), the fitted hierarchy, and fitted 'unknown' thresholds."""

import pytest
import torch
from tests.tagging.test_tagging import HUES, Palette, product

from vitrine.tagging.tagger import Tagger, derivation_matrix, fit_hierarchy, fit_threshold
from vitrine.tagging.views import RegionViews
from vitrine.tagging.vocabulary import VocabularyError, vocabulary_from_dict

# The fine attribute names colours; the coarse one's own prompts point the wrong way on purpose (cool <-> red).
FINE_AND_COARSE = {
    "attributes": {
        "colour": {
            "values": {"red": ["a red garment"], "green": ["a green garment"], "blue": ["a blue garment"]},
            "temperature": 50,
        },
        "tone": {"values": {"warm": ["a blue garment"], "cool": ["a red garment"]}, "temperature": 50},
    }
}


def test_a_derived_attribute_follows_its_source_not_its_own_prompts():
    plain = Tagger(Palette(), vocabulary_from_dict(FINE_AND_COARSE), RegionViews.preset("whole"))
    images = [product(HUES["red"]), product(HUES["blue"])]
    assert [t["tone"].best for t in plain.tag_images(images)] == ["cool", "warm"]
    data = {
        "attributes": {
            **FINE_AND_COARSE["attributes"],
            "tone": {
                **FINE_AND_COARSE["attributes"]["tone"],
                "derive": {"from": "colour", "map": {"red": "warm", "green": "cool", "blue": "cool"}},
            },
        }
    }
    derived = Tagger(Palette(), vocabulary_from_dict(data), RegionViews.preset("whole"))
    tags = derived.tag_images(images)
    assert [t["tone"].best for t in tags] == ["warm", "cool"]
    probabilities = derived.probabilities(derived.embed([(image, None) for image in images]))
    colour_p, tone_p = probabilities["colour"][1], probabilities["tone"][1]
    assert torch.allclose(tone_p.sum(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(tone_p[:, 0], colour_p[:, 0], atol=1e-6)  # warm = p(red)


def test_unmapped_source_values_fall_back_to_the_attributes_own_prompts():
    matrix = derivation_matrix(["red", "green", "blue"], ["warm", "cool"], {"red": "warm"})
    assert matrix.tolist() == [[1, 0], [0, 0], [0, 0]]
    data = {
        "attributes": {
            **FINE_AND_COARSE["attributes"],
            "tone": {**FINE_AND_COARSE["attributes"]["tone"], "derive": {"from": "colour", "map": {"red": "warm"}}},
        }
    }
    tagger = Tagger(Palette(), vocabulary_from_dict(data), RegionViews.preset("whole"))
    # a blue product: p(blue) is unmapped mass, spread by tone's own prompts, which call blue 'warm'
    assert tagger.tag_images([product(HUES["blue"])])[0]["tone"].best == "warm"


@pytest.mark.parametrize(
    "derive, message",
    [
        ({"from": "size", "map": {}}, "must name another attribute"),
        ({"from": "colour", "map": {"red": "hot"}}, "does not have"), ({"from": "colour"}, "derive must be"),
    ],
)
def test_bad_derivations_are_refused_with_the_attribute_named(derive, message):
    data = {
        "attributes": {
            **FINE_AND_COARSE["attributes"],
            "tone": {**FINE_AND_COARSE["attributes"]["tone"], "derive": derive},
        }
    }
    with pytest.raises(VocabularyError, match=message):
        vocabulary_from_dict(data)


def test_a_derived_vocabulary_round_trips_and_select_drops_a_missing_source(tmp_path):
    data = {
        "attributes": {
            **FINE_AND_COARSE["attributes"],
            "tone": {**FINE_AND_COARSE["attributes"]["tone"], "derive": {"from": "colour", "map": {"red": "warm"}}},
        }
    }
    vocabulary = vocabulary_from_dict(data)
    assert vocabulary_from_dict(vocabulary.to_dict())["tone"].derive == vocabulary["tone"].derive
    assert vocabulary.select(["tone"])["tone"].derive is None
    assert [a.name for a in vocabulary.ordered()] == ["colour", "tone"]


def test_fit_hierarchy_maps_a_pure_finer_attribute_and_ignores_a_loose_one():
    vocabulary = vocabulary_from_dict(
        {
            "attributes": {
                "type": ["Tshirts", "Shirts", "Jeans", "Heels"], "group": ["Topwear", "Bottomwear", "Shoes"],
                "gender": ["Men", "Women"],
            }
        }
    )
    rows = (
        [{"type": "Tshirts", "group": "Topwear", "gender": g} for g in ("Men", "Women") * 20]
        + [{"type": "Shirts", "group": "Topwear", "gender": "Men"}] * 20
        + [{"type": "Jeans", "group": "Bottomwear", "gender": g} for g in ("Men", "Women") * 10]
        + [{"type": "Heels", "group": "Shoes", "gender": "Women"}] * 20
    )
    fitted = fit_hierarchy(rows, vocabulary)
    assert fitted == {
        "group": {
            "derive": {
                "from": "type",
                "map": {"Tshirts": "Topwear", "Shirts": "Topwear", "Jeans": "Bottomwear", "Heels": "Shoes"},
            }
        }
    }
    noisy = (
        rows + [{"type": "Tshirts", "group": "Shoes", "gender": "Men"}] * 10
    )  # 10 of 110 break the rule: purity 0.91
    assert fit_hierarchy(noisy, vocabulary) == {}


def test_fit_threshold_reaches_the_precision_or_keeps_half_the_answers():
    p = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = torch.tensor([1, 1, 1, 0, 1, 0], dtype=torch.bool)
    threshold = fit_threshold(p, correct, precision=0.9)
    answered = p >= threshold
    assert answered.tolist() == [True, True, True, False, False, False]
    assert fit_threshold(p, correct, precision=0.75) < 0.5 <= fit_threshold(p, correct, precision=0.75) + 1e-5
    assert fit_threshold(p, torch.ones(6, dtype=torch.bool), precision=0.9) == 0.0  # all right: answer everything
    wrong_first = torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.bool)
    assert int((p >= fit_threshold(p, wrong_first, precision=0.9, min_coverage=0.5)).sum()) == 3
