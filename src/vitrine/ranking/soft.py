"""Query words that name a catalog value ("women", "red", "sweatshirt") become soft filters: a boost, never a cut."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vitrine.data.tagged import PREDICTED_PREFIX
from vitrine.data.words import stem, words

# Words that join a query's parts and name nothing ("red dress for women", "like this but in black").
FILLER = frozenset(
    {
        "a", "an", "and", "the", "for", "in", "with", "of", "on", "to", "by", "but", "like", "this", "that", "more",
        "less", "some", "is", "it", "its", "be", "same", "please", "make", "made", "one", "ones",
    }
)


@dataclass(frozen=True)
class SoftMatch:
    """The catalog values a query named, by field, and the query words that named them."""

    values: dict[str, list[str]] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # the query's other words (fillers left out)

    def __bool__(self) -> bool:
        return bool(self.values)

    def satisfied(self, metadata: Mapping) -> float:
        """The share of the named fields whose value this product has (0 to 1)."""
        if not self.values:
            return 0.0
        return sum(1 for name, values in self.values.items() if metadata.get(name) in values) / len(self.values)

    def to_dict(self) -> dict:
        return {"fields": {name: list(values) for name, values in self.values.items()}, "words": list(self.words)}


class FieldVocabulary:
    """Every value of the catalog's fields, keyed by its folded words, to spot in a query (longest phrase first)."""

    def __init__(self, field_values: Mapping[str, Iterable[str]]):
        self.phrases: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for name, values in field_values.items():
            if name.startswith(PREDICTED_PREFIX):
                continue
            for value in values:
                key = tuple(stem(w) for w in words(value))
                if not key or all(part.isdigit() for part in key):  # years, sizes: not something a shopper types alone
                    continue
                self.phrases.setdefault(key, []).append((name, value))
        self.longest = max((len(k) for k in self.phrases), default=0)

    def match(self, text: str | None) -> SoftMatch:
        typed = words(text or "")
        folded = [stem(w) for w in typed]
        values: dict[str, list[str]] = {}
        named: list[str] = []
        unmatched: list[str] = []
        i = 0
        while i < len(folded):
            for size in range(min(self.longest, len(folded) - i), 0, -1):
                found = self.phrases.get(tuple(folded[i : i + size]))
                if found:
                    for name, value in found:
                        if value not in values.setdefault(name, []):
                            values[name].append(value)
                    named.append(" ".join(typed[i : i + size]))
                    i += size
                    break
            else:
                if folded[i] not in FILLER:
                    unmatched.append(typed[i])
                i += 1
        return SoftMatch(values, named, unmatched)
