"""Open-vocabulary tagging: each attribute's values are prompts, scored against an image's region views."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from vitrine.data.images import load_image
from vitrine.embed.text_cache import encoder_text_embeddings
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
        return {
            "value": self.value, "best": self.best, "score": round(self.score, 4),
            "probability": round(self.probability, 4),
        }


def value_embeddings(model, attribute: Attribute) -> torch.Tensor:
    """(C, D): each value's prompt ensemble, averaged and renormalised."""
    flat = [prompt for value in attribute.values for prompt in value.prompts]
    embeds = encoder_text_embeddings(model, flat)  # an ONNX export's are read back from its cache
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

    def probabilities(self, view_embeds: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per attribute, (N, C) pooled cosine scores and (N, C) probabilities over its values.

        A derived attribute sums the probabilities of its source's mapped values into their parents; the mass of
        unmapped source values (ones added after the hierarchy was fitted) follows the attribute's own prompts."""
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for attribute in self.vocabulary.ordered():
            scores = self.scores_for(attribute.name, view_embeds)
            probabilities = torch.softmax(attribute.temperature * scores, dim=1)
            if attribute.derive is not None:
                source = self.vocabulary[attribute.derive.source]
                mapping = derivation_matrix(source.value_names, attribute.value_names, attribute.derive.parents)
                source_p = out[source.name][1]
                unmapped = source_p[:, mapping.sum(1) == 0].sum(1, keepdim=True)
                probabilities = source_p @ mapping + unmapped * probabilities
            out[attribute.name] = (scores, probabilities)
        return out

    def tags(self, view_embeds: torch.Tensor) -> list[dict[str, Tag]]:
        per_attribute = {}
        computed = self.probabilities(view_embeds)
        for attribute in self.vocabulary.attributes:
            scores, probabilities = computed[attribute.name]
            best_p, best = probabilities.max(1)
            per_attribute[attribute.name] = (attribute, scores, best_p, best)
        out = []
        for i in range(len(view_embeds)):
            item = {}
            for name, (attribute, scores, best_p, best) in per_attribute.items():
                value = attribute.values[int(best[i])].name
                p = float(best_p[i])
                item[name] = Tag(
                    name, value if p >= attribute.threshold else UNKNOWN, value, float(scores[i, best[i]]), p
                )
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

    def embed(
        self, images: Iterable[tuple[Image.Image, str | None]], total: int | None = None, progress: bool = False
    ) -> torch.Tensor:
        return encode_views(self.model, images, self.views, total=total, progress=progress)

    def tag_images(self, images: Sequence[Image.Image | str | os.PathLike]) -> list[dict[str, Tag]]:
        """Tags per image; an image file is read when its turn comes and keyed by its stem (what annotations name)."""
        return self.tags(self.embed((_keyed(image) for image in images), total=len(images)))


def _keyed(image: Image.Image | str | os.PathLike) -> tuple[Image.Image, str | None]:
    return load_image(image), None if isinstance(image, Image.Image) else Path(image).stem


def derivation_matrix(source_values: list[str], values: list[str], parents) -> torch.Tensor:
    """(S, C) 0/1: row s has a 1 at the value its source value maps to (an all-zero row when unmapped)."""
    column = {name: c for c, name in enumerate(values)}
    matrix = torch.zeros(len(source_values), len(values))
    for row, name in enumerate(source_values):
        if parents.get(name) in column:
            matrix[row, column[parents[name]]] = 1.0
    return matrix


def fit_hierarchy(
    rows: Iterable[dict], vocabulary: Vocabulary, min_purity: float = 0.98, min_items: int = 50
) -> dict[str, dict]:
    """{attribute: {"derive": {...}}} for each coarse attribute that a finer one determines in labelled rows.

    The finer attribute (the one with the most values, itself not derived) must give the coarse value with at least
    `min_purity` of the co-labelled rows; each of its values maps to its most frequent coarse value."""
    from collections import Counter, defaultdict

    rows = list(rows)
    names = vocabulary.names
    counts: dict[tuple[str, str], dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for row in rows:
        labelled = [n for n in names if row.get(n) is not None]
        for fine in labelled:
            for coarse in labelled:
                if fine != coarse:
                    counts[fine, coarse][row[fine]][row[coarse]] += 1
    sizes = {a.name: len(a.values) for a in vocabulary.attributes}
    fitted = {}
    for coarse in sorted(names, key=lambda n: -sizes[n]):
        values = set(vocabulary[coarse].value_names)
        for fine in sorted((n for n in names if sizes[n] > sizes[coarse] and n not in fitted), key=lambda n: -sizes[n]):
            table = counts.get((fine, coarse), {})
            total = sum(sum(c.values()) for c in table.values())
            if total < min_items or sum(max(c.values()) for c in table.values()) / total < min_purity:
                continue
            parents = {child: c.most_common(1)[0][0] for child, c in table.items() if c.most_common(1)[0][0] in values}
            fitted[coarse] = {"derive": {"from": fine, "map": parents}}
            break
    return fitted


def fit_threshold(
    best_probability: torch.Tensor, correct: torch.Tensor, precision: float = 0.9, min_coverage: float = 0.5
) -> float:
    """The lowest 'unknown' threshold whose answered tags reach `precision`; when none does while answering at least
    `min_coverage` of the items, the threshold that answers that share (the most precise such)."""
    order = torch.argsort(best_probability, descending=True)
    hits = torch.cumsum(correct[order].float(), 0)
    answered = torch.arange(1, len(order) + 1, dtype=torch.float32)
    precise = torch.nonzero(hits / answered >= precision).flatten()
    floor = max(1, int(round(min_coverage * len(order))))
    count = int(precise.max()) + 1 if len(precise) and int(precise.max()) + 1 >= floor else floor
    return round(float(best_probability[order[count - 1]]) - 1e-6, 6) if count < len(order) else 0.0


def fit_region_weight(scores: torch.Tensor, labels: torch.Tensor, pool) -> float:
    """The 'blend' region weight (0, 0.1, ..., 1) with the best top-1 on labelled (N, V, C) view scores; ties favour the
    whole image."""
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
