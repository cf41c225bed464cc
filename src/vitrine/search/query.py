"""One search query, checked once, whatever surface it came from (HTTP, the CLI, the Python API, a batch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image

from vitrine.constants import SEARCH_MODES
from vitrine.data.text import is_unicode
from vitrine.errors import InvalidInput

Filters = Mapping[str, str | Sequence[str]]


TEXT_AND_IMAGE = "give text or an image, not both; to change an image query, send the change as 'modification'"


class QueryError(InvalidInput):
    """A query that cannot be run as given; the message says what to change (HTTP 400, the CLI's exit 2)."""

    code = "invalid_query"


@dataclass(frozen=True)
class Query:
    """Text, or an image with an optional modification ("like this, but in black"), plus filters and paging.

    Built from whatever a surface parsed; the checks below are the only ones every surface shares (limits such as
    the largest k a server allows are the server's own)."""

    text: str | None = None
    image: Image.Image | None = None
    modification: str | None = None
    k: int = 10
    filters: Filters = field(default_factory=dict)
    mode: str | None = None  # vector, lexical or hybrid; None: the engine's default
    soft_filters: bool = True  # query words that name a catalog value boost products with it
    reference_id: str | None = None  # the catalog product the image is, when the caller knows it (an image_url)
    exclude_reference: bool = True  # leave the product the image shows out of its own results
    min_score: float | None = None
    offset: int = 0

    def __post_init__(self):
        typed = isinstance(self.text, str)
        text, modification = _cleaned("text", self.text), _cleaned("modification", self.modification)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "modification", modification)
        object.__setattr__(self, "filters", checked_filters(self.filters))
        if self.image is not None and text:
            raise QueryError(TEXT_AND_IMAGE)
        if self.image is None and modification:
            raise QueryError("a modification changes an image query: give an image too")
        if self.image is None and not text:
            raise QueryError(
                "the text query is empty"
                if typed and modification is None
                else "give a text query, an image, or an image with a modification"
            )
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise QueryError(f"k must be a whole number of at least 1, got {self.k!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise QueryError(f"offset must be >= 0, got {self.offset!r}")
        if self.mode is not None and self.mode not in SEARCH_MODES:
            raise QueryError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")

    @property
    def kind(self) -> str:
        if self.image is None:
            return "text"
        return "composed" if self.modification else "image"


def _cleaned(name: str, text: str | None) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str) or not is_unicode(text):
        raise QueryError(f"{name} must be Unicode text")
    return text.strip() or None


def checked_filters(filters: Filters | None) -> dict[str, list[str]]:
    """field -> its values as a list; a filter with no name or no value, or one no store could match (NUL, a lone
    surrogate), is refused."""
    out: dict[str, list[str]] = {}
    for name, values in (filters or {}).items():
        values = [values] if isinstance(values, str) else list(values)
        if not all(isinstance(v, str) for v in values):
            raise QueryError(f"filters: the values of {name!r} must be text")
        cleaned = [v.strip() for v in values if v.strip()]  # blank values say nothing: left out
        if not isinstance(name, str) or not name.strip() or not cleaned:
            raise QueryError(f"filters: each field needs a name and at least one non-empty value, got {name!r}")
        for value in (name, *cleaned):
            if "\x00" in value or not is_unicode(value):
                # No store can match these: SQLite and Milvus take UTF-8 text, and Milvus strings end at NUL.
                raise QueryError(f"a filter must be Unicode text without NUL characters, got {name}={value!r}")
        out[name.strip()] = cleaned
    return out


def parse_filters(specs: Sequence[str]) -> dict[str, list[str]]:
    """`["gender=Women", "articleType=Dresses", "gender=Girls"]` -> {"gender": ["Women", "Girls"], ...}."""
    filters: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise QueryError(f"a filter looks like field=value, got {spec!r}")
        if "\x00" in spec or not is_unicode(spec):
            raise QueryError(f"a filter must be Unicode text without NUL characters, got {spec!r}")
        filters.setdefault(name.strip(), []).append(value.strip())
    return checked_filters(filters)
