"""The training pool: every product decoded once into memory, with its split and caption candidates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from vitrine.data.catalog import open_catalog
from vitrine.data.prompts import PromptSet
from vitrine.data.roles import column_roles, prompts_for
from vitrine.data.transforms import ImageTransform
from vitrine.train.config import TrainConfig


@dataclass
class TrainPool:
    """Images as uint8 (N, 3, S, S) after the model's eval geometry; captions as ids into `strings`."""

    images: torch.Tensor
    ids: list[str]
    titles: list[str | None]
    attributes: list[dict]
    splits: np.ndarray  # "train" | "val" | "unseen"
    source: np.ndarray  # index into config.sources
    captions: np.ndarray  # (N, T) caption-string ids, -1 padded; column 0 is the title or -1
    strings: list[str]
    skipped: int
    facets: tuple[
        str, ...
    ] = ()  # the catalogs' categorical columns (validation fields, seen classes), first source first
    roles: dict = field(
        default_factory=dict
    )  # {role: column} of the first source (vitrine.data.roles): type, colour, ...
    prompts: PromptSet | None = None  # the first source's class prompts (validation)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def _uint8(image, transform: ImageTransform) -> np.ndarray:
    return np.asarray(transform.geometry(image), dtype=np.uint8).transpose(2, 0, 1)


def load_pool(config: TrainConfig, transform: ImageTransform, progress: bool = True) -> TrainPool:
    """Read every source once; bad rows are skipped and counted (training must not stop on one bad JPEG)."""
    images, ids, titles, attributes, splits, source_of, candidates = [], [], [], [], [], [], []
    strings: dict[str, int] = {}
    skipped = 0
    facets: dict[str, None] = {}
    roles, first_prompts = {}, None

    def intern(text: str) -> int:
        return strings.setdefault(text, len(strings))

    for index, source in enumerate(config.sources):
        reader = open_catalog(source.path, schema=source.schema, on_error="skip", require_title=False)
        prompts = prompts_for(source.prompts, reader.schema)
        facets.update(dict.fromkeys(reader.schema.facet_fields))
        if index == 0:
            roles, first_prompts = column_roles(reader.schema), prompts
        total = reader.count() if progress else None
        for item in tqdm(reader, total=total, desc=f"load {source.path}", unit="img", disable=not progress):
            if config.max_items is not None and len(ids) >= config.max_items:
                break
            cands = [intern(item.title) if item.title and config.captions.use_titles else -1]
            if config.captions.use_templates:
                cands += [intern(text) for text in prompts.render_captions(item.attributes)]
            if max(cands) < 0:
                skipped += 1
                continue
            images.append(_uint8(item.image, transform))
            ids.append(item.id)
            titles.append(item.title)
            attributes.append(dict(item.attributes))
            splits.append(config.split.assign(item.id, item.attributes))
            source_of.append(index)
            candidates.append(cands)
        skipped += reader.report.skipped
    width = max(len(c) for c in candidates)
    table = np.full((len(candidates), width), -1, dtype=np.int64)
    for row, cands in enumerate(candidates):
        table[row, : len(cands)] = cands
    return TrainPool(
        images=torch.from_numpy(np.stack(images)), ids=ids, titles=titles, attributes=attributes,
        splits=np.asarray(splits), source=np.asarray(source_of), captions=table, strings=list(strings), skipped=skipped,
        facets=tuple(facets), roles=roles, prompts=first_prompts,
    )


def epoch_order(pool: TrainPool, config: TrainConfig, epoch: int) -> np.ndarray:
    """Training indices for one epoch: each source repeated by its weight, shuffled with (seed, epoch)."""
    rng = np.random.default_rng([config.seed, epoch])
    train = pool.indices("train")
    parts = []
    for index, source in enumerate(config.sources):
        members = train[pool.source[train] == index]
        whole, fraction = divmod(source.weight, 1.0)
        parts += [members] * int(whole)
        if fraction > 0:
            parts.append(rng.choice(members, size=int(round(fraction * len(members))), replace=False))
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return rng.permutation(order)


def sample_captions(
    pool: TrainPool, indices: np.ndarray, config: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """One caption id per image: the title with probability title_prob, else a uniformly drawn template."""
    table = torch.from_numpy(pool.captions[indices])
    n = len(indices)
    has_title = table[:, 0] >= 0
    templates = table[:, 1:]
    n_templates = (templates >= 0).sum(1)
    pick = (
        (torch.rand(n, generator=generator) * n_templates.clamp(min=1)).long().clamp(max=max(templates.shape[1] - 1, 0))
    )
    template_choice = templates[torch.arange(n), pick] if templates.shape[1] else torch.full((n,), -1)
    use_title = has_title & ((torch.rand(n, generator=generator) < config.captions.title_prob) | (n_templates == 0))
    return torch.where(use_title, table[:, 0], template_choice)
