"""Open-vocabulary tagging: each attribute's values are prompts, scored against an image's region views."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from vitrine.embed.encode import encode_texts
from vitrine.tagging.views import DEFAULT_REGION_WEIGHT, RegionViews, encode_views, pool_scores
from vitrine.tagging.vocabulary import Attribute, Vocabulary

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Tag:
    attribute: str
    value: str  # the best value, or 'unknown' when its probability is below the attribute's threshold
    best: str  # the best value even when the answer is 'unknown'
    score: float  # cosine similarity of the best value (pooled over regions)
    probability: float  # softmax over the attribute's values at its temperature

    def to_dict(self) -> dict:
        return {"value": self.value, "best": self.best, "score": round(self.score, 4), "probability": round(self.probability, 4)}


def value_embeddings(model, attribute: Attribute) -> torch.Tensor:
    """(C, D): each value's prompt ensemble, averaged and renormalised."""
    flat = [prompt for value in attribute.values for prompt in value.prompts]
    embeds = encode_texts(model, flat)
    out, start = [], 0
    for value in attribute.values:
        out.append(F.normalize(embeds[start : start + len(value.prompts)].mean(0), dim=-1))
        start += len(value.prompts)
    return torch.stack(out)


class Tagger:
    """Tags images with every attribute of a vocabulary; region scores are pooled per value."""

    def __init__(self, model, vocabulary: Vocabulary, views: RegionViews | None = None, pooling: str = "blend"):
        self.model, self.vocabulary = model.eval(), vocabulary
        self.views = views or RegionViews.preset("whole")
        self.pooling = pooling if self.views.count > 1 else "whole"
        pool_scores(torch.zeros(1, 1, 1), self.pooling)  # reject an unknown pooling now, not mid-catalog
        self.value_embeds = {a.name: value_embeddings(model, a) for a in vocabulary.attributes}

    def tags(self, view_embeds: torch.Tensor) -> list[dict[str, Tag]]:
        per_attribute = {}
        for attribute in self.vocabulary.attributes:
            scores = self.scores_for(attribute.name, view_embeds)
            probabilities = torch.softmax(attribute.temperature * scores, dim=1)
            best_p, best = probabilities.max(1)
            per_attribute[attribute.name] = (attribute, scores, best_p, best)
        out = []
        for i in range(len(view_embeds)):
            item = {}
            for name, (attribute, scores, best_p, best) in per_attribute.items():
                value = attribute.values[int(best[i])].name
                p = float(best_p[i])
                item[name] = Tag(name, value if p >= attribute.threshold else UNKNOWN, value, float(scores[i, best[i]]), p)
            out.append(item)
        return out

    def scores_for(self, name: str, view_embeds: torch.Tensor) -> torch.Tensor:
        """(N, V, D) view embeddings -> (N, C) cosine scores of one attribute's values, pooled over views."""
        return self.pool(name, view_embeds @ self.value_embeds[name].T)

    def pool(self, name: str, scores: torch.Tensor, region_weight: float | None = None) -> torch.Tensor:
        """(N, V, C) -> (N, C) with this tagger's pooling and the attribute's region weight (or the one given)."""
        if region_weight is None:
            region_weight = self.vocabulary[name].region_weight
        return pool_scores(scores, self.pooling, DEFAULT_REGION_WEIGHT if region_weight is None else region_weight)

    def embed(self, images: Iterable[tuple[Image.Image, str | None]], total: int | None = None, progress: bool = False) -> torch.Tensor:
        return encode_views(self.model, images, self.views, total=total, progress=progress)

    def tag_images(self, images: list[Image.Image]) -> list[dict[str, Tag]]:
        return self.tags(self.embed([(image, None) for image in images]))


def fit_region_weight(scores: torch.Tensor, labels: torch.Tensor, pool) -> float:
    """The 'blend' region weight (0, 0.1, ..., 1) with the best top-1 on labelled (N, V, C) view scores; ties favour the whole image."""
    best, best_accuracy = 0.0, -1.0
    for step in range(11):
        weight = step / 10
        accuracy = float((pool(scores, weight).argmax(1) == labels).float().mean())
        if accuracy > best_accuracy + 1e-9:
            best, best_accuracy = weight, accuracy
    return best


def fit_temperature(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature that minimises the negative log-likelihood of the true values (a 1-D grid search)."""
    grid = torch.logspace(0, 2.7, 55)
    losses = torch.stack([F.cross_entropy(t * scores, labels) for t in grid])
    return round(float(grid[int(losses.argmin())]), 3)
