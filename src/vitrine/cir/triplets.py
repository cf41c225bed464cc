"""Composed-retrieval triplets: the JSONL format, and KAGL colourway / gender-swap pairs made from real titles.

One JSON object per line: {"reference": "<id>", "modification": "<text>", "targets": ["<id>", ...]}.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vitrine.config_file import loads_object
from vitrine.data.records import Item
from vitrine.data.splits import SplitConfig, hash_unit
from vitrine.data.text import is_unicode
from vitrine.errors import InvalidInput


@dataclass(frozen=True)
class Triplet:
    reference: str
    modification: str
    targets: tuple[str, ...]
    kind: str | None = None  # "colour" / "gender" for made triplets; None when read from other tools

    def to_json(self) -> str:
        data = {"reference": self.reference, "modification": self.modification, "targets": list(self.targets)}
        return json.dumps(data | ({"kind": self.kind} if self.kind else {}), ensure_ascii=False)


def read_triplets(path: str | os.PathLike) -> list[Triplet]:
    """Read and validate a triplet file; errors name the line."""
    out = []
    # surrogateescape: a line that is not UTF-8 is reported by number below, not as a decode error for the whole file
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if not is_unicode(line):
                raise InvalidInput(f"{path}, line {number}: not UTF-8 text")
            data = loads_object(line, f"{path}, line {number}")
            reference, modification, targets = data.get("reference"), data.get("modification"), data.get("targets")
            if not isinstance(reference, (str, int)) or str(reference) == "":
                raise InvalidInput(f"{path}, line {number}: 'reference' must be a product id")
            if not isinstance(modification, str) or not modification.strip():
                raise InvalidInput(f"{path}, line {number}: 'modification' must be a non-empty text")
            if (
                not isinstance(targets, list)
                or not targets
                or not all(isinstance(t, (str, int)) and str(t) != "" for t in targets)
            ):
                raise InvalidInput(f"{path}, line {number}: 'targets' must be a non-empty list of product ids")
            kind = data.get("kind")
            if kind is not None and not isinstance(kind, str):
                raise InvalidInput(f"{path}, line {number}: 'kind' must be a text, got {kind!r}")
            texts = {
                "reference": str(reference), "modification": modification, "targets": "".join(map(str, targets)),
                "kind": kind or "",
            }
            for name, text in texts.items():
                if not is_unicode(text):  # a JSON escape such as "\\ud800": no tokenizer or UTF-8 file takes it
                    raise InvalidInput(f"{path}, line {number}: '{name}' holds a lone surrogate, not Unicode text")
            out.append(Triplet(str(reference), modification.strip(), tuple(str(t) for t in targets), kind))
    if not out:
        raise InvalidInput(f"{path}: no triplets")
    return out


def write_triplets(path: str | os.PathLike, triplets: Iterable[Triplet]) -> int:
    """Write atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for triplet in triplets:
            handle.write(triplet.to_json() + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def _templates() -> dict:
    return json.loads(resources.files("vitrine.data").joinpath("prompts/cir_kagl.json").read_text(encoding="utf-8"))


def _word_pattern(words: Iterable[str]) -> re.Pattern:
    ordered = sorted({w.lower() for w in words if w}, key=len, reverse=True)  # longest first: "navy blue" before "blue"
    return re.compile(r"(?<![\w'])(" + "|".join(re.escape(w) for w in ordered) + r")(?![\w'])")


def _normalise(title: str, pattern: re.Pattern) -> str:
    return " ".join(pattern.sub(" ", title.lower().replace("-", " ")).split())


def make_kagl_triplets(
    items: Sequence[Item], seed: int = 0, kinds: Sequence[str] = ("colour", "gender")
) -> list[Triplet]:
    """Colourway and gender-swap triplets from titles that differ only in colour (or gender) words.

    Colour pairs share the colour-stripped title, article type and gender; gender pairs share the
    gender-stripped title, article type and colour. The targets of a query are every product of the
    group with the target value, so duplicates count as hits.
    """
    spec = _templates()
    colours = {i.attributes.get("baseColour") for i in items} - {None}
    patterns = {
        "colour": _word_pattern([*colours, *spec["extra_colour_words"]]),
        "gender": _word_pattern(spec["title_gender_words"]),
    }
    fields = {"colour": ("baseColour", "gender"), "gender": ("gender", "baseColour")}
    triplets = []
    for kind in kinds:
        varied, fixed = fields[kind]
        groups: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for item in items:
            value, other, article = (item.attributes.get(f) for f in (varied, fixed, "articleType"))
            if item.title and value and other and article:
                groups[(_normalise(item.title, patterns[kind]), article, other)][value].append(item.id)
        for by_value in groups.values():
            if len(by_value) < 2:
                continue
            for value, members in sorted(by_value.items()):
                for reference in members:
                    for target_value, targets in sorted(by_value.items()):
                        if target_value == value:
                            continue
                        words = (
                            target_value.lower()
                            if kind == "colour"
                            else spec["gender_words"].get(target_value, target_value.lower())
                        )
                        options = spec[kind]
                        template = options[int(hash_unit("template", seed, reference, target_value) * len(options))]
                        triplets.append(Triplet(reference, template.format(value=words), tuple(targets), kind))
    return triplets


def split_of(reference: str, attributes: dict, split: SplitConfig) -> str:
    """'train' for references the encoder trained on, 'val' for its held-out products (val, unseen, calib)."""
    return "train" if split.assign(reference, attributes) == "train" else "val"
