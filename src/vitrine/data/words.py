"""Words of shopper queries and catalog values, compared the same way on both sides (lower case, plural folded)."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*", re.UNICODE)
# Words a shopper types for a catalog value that no plural rule reaches (both sides are folded through this).
SYNONYMS = {
    "woman": "women", "womens": "women", "ladies": "women", "lady": "women", "female": "women", "man": "men",
    "mens": "men", "male": "men", "gents": "men", "boy": "boys", "girl": "girls", "kid": "kids", "grey": "gray",
    "tee": "tshirt", "tees": "tshirt",
}
# Words whose last "s" is not a plural, or whose plural is how a shopper names one item.
_KEEP = {
    "jeans", "shorts", "trousers", "leggings", "glasses", "sunglasses", "boys", "girls", "kids", "pants", "capris",
    "jeggings", "tights", "briefs", "boxers", "trunks",
}


def stem(word: str) -> str:
    """A word's folded form: "Dresses" -> "dress", "T-shirts" -> "tshirt", "women's" -> "women"."""
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("-", "").replace("'", "")
    word = SYNONYMS.get(word, word)
    if word in _KEEP or len(word) <= 3:
        return word
    if word.endswith("sses") or word.endswith("shes") or word.endswith("ches") or word.endswith("xes"):
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """The words of `text` as typed (hyphenated and possessive words kept whole), in order."""
    return _WORD.findall(text or "")


def stems(text: str) -> list[str]:
    return [stem(w) for w in words(text)]
