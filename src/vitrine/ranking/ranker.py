"""One query's ranked page: candidates from the vector index and from BM25, fused, boosted by soft filters."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from vitrine.constants import DEFAULT_SEARCH_MODE, SEARCH_MODES
from vitrine.data.tagged import PREDICTED_PREFIX
from vitrine.data.words import stem, words
from vitrine.errors import InvalidInput
from vitrine.index.store import LexicalUnsupported, SearchHit
from vitrine.ranking.codes import FieldCodes
from vitrine.ranking.filters import check_filters
from vitrine.ranking.fusion import normalised, reciprocal_rank, weighted
from vitrine.ranking.relevance import Calibration, Evidence, judge
from vitrine.ranking.soft import FieldVocabulary, SoftMatch

FUSIONS = ("rrf", "weighted")
Filters = Mapping[str, Sequence[str]]
ALL_VALUES = 1_000_000  # field_values' per-field cap when every value is wanted


@dataclass(frozen=True)
class RankOptions:
    """How to rank; the defaults are the measured best (README, "Ranking")."""

    mode: str = DEFAULT_SEARCH_MODE
    soft_filters: bool = True
    # weighted min-max fusion with a soft weight of 2 measured best of rrf/weighted x soft weight 0.25/0.5/1/2 x vector
    # weight 0.3/0.5/0.7 on 2,314 shopper queries (README, "Ranking")
    fusion: str = "weighted"
    vector_weight: float = 0.5  # the vector list's share in the fusion (the lexical list has the rest)
    soft_weight: float = 2.0  # a product that has every named value gains this much on the fused score's 0-1 scale
    pool: int = 100  # candidates taken from each list
    min_score: float | None = None  # hits whose cosine to the query is lower are left out
    offset: int = 0
    exclude: tuple[str, ...] = ()  # product ids never returned (the reference of a "more like this")
    # a composed query's reference: products sharing its values in the fields the change did not name gain up to this
    # much ("like this, but in black" keeps the type); 1 measured best of 0 / 0.5 / 1 (README, "Ranking"), and below
    # soft_weight, so the change still wins
    reference_weight: float = 1.0
    reference_fields: tuple[str, ...] = ("articleType", "gender", "baseColour")

    def __post_init__(self):
        if self.mode not in SEARCH_MODES:
            raise InvalidInput(f"mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")
        if self.fusion not in FUSIONS:
            raise InvalidInput(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {self.offset}")
        if not 0.0 <= self.vector_weight <= 1.0:
            raise InvalidInput(f"vector_weight must be between 0 and 1, got {self.vector_weight}")


@dataclass
class Ranked:
    hits: list[SearchHit]  # the page asked for (offset, k)
    total: int  # candidates ranked (after filters, exclusions and min_score)
    matched: SoftMatch = field(default_factory=SoftMatch)
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # value counts over every ranked candidate
    relevance: dict = field(default_factory=dict)
    mode: str = "vector"  # the mode that ran (hybrid falls back to vector on a store without BM25)
    excluded: tuple[str, ...] = ()  # the ids left out (the query image's own product)


class Ranker:
    """Ranks queries against one store; the catalog's field values (for soft filters) are reread when it changes."""

    def __init__(self, store):
        self.store = store
        self._values: tuple[int, dict[str, list[tuple[str, int]]], FieldVocabulary, set[str]] | None = None
        self._coded: FieldCodes | None = None

    def _catalog(self) -> tuple[int, dict[str, list[tuple[str, int]]], FieldVocabulary, set[str]]:
        generation = self.store.generation
        if self._values is None or self._values[0] != generation:
            values = self.store.field_values(per_field=ALL_VALUES)
            self._values = (
                generation,
                values,
                FieldVocabulary({name: [v for v, _ in rows] for name, rows in values.items()}),
                set(self.store.fields()),
            )
        return self._values

    def _codes(self) -> FieldCodes:
        """The candidates' coded values for this generation; facets count every catalog field but the id, the title
        and predicted tags."""
        generation, _, _, fields = self._catalog()
        if self._coded is None or self._coded.generation != generation:
            self._coded = FieldCodes(
                generation, [n for n in fields if n not in ("id", "title") and not n.startswith(PREDICTED_PREFIX)]
            )
        return self._coded

    def catalog_values(self) -> dict[str, list[tuple[str, int]]]:
        """Every value of every field with its product count, commonest first (reread when the store changes)."""
        return self._catalog()[1]

    def vocabulary(self) -> FieldVocabulary:
        return self._catalog()[2]

    def check_filters(self, filters: Filters | None, listing: str | None = None) -> None:
        """Raise `FilterError` for a filter no product can match (an unknown field, a value no product has)."""
        if filters:
            _, values, _, fields = self._catalog()
            check_filters(filters, fields, values, listing)

    def rank(
        self, vector: np.ndarray | None, text: str | None, k: int, filters: Filters | None = None,
        options: RankOptions = RankOptions(), calibration: Calibration | None = None, soft_text: str | None = None,
        reference: Mapping | None = None,
    ) -> Ranked:
        """The page of `k` hits for a query given as a vector (text, image or composed), its words, or both.

        `text` is searched lexically and read for soft filters; `soft_text` (a composed query's modification) is
        read for soft filters only.
        """
        if vector is None and not (text or "").strip():
            raise InvalidInput("a query needs a vector or words")
        filters = dict(filters or {})
        wordless = vector is not None and not (text or "").strip()
        image = wordless and soft_text is None  # judged against images
        if wordless and soft_text is not None:  # composed: no scale says what a changed image scores
            calibration = None
        depth = max(options.pool, options.offset + k + len(options.exclude))
        mode = options.mode if vector is not None else "lexical"
        terms = _terms(text) if mode != "vector" else []
        soft_text = text if soft_text is None else soft_text
        matched = self.vocabulary().match(soft_text) if options.soft_filters and soft_text else SoftMatch()

        vector_lists, lexical_lists = [], []
        if mode != "lexical":
            vector_lists.append(self.store.search(vector, depth, filters)[0])
        if terms:
            try:
                lexical_lists.append(self.store.lexical(terms, depth, filters, vector))
            except LexicalUnsupported:
                if mode == "lexical":
                    raise
                mode, terms = "vector", []  # hybrid on a store without BM25: the vector side alone, said in `mode`
        narrowed = _narrowed(filters, matched.values) if matched else None
        if narrowed is not None and mode != "lexical":  # the products that have every named value, as candidates too
            vector_lists.append(self.store.search(vector, depth, narrowed)[0])
        elif narrowed is not None and terms:
            lexical_lists.append(self.store.lexical(terms, depth, narrowed, vector))

        candidates: dict[str, SearchHit] = {}
        for hits in vector_lists + lexical_lists:
            for hit in hits:
                known = candidates.get(hit.id)
                if known is None or (known.similarity is None and hit.similarity is not None):
                    candidates[hit.id] = hit
        for item in options.exclude:
            candidates.pop(item, None)
        if options.min_score is not None:
            candidates = {
                i: h for i, h in candidates.items() if h.similarity is not None and h.similarity >= options.min_score
            }

        vector_scores = _best_scores(vector_lists)
        lexical_scores = _best_scores(lexical_lists)
        if mode == "lexical":
            base = lexical_scores
        elif mode == "vector" or not lexical_lists:  # an image query has no words: hybrid is its vector ranking
            base = vector_scores
        elif options.fusion == "rrf":
            base = reciprocal_rank(
                [_order(vector_scores), _order(lexical_scores)], [options.vector_weight, 1 - options.vector_weight]
            )
        else:
            base = weighted([vector_scores, lexical_scores], [options.vector_weight, 1 - options.vector_weight])
        kept = SoftMatch()
        if (
            reference and options.soft_filters and options.reference_weight > 0
        ):  # the reference's values the change left alone
            kept = SoftMatch(
                {
                    name: [reference[name]]
                    for name in options.reference_fields
                    if reference.get(name) is not None and name not in matched.values
                }
            )
        boosted = (matched and options.soft_weight > 0) or bool(kept)
        if boosted or (
            mode == "hybrid" and lexical_lists
        ):  # fused scores on one 0-1 scale, so the boost means the same in every mode
            base = normalised(base)
        codes = self._codes()
        hits = list(candidates.values())
        rows = codes.rows(hits)
        satisfied = codes.share(rows, matched.values)  # each candidate's share of the named values
        score = (
            np.fromiter((base.get(hit.id, 0.0) for hit in hits), np.float64, len(hits))
            + options.soft_weight * satisfied
        )
        if kept:
            score += options.reference_weight * codes.share(rows, kept.values)
        similarity = np.fromiter(
            (-2.0 if hit.similarity is None else hit.similarity for hit in hits), np.float64, len(hits)
        )
        # by score, then similarity, then id
        order = np.lexsort((np.array([hit.id for hit in hits]), -similarity, -score)) if hits else np.zeros(0, np.int64)
        page = [replace(hits[i], score=float(score[i])) for i in order[options.offset : options.offset + k].tolist()]

        top = max((h.similarity for h in vector_lists[0]), default=None) if vector_lists and vector_lists[0] else None
        shopper = calibration is not None and calibration.method == "shopper"
        named_all = _named_all(matched, codes, rows, satisfied, set(filters) if shopper else set())
        evidence = Evidence(
            top,
            named_all,
            shopper and _catalog_words(matched, calibration),
            image,
            calibration.text_similarity(vector) if shopper and image else None,
        )
        return Ranked(
            page, len(hits), matched, codes.counts(rows), judge(calibration, evidence), mode, tuple(options.exclude)
        )


