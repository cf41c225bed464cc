"""Attribute vocabularies as data: attribute -> values, each with optional synonyms or prompts.

A YAML or JSON file such as

    attributes:
      baseColour:
        templates: ["a {value} garment", "a photo of a {value} product"]
        values: [Black, White, {name: Navy Blue, synonyms: [dark blue]}]
      pattern:
        values:
          striped: ["a striped garment", "a shirt with stripes"]   # a value with its own prompts
          plain: ["a plain garment"]
        min_probability: 0.4
      subCategory:
        values: [Topwear, Bottomwear]
        derive: {from: articleType, map: {Tshirts: Topwear, Jeans: Bottomwear}}   # read off a finer attribute

Adding a value or a whole attribute is an edit of this file: tagging embeds the prompts at run time.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from vitrine.data.prompts import PromptSet
from vitrine.errors import InvalidInput, UnknownName

DEFAULT_TEMPLATES = ("a photo of a {value}", "a {value} fashion product")
CHANCE_MULTIPLE = (
    2.0  # default 'unknown' threshold: p(best) < 2 / (C + 1), the share of a value twice as likely as each other one
)
DEFAULT_TEMPERATURE = 50.0  # logit scale of the softmax over an attribute's values, when none was calibrated
_FORMATTER = string.Formatter()


class VocabularyError(InvalidInput):
    """A vocabulary file that cannot be used; the message names the file and the entry."""

    code = "invalid_vocabulary"


@dataclass(frozen=True)
class Value:
    name: str
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Derivation:
    """A coarse attribute read off a finer one: each mapped value of `source` gives its probability to its parent."""

    source: str
    parents: Mapping[str, str]  # source value -> this attribute's value

    def to_dict(self) -> dict:
        return {"from": self.source, "map": dict(sorted(self.parents.items()))}


@dataclass(frozen=True)
class Attribute:
    name: str
    values: tuple[Value, ...]
    temperature: float = DEFAULT_TEMPERATURE
    min_probability: float | None = None  # None: CHANCE_MULTIPLE / (number of values - 1 + CHANCE_MULTIPLE)
    region_weight: float | None = None  # 'blend' pooling: share of the best region view vs the whole image (None: 0.5)
    derive: Derivation | None = (
        None  # hierarchy: probabilities summed from a finer attribute's (unmapped mass: own prompts)
    )

    @property
    def value_names(self) -> list[str]:
        return [value.name for value in self.values]

    @property
    def threshold(self) -> float:
        """The probability under which the best value is answered as 'unknown' (nothing fits better than a guess)."""
        if self.min_probability is not None:
            return self.min_probability
        return CHANCE_MULTIPLE / (len(self.values) - 1 + CHANCE_MULTIPLE)


@dataclass(frozen=True)
class Vocabulary:
    attributes: tuple[Attribute, ...] = field(default_factory=tuple)

    def __post_init__(self):
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise VocabularyError(f"attribute names repeat: {names}")
        for a in self.attributes:
            if a.derive is None:
                continue
            if a.derive.source not in names or a.derive.source == a.name:
                raise VocabularyError(
                    f"attribute {a.name!r}: derive.from must name another attribute of the vocabulary, got "
                    f"{a.derive.source!r}"
                )
            if self[a.derive.source].derive is not None:
                raise VocabularyError(
                    f"attribute {a.name!r}: derives from {a.derive.source!r}, which is itself derived; derive from the "
                    "finest attribute"
                )
            unknown = sorted(set(a.derive.parents.values()) - set(a.value_names))
            if unknown:
                raise VocabularyError(f"attribute {a.name!r}: derive.map names values it does not have: {unknown[:5]}")

    def __getitem__(self, name: str) -> Attribute:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise UnknownName(f"no attribute {name!r} in the vocabulary; it has {self.names}")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def select(self, names: Sequence[str]) -> "Vocabulary":
        """These attributes only; a derived one whose source is left out falls back to its own prompts."""
        chosen = [self[name] for name in names]
        return Vocabulary(
            tuple(a if a.derive is None or a.derive.source in names else replace(a, derive=None) for a in chosen)
        )

    def ordered(self) -> list[Attribute]:
        """Attributes with every derivation source before the attributes derived from it."""
        return [a for a in self.attributes if a.derive is None] + [a for a in self.attributes if a.derive is not None]

    def with_calibration(self, calibration: Mapping[str, Mapping]) -> "Vocabulary":
        """A copy with fitted temperatures / thresholds / region weights / derivations for the attributes named."""
        out = []
        for a in self.attributes:
            fitted = calibration.get(a.name, {})
            min_probability = fitted.get("min_probability", a.min_probability)
            region_weight = fitted.get("region_weight", a.region_weight)
            derive = fitted.get("derive", a.derive)
            out.append(
                Attribute(
                    a.name,
                    a.values,
                    float(fitted.get("temperature", a.temperature)),
                    None if min_probability is None else float(min_probability),
                    None if region_weight is None else float(region_weight),
                    _derivation(derive, f"attribute {a.name!r}") if isinstance(derive, Mapping) else derive,
                )
            )
        return Vocabulary(tuple(out))

    def to_dict(self) -> dict:
        return {
            "attributes": {
                a.name: {
                    "temperature": a.temperature,
                    **({"min_probability": a.min_probability} if a.min_probability is not None else {}),
                    **({"region_weight": a.region_weight} if a.region_weight is not None else {}),
                    **({"derive": a.derive.to_dict()} if a.derive is not None else {}),
                    "values": {v.name: list(v.prompts) for v in a.values},
                }
                for a in self.attributes
            }
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def load_vocabulary(path: str | Path) -> Vocabulary:
    """Read a YAML (.yaml/.yml) or JSON vocabulary; every mistake is a VocabularyError naming the entry."""
    source = Path(path)
    if not source.is_file():
        raise VocabularyError(f"attribute vocabulary not found: {path}")
    try:
        text = source.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VocabularyError(f"{path}: not UTF-8 text ({exc})") from None
    return vocabulary_from_text(
        text, origin=str(path), syntax="YAML" if source.suffix.lower() in (".yaml", ".yml") else "JSON"
    )


def vocabulary_from_text(text: str, origin: str = "vocabulary", syntax: str = "YAML") -> Vocabulary:
    """Parse YAML (which JSON is a subset of) or strict JSON text; every mistake is a VocabularyError naming
    `origin`."""
    try:
        if syntax == "YAML":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (
        Exception
    ) as exc:  # YAMLError / JSONDecodeError, and numbers over 4300 digits or nesting too deep: all the same to a user
        raise VocabularyError(f"{origin}: not valid {syntax}: {exc}") from None
    return vocabulary_from_dict(data, origin=origin)


def vocabulary_from_dict(data, origin: str = "vocabulary") -> Vocabulary:
    if not isinstance(data, Mapping):
        raise VocabularyError(f"{origin}: expected a mapping with an 'attributes' key (or attribute -> values)")
    attributes = data.get("attributes", data)
    if not isinstance(attributes, Mapping) or not attributes:
        raise VocabularyError(f"{origin}: 'attributes' must map attribute names to their values")
    names = [str(name) for name in attributes]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # keys that differ in YAML but print alike, such as 1 and "1"
        raise VocabularyError(f"{origin}: attribute names repeat: {repeated}")
    return Vocabulary(tuple(_attribute(name, spec, origin) for name, spec in zip(names, attributes.values())))


def _attribute(name: str, spec, origin: str) -> Attribute:
    where = f"{origin}: attribute {name!r}"
    if isinstance(spec, (list, tuple)):
        spec = {"values": spec}
    if not isinstance(spec, Mapping):
        raise VocabularyError(f"{where}: expected a list of values or a mapping with 'values'")
    unknown = set(spec) - {"values", "templates", "temperature", "min_probability", "region_weight", "derive"}
    if unknown:
        raise VocabularyError(
            f"{where}: unknown keys {sorted(unknown, key=str)}; expected values, templates, temperature, "
            "min_probability, region_weight, derive"
        )
    templates = spec.get("templates") or DEFAULT_TEMPLATES
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, (list, tuple)):
        raise VocabularyError(f"{where}: templates must be a list of strings, got {templates!r}")
    templates = tuple(templates)
    for template in templates:
        if not _is_template(template):
            raise VocabularyError(f"{where}: template {template!r} must be a string using exactly one field, {{value}}")
    raw = spec.get("values")
    if isinstance(raw, Mapping):
        raw = [{"name": k, "prompts": v} if v else k for k, v in raw.items()]
    if not isinstance(raw, (list, tuple)) or len(raw) < 2:
        raise VocabularyError(
            f"{where}: needs a list of at least two values (a choice between one value means nothing)"
        )
    values, seen = [], set()
    for entry in raw:
        value = _value(entry, templates, where)
        if value.name in seen:
            raise VocabularyError(f"{where}: value {value.name!r} is listed twice")
        seen.add(value.name)
        values.append(value)
    temperature = _number(spec.get("temperature", DEFAULT_TEMPERATURE), f"{where}: temperature")
    if temperature <= 0:
        raise VocabularyError(f"{where}: temperature must be > 0, got {temperature}")
    min_probability = spec.get("min_probability")
    if min_probability is not None:
        min_probability = _number(min_probability, f"{where}: min_probability")
        if not 0.0 <= min_probability <= 1.0:
            raise VocabularyError(f"{where}: min_probability must be in [0, 1], got {min_probability}")
    region_weight = spec.get("region_weight")
    if region_weight is not None:
        region_weight = _number(region_weight, f"{where}: region_weight")
        if not 0.0 <= region_weight <= 1.0:
            raise VocabularyError(f"{where}: region_weight must be in [0, 1], got {region_weight}")
    derive = spec.get("derive")
    return Attribute(
        name, tuple(values), temperature, min_probability, region_weight,
        None if derive is None else _derivation(derive, where),
    )


def _derivation(raw, where: str) -> Derivation:
    if (
        not isinstance(raw, Mapping)
        or not isinstance(raw.get("from"), str)
        or not isinstance(raw.get("map"), Mapping)
        or set(raw) - {"from", "map"}
    ):
        raise VocabularyError(f"{where}: derive must be {{from: ATTRIBUTE, map: {{finer value: value}}}}, got {raw!r}")
    parents = {}
    for child, parent in raw["map"].items():
        if not isinstance(parent, (str, int, float)) or isinstance(parent, bool):
            raise VocabularyError(f"{where}: derive.map[{child!r}] must be a value name, got {parent!r}")
        parents[str(child)] = str(parent)
    return Derivation(raw["from"], parents)


def _value(entry, templates: Sequence[str], where: str) -> Value:
    if not isinstance(entry, Mapping):
        name = _value_name(entry, where)
        return Value(name, tuple(t.format(value=name) for t in templates))
    if "name" not in entry:
        raise VocabularyError(
            f"{where}: each value is a name or a mapping with 'name' (and 'synonyms' or 'prompts'); got {entry!r}"
        )
    name = _value_name(entry["name"], where)
    prompts = entry.get("prompts")
    if isinstance(prompts, str):
        prompts = [prompts]
    if prompts is not None and (
        not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) and p.strip() for p in prompts)
    ):
        raise VocabularyError(f"{where}: value {name!r}: prompts must be a list of non-empty strings")
    synonyms = entry.get("synonyms") or []
    if isinstance(synonyms, str):
        synonyms = [synonyms]
    if not isinstance(synonyms, (list, tuple)) or not all(isinstance(s, str) and s.strip() for s in synonyms):
        raise VocabularyError(f"{where}: value {name!r}: synonyms must be a list of non-empty strings")
    texts = list(prompts) if prompts else [t.format(value=word) for word in [name, *synonyms] for t in templates]
    if prompts and synonyms:
        texts += [t.format(value=word) for word in synonyms for t in templates]
    return Value(name, tuple(texts))


def _value_name(raw, where: str) -> str:
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise VocabularyError(
            f"{where}: each value is a name or a mapping with 'name' (and 'synonyms' or 'prompts'); got {raw!r}"
        )
    name = str(raw).strip()
    if not name:
        raise VocabularyError(f"{where}: empty value name")
    return name


def _is_template(template) -> bool:
    """A string whose one field is a plain {value}: no other field, conversion or format spec (a width can be a memory
    bomb)."""
    if not isinstance(template, str):
        return False
    try:
        fields = [
            (name, spec, conversion) for _, name, spec, conversion in _FORMATTER.parse(template) if name is not None
        ]
    except ValueError:  # a stray brace
        return False
    return fields == [("value", "", None)]


def _number(raw, where: str) -> float:
    if isinstance(raw, bool):
        raise VocabularyError(f"{where} must be a number, got {raw!r}")
    try:
        number = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise VocabularyError(f"{where} must be a number, got {raw!r}") from None
    if not math.isfinite(number):
        raise VocabularyError(f"{where} must be a finite number, got {raw!r}")
    return number


def vocabulary_from_values(values: Mapping[str, Iterable[str]], prompts: PromptSet | None = None) -> Vocabulary:
    """A vocabulary from attribute -> observed values (e.g. a catalog's columns), with a prompt set's templates."""
    attributes = []
    for name, found in values.items():
        names = sorted({str(v) for v in found if v})
        if len(names) < 2:
            continue
        templates = tuple(prompts.attributes.get(name, prompts.default)) if prompts else DEFAULT_TEMPLATES
        attributes.append(Attribute(name, tuple(Value(v, tuple(t.format(value=v) for t in templates)) for v in names)))
    if not attributes:
        raise VocabularyError(f"no attribute among {list(values)} has two or more values to choose between")
    return Vocabulary(tuple(attributes))


def builtin_vocabulary(name: str = "kagl", model: str | None = None) -> Vocabulary:
    """A vocabulary shipped in `vitrine/tagging/vocabularies/`. For the KAGL one, a shipped model may carry its own
    calibration (temperatures, thresholds, region weights fitted for it) as `vocabulary.json` beside its weights."""
    from importlib import resources

    if name == "kagl" and model and model.startswith("vitrine:"):
        own = resources.files("vitrine.models").joinpath("weights", model.removeprefix("vitrine:"), "vocabulary.json")
        if own.is_file():
            return vocabulary_from_dict(json.loads(own.read_text(encoding="utf-8")), origin=f"{model} vocabulary.json")
    path = resources.files("vitrine.tagging").joinpath("vocabularies", f"{name}.json")
    if not path.is_file():
        raise VocabularyError(f"no shipped vocabulary {name!r}")
    return vocabulary_from_dict(json.loads(path.read_text(encoding="utf-8")), origin=f"vocabularies/{name}.json")
