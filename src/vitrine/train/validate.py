"""The per-epoch validation pass: zero-shot tagging on seen and unseen types, and title -> image retrieval."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vitrine.data.prompts import PromptSet
from vitrine.data.transforms import to_input
from vitrine.errors import InvalidInput
from vitrine.evaluate.metrics import mean_reciprocal_rank, recall_at_k, target_ranks, topk_accuracy
from vitrine.train.data import TrainPool


class Validator:
    """Holds the validation items and the text side that embeds their class prompts and titles.

    Zero-shot top-1 is measured on every categorical column of the catalog (`pool.facets`); the held-out field
    (`holdout_field`, e.g. a type column) also on its unseen and calib values."""

    def __init__(
        self, model, pool: TrainPool, prompts: PromptSet | None, texts, max_items: int, seed: int,
        pooled_images: torch.Tensor | None = None, flipped_images: torch.Tensor | None = None,
        holdout_field: str | None = None,
    ):
        prompts = prompts or pool.prompts or PromptSet("default")
        self.fields = tuple(pool.facets)
        # {field: values the starting model was trained on}: top-1 is then also split into known and new values
        # (`vitrine adapt` sets it from its base model's training.json)
        self.known: dict[str, set[str]] = {}
        self.holdout_field = holdout_field if holdout_field in self.fields else None
        self.pooled_images = pooled_images  # (N, W) cached tower outputs: a locked tower is then never rerun
        self.flipped_images = flipped_images  # (N, W) the same of the mirrored images (flip test-time averaging)
        rng = np.random.default_rng([seed, 12345])
        self.pool = pool
        self.groups = {}
        for split in ("val", "unseen", "calib"):
            members = pool.indices(split)
            if len(members) > max_items:
                members = np.sort(rng.choice(members, size=max_items, replace=False))
            self.groups[split] = members
        held = self.holdout_field
        self.unseen_types = (
            sorted({pool.attributes[i].get(held) for i in pool.indices("unseen")} - {None}) if held else []
        )
        self.classes, self.prompt_slices, self.prompt_strings = {}, {}, []
        strings = self.prompt_strings
        for field in self.fields:
            names = sorted({a.get(field) for a in pool.attributes} - {None})
            self.classes[field] = names
            slices = []
            for name in names:
                class_prompts = prompts.class_prompts(field, name)
                slices.append((len(strings), len(strings) + len(class_prompts)))
                strings.extend(class_prompts)
            self.prompt_slices[field] = slices
        self.texts = texts  # a text side (vitrine.train.text_side): caption rows and strings -> embeddings
        texts.embed_strings(model, strings)  # fills a cache now, not during the first validation

    @torch.inference_mode()
    def class_embeddings(self, model, field: str, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """(C, D) class embeddings of one field; `prompts` are every prompt's embeddings when already computed."""
        projected = self.texts.embed_strings(model, self.prompt_strings).float() if prompts is None else prompts
        return torch.stack([F.normalize(projected[a:b].mean(0), dim=-1) for a, b in self.prompt_slices[field]])

    @torch.inference_mode()
    def image_embeddings(self, model, indices: np.ndarray) -> torch.Tensor:
        if self.pooled_images is not None:
            rows = torch.from_numpy(np.asarray(indices, dtype=np.int64))
            embeds = F.normalize(model.image_proj(self.pooled_images[rows].float().to(model.device)), dim=-1).float()
            if model.config.image_tta == "flip":
                if self.flipped_images is None:
                    raise InvalidInput("image_tta 'flip' needs the cached 'flip' view (locked.views)")
                embeds = F.normalize(
                    embeds + F.normalize(model.image_proj(self.flipped_images[rows].float().to(model.device)), dim=-1),
                    dim=-1,
                )
            return embeds
        out = []
        for start in range(0, len(indices), 512):
            batch = to_input(self.pool.images[indices[start : start + 512]], model.image_transform).to(model.device)
            out.append(model.image_features(batch).embeds.float())
        return torch.cat(out)

    def _labels(self, field: str, indices: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        lookup = {name: c for c, name in enumerate(self.classes[field])}
        values = [self.pool.attributes[i].get(field) for i in indices]
        keep = np.array([v is not None for v in values], dtype=bool)
        return torch.tensor([lookup[v] for v in values if v is not None], dtype=torch.long), keep

    @torch.inference_mode()
    def __call__(self, model) -> dict:
        was_training = model.training
        model.eval()
        metrics = {}
        embeds = {
            split: self.image_embeddings(model, members) for split, members in self.groups.items() if len(members)
        }
        prompts = self.texts.embed_strings(model, self.prompt_strings).float()  # once for every field
        for field in self.fields:
            classes = self.class_embeddings(model, field, prompts)
            held = field == self.holdout_field
            for split in ("val", "unseen", "calib") if held else ("val",):
                if split not in embeds:
                    continue
                labels, keep = self._labels(field, self.groups[split])
                if not keep.any():
                    continue
                scores = embeds[split][torch.from_numpy(keep)] @ classes.t().float()
                suffix = {"val": "_seen", "unseen": "_unseen", "calib": "_calib"}[split] if held else ""
                name = f"{field}_top1{suffix}"
                metrics[f"val/{name}"] = topk_accuracy(scores, labels, 1)
                if split == "val" and field in self.known:
                    names = self.classes[field]
                    is_known = torch.tensor([names[int(c)] in self.known[field] for c in labels], dtype=torch.bool)
                    for part, mask in (("known", is_known), ("new", ~is_known)):
                        if mask.any():
                            metrics[f"val/{field}_top1_{part}"] = topk_accuracy(scores[mask], labels[mask], 1)
                            metrics[f"val/{field}_n_{part}"] = int(mask.sum())
                if held and split == "unseen" and self.unseen_types:
                    subset = torch.tensor([self.classes[field].index(t) for t in self.unseen_types])
                    remap = {int(c): i for i, c in enumerate(subset)}
                    metrics[f"val/{field}_top1_unseen_among_unseen"] = topk_accuracy(
                        scores[:, subset], torch.tensor([remap[int(label)] for label in labels]), 1
                    )
        for split, suffix in (("val", ""), ("unseen", "_unseen")):  # each group's titles against its own images
            members = self.groups.get(split, np.zeros(0, dtype=np.int64))
            titles = self.pool.captions[members, 0]
            has_title = titles >= 0
            if not has_title.any() or split not in embeds:
                continue
            queries = self.texts.embed_rows(model, torch.from_numpy(titles[has_title])).float()
            ranks = target_ranks(queries, embeds[split], torch.from_numpy(np.flatnonzero(has_title)))
            metrics[f"val/t2i_R@1{suffix}"] = recall_at_k(ranks, 1)
            metrics[f"val/t2i_R@10{suffix}"] = recall_at_k(ranks, 10)
            if not suffix:
                metrics["val/t2i_MRR"] = mean_reciprocal_rank(ranks)
        model.train(was_training)
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}

    @torch.inference_mode()
    def calibrate(self, model) -> dict | None:
        """Tune calibrated stacking on id-held-out items of seen types plus the 'calib' types (never the 'unseen'
        ones)."""
        from vitrine.evaluate.zeroshot import tune_calibration

        field = self.holdout_field
        if field is None or not len(self.groups.get("calib", [])) or not len(self.groups["val"]):
            return None
        was_training = model.training
        model.eval()
        members = np.concatenate([self.groups["val"], self.groups["calib"]])
        labels, keep = self._labels(field, members)
        scores = self.image_embeddings(model, members[keep]) @ self.class_embeddings(model, field).t().float()
        seen = {self.pool.attributes[i].get(field) for i in self.pool.indices("train")}
        seen_mask = torch.tensor([name in seen for name in self.classes[field]])
        model.train(was_training)
        return {"field": field, **tune_calibration(scores, labels, seen_mask)}


def validate_or_report(validator, model) -> dict:
    """`validator(model)`, or {"validation_error": "..."} when it fails: a failed validation never loses a model."""
    try:
        return validator(model)
    except Exception as exc:  # noqa: BLE001 - any failure of a validation pass is reported, not raised
        return {"validation_error": f"{type(exc).__name__}: {exc}"}
