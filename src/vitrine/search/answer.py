"""A ranked query as every surface shows it (the HTTP response, `vitrine search --json`): one shape, built here."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vitrine.data.tagged import PREDICTED_FIELDS, PREDICTED_PREFIX
from vitrine.index.store import SearchHit
from vitrine.ranking import Ranked
from vitrine.search.query import Query


def product_view(metadata: Mapping) -> dict:
    """A stored row as the API shows it: catalog attributes and predicted tags apart."""
    attributes, tags = {}, {}
    for key, value in metadata.items():
        if key in ("id", "title", PREDICTED_FIELDS):
            continue
        if key.startswith(PREDICTED_PREFIX):
            tags[key[len(PREDICTED_PREFIX) :]] = value
        else:
            attributes[key] = value
    filled = [name for name in (metadata.get(PREDICTED_FIELDS) or "").split(",") if name]
    for name in filled:  # a value the tagger filled in is a tag, not a catalog attribute
        attributes.pop(name, None)
    return {"id": metadata["id"], "title": metadata.get("title"), "attributes": attributes, "tags": tags}


def hit_view(rank: int, hit: SearchHit, extra: Callable[[str], dict] | None = None) -> dict:
    similarity = None if hit.similarity is None else round(hit.similarity, 4)
    view = {"rank": rank, "score": round(hit.score, 4), "similarity": similarity, **product_view(hit.metadata)}
    return {**view, **extra(hit.id)} if extra else view


def answer(
    query: Query, ranked: Ranked, took_ms: float | None = None, extra: Callable[[str], dict] | None = None
) -> dict:
    """The query as understood, the relevance judgement, the facets and the page of results; `extra(id)` adds
    fields to each result (the service's image_url)."""
    echo = {
        "kind": query.kind,
        "text": query.text,
        "modification": query.modification,
        "k": query.k,
        "filters": dict(query.filters),
        "mode": ranked.mode,
        "offset": query.offset,
        "soft_filters": ranked.matched.to_dict() if query.soft_filters else None,
        "excluded": list(ranked.excluded),
    }
    facets = {name: [{"value": v, "count": n} for v, n in rows] for name, rows in ranked.facets.items()}
    return {
        "query": echo,
        "took_ms": took_ms,
        "total": ranked.total,
        "relevance": ranked.relevance or None,
        "facets": facets,
        "results": [hit_view(rank, hit, extra) for rank, hit in enumerate(ranked.hits, query.offset + 1)],
    }