def _named_all(
    matched: SoftMatch, codes: FieldCodes, rows: np.ndarray, satisfied: np.ndarray, filtered: Collection[str]
) -> bool:
    """Every word named a catalog value and some candidate has them all. A value of a hard-filtered field is the
    filter's to decide ("red t-shirt for men" under the Women chip still names what the chip's products have)."""
    if not matched or matched.unmatched:
        return False
    wanted = {name: values for name, values in matched.values.items() if name not in filtered}
    if not wanted:
        return bool(len(rows))
    shares = satisfied if len(wanted) == len(matched.values) else codes.share(rows, wanted)
    return bool((shares == 1.0).any())


def _catalog_words(matched: SoftMatch, calibration: Calibration) -> bool:
    """A word named what the product is (a value of a kind field) and the other words are words of the catalog's
    titles and values ("puma tshirt for men": Tshirts a type, Puma in titles; "nike running shoes": Shoes a
    subcategory): set lookups. A colour or gender alone cannot vouch ("black heel": "heel" is in some sandal's
    title)."""
    kind = any(name in calibration.kind_fields for name in matched.values)
    return kind and all(stem(word) in calibration.words for word in matched.unmatched)


def _terms(text: str | None) -> list[str]:
    """The words a lexical search looks for: as typed and folded ("T-shirts": "t-shirts", "tshirt")."""
    out: list[str] = []
    for word in words(text or ""):
        for form in (word.lower(), stem(word)):
            if form and form not in out:
                out.append(form)
    return out


def _narrowed(filters: Filters, named: Mapping[str, Sequence[str]]) -> dict[str, list[str]] | None:
    """The hard filters with the named values added (None when a named field's values exclude all the filter's)."""
    out = {name: list(values) for name, values in filters.items()}
    for name, values in named.items():
        if name in out:
            kept = [v for v in out[name] if v in values]
            if not kept:
                return None
            out[name] = kept
        else:
            out[name] = list(values)
    return out


def _best_scores(lists: Sequence[Sequence[SearchHit]]) -> dict[str, float]:
    """id -> its best score over lists of the same kind (a narrowed search scores a product as the wide one does)."""
    scores: dict[str, float] = {}
    for hits in lists:
        for hit in hits:
            scores[hit.id] = max(scores.get(hit.id, hit.score), hit.score)
    return scores


def _order(scores: Mapping[str, float]) -> list[str]:
    return sorted(scores, key=lambda item: (-scores[item], item))
