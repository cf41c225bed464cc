"""One way to build a tagger from names: the model, the vocabulary spec and the region views, as `vitrine tag` and
`vitrine.Tagger` take them. Light to import (the CLI imports it for `--help`): torch loads when a tagger is built."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from vitrine.tagging.vocabulary import Vocabulary, builtin_vocabulary, load_vocabulary, vocabulary_from_dict

if TYPE_CHECKING:
    from vitrine.tagging.tagger import Tagger

VocabularySpec = str | Mapping | Vocabulary | None


def resolve_vocabulary(
    spec: VocabularySpec, data: str | None = None, schema=None, model: str | None = None
) -> Vocabulary:
    """A vocabulary file, a comma list of catalog columns (values read from `data`), or the shipped KAGL vocabulary
    (calibrated for `model` when that shipped model carries its own); a `Vocabulary` or its dict form as it is."""
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, Mapping):
        return vocabulary_from_dict(spec)
    if spec and (Path(spec).suffix.lower() in (".json", ".yaml", ".yml") or Path(spec).exists()):
        return load_vocabulary(spec)
    if spec:
        names = [name.strip() for name in spec.split(",") if name.strip()]
        if data is None:
            return builtin_vocabulary(model=model).select(names)
        from vitrine.tagging.evaluate import catalog_vocabulary

        return catalog_vocabulary(data, names, schema=schema)
    return builtin_vocabulary(model=model)


def create_tagger(
    model: str | None = None, vocabulary: VocabularySpec = None, regions: str = "foreground", pooling: str = "blend",
    annotations: str | None = None, segmenter: str | None = None, runtime: str = "torch", fallback: bool = False,
) -> "Tagger":
    """A Tagger over registry model `model` (default: the shipped tagging model); `vocabulary` as `resolve_vocabulary`
    reads it, `regions` a view preset (or `annotations` / `segmenter`, see `make_views`)."""
    from vitrine.models import DEFAULT_TAG_MODEL, create_model
    from vitrine.tagging.tagger import Tagger
    from vitrine.tagging.views import make_views

    model = model or DEFAULT_TAG_MODEL
    resolved = resolve_vocabulary(vocabulary, model=model)  # before the model loads: a bad file fails fast
    return Tagger(
        create_model(model, runtime=runtime, fallback=fallback), resolved, make_views(regions, annotations, segmenter),
        pooling,
    )
