import pytest

from vitrine.data.prompts import PromptSet, builtin_prompts, render
from vitrine.data.splits import SplitConfig, hash_unit


def test_hash_unit_is_stable_across_runs():
    # A fixed value: the split must not change between machines or Python versions.
    # A golden value recorded once: changing the hash would silently reshuffle every user's splits.
    assert hash_unit("split", 0, "1163") == 0.5454210439172379


def test_id_split_is_deterministic_and_sized():
    config = SplitConfig(seed=7, val_fraction=0.2)
    ids = [str(i) for i in range(5000)]
    first = [config.assign(i) for i in ids]
    assert first == [SplitConfig(seed=7, val_fraction=0.2).assign(i) for i in ids]
    assert 0.17 < first.count("val") / len(ids) < 0.23
    other = [SplitConfig(seed=8, val_fraction=0.2).assign(i) for i in ids]
    assert other != first


def test_holdout_of_whole_attribute_values():
    config = SplitConfig(val_fraction=0.1, holdout_field="articleType", holdout_values=("Jeans",))
    assert config.assign("1", {"articleType": "Jeans"}) == "unseen"
    assert config.assign("1", {"articleType": "Tshirts"}) in ("train", "val")
    assert config.assign("1", {"articleType": None}) in ("train", "val")
    types = [f"type{i}" for i in range(400)]
    chosen = SplitConfig(holdout_field="articleType", holdout_fraction=0.25, seed=1)
    held = [t for t in types if chosen.is_held_out(t)]
    assert 70 < len(held) < 130
    assert held == [
        t for t in types if SplitConfig(holdout_field="articleType", holdout_fraction=0.25, seed=1).is_held_out(t)
    ]
    with pytest.raises(ValueError, match="need a holdout_field"):
        SplitConfig(holdout_values=("Jeans",))


def test_render_skips_templates_with_missing_fields():
    assert render("a {baseColour} {articleType}", {"baseColour": "Red", "articleType": "Dress"}) == "a Red Dress"
    assert render("a {baseColour} {articleType}", {"baseColour": None, "articleType": "Dress"}) is None


def test_prompt_set_from_data():
    prompts = PromptSet.from_dict(
        {
            "name": "shop",
            "attributes": {"pattern": ["a {value} pattern", "clothes with {value}"]},
            "captions": ["a {pattern} {articleType}", "{articleType} by {brand}"],
        }
    )
    assert prompts.class_prompts("pattern", "striped") == ["a striped pattern", "clothes with striped"]
    assert prompts.class_prompts("sleeve", "long") == ["a photo of a long"]  # default templates
    assert prompts.render_captions({"pattern": "striped", "articleType": "shirt"}) == ["a striped shirt"]
    with pytest.raises(ValueError, match="exactly one field"):
        PromptSet.from_dict({"attributes": {"pattern": ["a {value} {other}"]}})


def test_builtin_kagl_prompts_cover_the_kagl_attributes():
    prompts = builtin_prompts("kagl")
    assert len(prompts.class_prompts("articleType", "Jeans")) >= 2
    captions = prompts.render_captions({"baseColour": "Blue", "articleType": "Jeans", "gender": "Men"})
    assert "a photo of a Blue Jeans for Men" in captions
