"""The query engine: text or image queries against an index, with attribute filters."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from PIL import Image

from vitrine.data.images import load_image
from vitrine.data.text import is_unicode
from vitrine.index.store import SearchHit
from vitrine.index.stores import open_store
from vitrine.models import create_model
from vitrine.ranking import Ranker, RankOptions

Filters = Mapping[str, str | Sequence[str]]
ImageQuery = str | os.PathLike | Image.Image  # a file, or an image already decoded


class SearchEngine:
    """An index plus the model that built it (another model is refused)."""

    def __init__(self, index: str, model: str | None = None, runtime: str = "torch", fallback: bool = False):
        from vitrine.index.runtime import check_query_runtime

        self.store = open_store(index, model=model)
        self.model = create_model(self.store.model, runtime=runtime, fallback=fallback)
        self.fallback = fallback
        check_query_runtime(self.store, self.model)
        self.ranker = Ranker(self.store)
        self._composers: dict = {}

    def text(self, query: str, k: int = 10, filters: Filters | None = None, options: RankOptions = RankOptions()) -> list[SearchHit]:
        """Ranked by `options` (default: hybrid, query words as soft filters)."""
        if not query.strip():
            raise ValueError("the text query is empty")
        filters = self._checked(filters)
        with torch.inference_mode():
            vector = self.model.encode_text([query]).numpy()
        return self.ranker.rank(vector, query, k, filters, options).hits

    def image(self, path: ImageQuery, k: int = 10, filters: Filters | None = None, options: RankOptions = RankOptions()) -> list[SearchHit]:
        filters = self._checked(filters)
        return self.ranker.rank(self._image_vector(path).numpy(), None, k, filters, options).hits

    def composed(self, path: ImageQuery, modification: str, k: int = 10, filters: Filters | None = None,
                 combiner: str = "combiner", options: RankOptions = RankOptions()) -> list[SearchHit]:
        """"Like this image, but <modification>": the combiner turns both into one query (CLIP4Cir)."""
        if not modification.strip():
            raise ValueError("the modification text is empty")
        filters = self._checked(filters)
        if combiner not in self._composers:
            from vitrine.cir.compose import composer_for

            # AGCN reads tokens, which the ONNX runtimes lack: with the default runtime it runs on torch
            self._composers[combiner] = composer_for(self.model, combiner, self.fallback, lambda: create_model(self.store.model))
        composer = self._composers[combiner]
        features = self._image_features(path, composer.model)
        query = composer.queries(features.embeds, [modification.strip()], features.tokens if composer.needs_tokens else None)
        return self.ranker.rank(query.numpy(), None, k, filters, options, soft_text=modification.strip()).hits

    def _checked(self, filters: Filters | None) -> dict[str, list[str]]:
        """The filters as lists, refused (`FilterError`, as HTTP refuses them) when no product can match one."""
        listed = _listed(filters)
        self.ranker.check_filters(listed)
        return listed

    def _image_vector(self, path: ImageQuery) -> torch.Tensor:
        return self._image_features(path).embeds

    def _image_features(self, path: ImageQuery, model=None):
        model = model or self.model
        image = load_image(path, what="query image")
        with torch.inference_mode():
            return model.image_features(model.preprocess([image]))

    def close(self) -> None:
        self.store.close()


def _listed(filters: Filters | None) -> dict[str, list[str]]:
    return {name: [values] if isinstance(values, str) else list(values) for name, values in (filters or {}).items()}


def parse_filters(specs: Sequence[str]) -> dict[str, list[str]]:
    """`["gender=Women", "articleType=Dresses", "gender=Girls"]` -> {"gender": ["Women", "Girls"], ...}."""
    filters: dict[str, list[str]] = {}
    for spec in specs:
        field, sep, value = spec.partition("=")
        if not sep or not field.strip() or not value.strip():
            raise ValueError(f"a filter looks like field=value, got {spec!r}")
        if "\x00" in spec or not is_unicode(spec):
            # No store can match these: SQLite and Milvus take UTF-8 text, and Milvus strings end at NUL.
            raise ValueError(f"a filter must be Unicode text without NUL characters, got {spec!r}")
        filters.setdefault(field.strip(), []).append(value.strip())
    return filters
