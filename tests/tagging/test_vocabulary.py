"""Attribute vocabularies: YAML and JSON files, synonyms and prompts, and clear errors for bad files."""

import json

import pytest

from vitrine.tagging.vocabulary import VocabularyError, builtin_vocabulary, load_vocabulary, vocabulary_from_values

YAML = """
attributes:
  baseColour:
    templates: ["a {value} garment"]
    values: [Black, {name: Navy Blue, synonyms: [dark blue]}]
  pattern:
    values:
      striped: ["a striped shirt", "a garment with stripes"]
      plain: null
    min_probability: 0.4
    temperature: 20
"""


def test_yaml_vocabulary_with_synonyms_and_prompts(tmp_path):
    path = tmp_path / "vocab.yaml"
    path.write_text(YAML)
    vocabulary = load_vocabulary(path)
    assert vocabulary.names == ["baseColour", "pattern"]
    colour = vocabulary["baseColour"]
    assert colour.value_names == ["Black", "Navy Blue"]
    assert colour.values[1].prompts == ("a Navy Blue garment", "a dark blue garment")
    pattern = vocabulary["pattern"]
    assert pattern.values[0].prompts == ("a striped shirt", "a garment with stripes")
    assert pattern.values[1].prompts == ("a photo of a plain", "a plain fashion product")  # default templates
    assert (pattern.min_probability, pattern.temperature, pattern.threshold) == (0.4, 20.0, 0.4)
    assert colour.min_probability is None and colour.threshold == pytest.approx(
        2 / 3
    )  # default: one value twice as likely as the other
    # a JSON copy reads the same, and a saved vocabulary reloads unchanged
    (tmp_path / "vocab.json").write_text(json.dumps({"attributes": {"pattern": {"values": ["striped", "plain"]}}}))
    assert load_vocabulary(tmp_path / "vocab.json")["pattern"].value_names == ["striped", "plain"]
    vocabulary.save(tmp_path / "saved.json")
    assert load_vocabulary(tmp_path / "saved.json") == vocabulary


@pytest.mark.parametrize(
    "text, message",
    [
        ("attributes: [1, 2]", "must map attribute names"),
        ("attributes:\n  colour: [Red]", "at least two values"),
        ("attributes:\n  colour: [Red, Red]", "listed twice"),
        ("attributes:\n  colour:\n    values: [Red, Blue]\n    templates: ['a {colour} thing']", "exactly one field"),
        ("attributes:\n  colour:\n    values: [Red, Blue]\n    temperature: -1", "temperature must be > 0"),
        ("attributes:\n  colour:\n    values: [Red, Blue]\n    min_probability: 2", "min_probability must be in"),
        ("attributes:\n  colour:\n    values: [Red, Blue]\n    colours: 3", "unknown keys"),
        ("attributes:\n  colour:\n    values: [Red, Blue]\n    region_weight: 1.5", "region_weight must be in"),
        ("attributes:\n  colour:\n    values: [Red, {synonyms: [x]}]", "mapping with 'name'"),
        ("attributes: {colour: [Red, Blue]", "not valid YAML"),
    ],
)
def test_bad_vocabulary_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(VocabularyError, match=message) as error:
        load_vocabulary(path)
    assert "bad.yaml" in str(error.value)


def test_missing_and_bad_json_files(tmp_path):
    with pytest.raises(VocabularyError, match="not found"):
        load_vocabulary(tmp_path / "nope.yaml")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(VocabularyError, match="not valid JSON"):
        load_vocabulary(tmp_path / "bad.json")


def test_vocabulary_from_catalog_values_and_the_shipped_one():
    vocabulary = vocabulary_from_values({"gender": ["Men", "Women", None, "Men"], "usage": ["Casual"]})
    assert vocabulary.names == ["gender"]  # one value is no choice: dropped
    assert vocabulary["gender"].value_names == ["Men", "Women"]
    shipped = builtin_vocabulary()
    assert {"gender", "baseColour", "usage", "season", "articleType"} <= set(shipped.names)
    assert len(shipped["articleType"].values) > 100


def test_a_shipped_model_may_carry_its_own_calibrated_vocabulary():
    from importlib import resources

    from vitrine.models import DEFAULT_TAG_MODEL
    from vitrine.tagging.vocabulary import builtin_vocabulary

    plain = builtin_vocabulary()
    own = resources.files("vitrine.models").joinpath(
        "weights", DEFAULT_TAG_MODEL.removeprefix("vitrine:"), "vocabulary.json"
    )
    tagged = builtin_vocabulary(model=DEFAULT_TAG_MODEL)
    assert [a.name for a in tagged.attributes] == [a.name for a in plain.attributes]
    assert own.is_file()  # the default tagging model ships temperatures fitted for it
    assert [a.temperature for a in tagged.attributes] != [a.temperature for a in plain.attributes]
    assert builtin_vocabulary(model="vitrine:no-such-model").to_dict() == plain.to_dict()
