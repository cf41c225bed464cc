"""Ranking a shopper's query: vector and lexical (BM25) candidates fused, query words as soft filters, and a
judgement of whether anything in the catalog is a close match. Works on any `VectorStore`."""

from vitrine.constants import SEARCH_MODES as MODES  # the name vitrine.ranking has always exported
from vitrine.ranking.filters import FilterError
from vitrine.ranking.ranker import Ranked, Ranker, RankOptions
from vitrine.ranking.relevance import Calibration
from vitrine.ranking.soft import FieldVocabulary, SoftMatch

__all__ = ["MODES", "Calibration", "FieldVocabulary", "FilterError", "Ranked", "RankOptions", "Ranker", "SoftMatch"]
