"""Product metadata with predicted tags merged in: how an index stores a tagger's answers beside the catalog's."""

from __future__ import annotations

from collections.abc import Mapping

PREDICTED_PREFIX = "predicted_"  # predicted_<attribute>: the tagger's answer, always stored
PREDICTED_FIELDS = "predicted_fields"  # the attributes a prediction filled in because the catalog lacked them


def with_tags(metadata: Mapping[str, str | None], tags: Mapping) -> dict:
    """Metadata plus predicted tags: `predicted_<attr>` for every confident tag, and `<attr>` itself where the
    catalog had no value, so that filters on an attribute also find products that lacked it."""
    out = dict(metadata)
    filled = []
    for name, tag in tags.items():
        if tag.value == tag.best:  # not 'unknown'
            out[PREDICTED_PREFIX + name] = tag.value
            if out.get(name) is None:
                out[name] = tag.value
                filled.append(name)
    if filled:
        out[PREDICTED_FIELDS] = ",".join(filled)
    return out
