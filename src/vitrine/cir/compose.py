"""Composed queries from reference image features and modification texts, with any combining function."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitrine.embed.encode import encode_texts
from vitrine.errors import InvalidInput
from vitrine.models.composed import SHIPPED_HEADS, load_combiner, load_text_projection

BASELINES = ("image", "text")  # the paper's ablation: ignore one of the two inputs


class NeedsTorch(InvalidInput):
    """The combiner reads token features, which only the torch runtime produces."""

    code = "needs_torch"


def composer_for(model, combiner: str, fallback: bool, torch_model) -> "Composer":
    """A Composer over `model`, or, when the combiner needs tokens that `model`'s runtime lacks and `fallback` allows
    it, over the torch model (`torch_model()` makes it); its `model` is the one to encode reference images with."""
    try:
        return Composer(model, combiner)
    except NeedsTorch:
        if not fallback:
            raise
        return Composer(torch_model(), combiner)
    except FileNotFoundError as exc:
        if combiner not in SHIPPED_HEADS:
            raise
        # A model with no head of its own (one `vitrine adapt` made, say): CLIP4Cir's untrained sum of the two
        # embeddings, said once, rather than a head trained on another model's features or a failed query.
        print(
            f"{exc.args[0].split(';')[0]}; composed queries use the sum of image and text embeddings", file=sys.stderr
        )
        return Composer(model, "sum")


class Composer:
    """`image`, `text`, `sum`, `combiner` (shipped) or a trained combiner directory, over one encoder."""

    def __init__(self, model, combiner: str | nn.Module = "combiner", text_projection: nn.Module | None = None):
        self.model = model
        self.spec = combiner if isinstance(combiner, str) else type(combiner).__name__
        if isinstance(combiner, str) and combiner in BASELINES:
            self.combiner = None
        elif isinstance(combiner, str):
            self.combiner = load_combiner(combiner, embed_dim=model.embed_dim, encoder=model.name)
        else:
            self.combiner = combiner
        if self.combiner is not None:
            self.combiner.eval()
        if text_projection is None and isinstance(combiner, str) and combiner not in BASELINES:
            text_projection = load_text_projection(combiner, encoder=model.name)
        self.text_projection = text_projection
        if self.needs_tokens and getattr(model, "runtime", "torch") != "torch":
            raise NeedsTorch(
                f"{self.spec} reads image and text tokens, which the {getattr(model, 'runtime', '')} runtime does not "
                f"produce; use --runtime torch for it"
            )
        if self.text_projection is not None and not (
            hasattr(model, "text_proj") or getattr(model, "has_pooled_text", False)
        ):
            raise InvalidInput(
                f"{combiner} carries a fine-tuned text projection; {model.name} has no pooled text output to apply it "
                "to"
            )

    def texts(self, modifications: Sequence[str]) -> torch.Tensor:
        unique = list(dict.fromkeys(modifications))
        if self.text_projection is None:
            embeds = encode_texts(self.model, unique)
        else:
            device = self.text_projection.weight.device
            with torch.inference_mode():
                embeds = F.normalize(self.text_projection(pooled_texts(self.model, unique).to(device)), dim=-1).cpu()
        row = {text: i for i, text in enumerate(unique)}
        return embeds[[row[t] for t in modifications]]

    @property
    def needs_tokens(self) -> bool:
        """True for combiners (AGCN) that read image and text tokens, not only embeddings."""
        return bool(getattr(self.combiner, "needs_tokens", False))

    @torch.inference_mode()
    def queries(
        self, reference: torch.Tensor, modifications: Sequence[str], reference_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, D) unit-norm queries; `reference_tokens` (B, N, W) are needed when `needs_tokens`."""
        if self.spec == "image":
            return reference
        text = self.texts(modifications)
        if self.spec == "text":
            return text
        device = next(self.combiner.parameters(), torch.empty(0)).device  # a head trained on a GPU may still be there
        reference, text = reference.to(device), text.to(device)
        if not self.needs_tokens:
            return torch.cat(
                [self.combiner(reference[s : s + 4096], text[s : s + 4096]) for s in range(0, len(text), 4096)]
            ).cpu()
        if reference_tokens is None:
            raise InvalidInput(f"{self.spec} reads image tokens; this caller only has embeddings")
        unique = list(dict.fromkeys(modifications))
        tokens, mask = text_tokens(self.model, unique)
        lookup = {t: i for i, t in enumerate(unique)}
        row = torch.tensor([lookup[t] for t in modifications])
        tokens, mask = tokens.to(device), mask.to(device)
        return torch.cat(
            [
                self.combiner(
                    reference[s : s + 1024], text[s : s + 1024], reference_tokens[s : s + 1024].float().to(device),
                    tokens[row[s : s + 1024]], mask[row[s : s + 1024]],
                )
                for s in range(0, len(text), 1024)
            ]
        ).cpu()


@torch.inference_mode()
def text_tokens(model, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text tower's tokens (U, L, W) and mask (U, L), padded to the longest text."""
    features = model.text_features_from_tokens(model.tokenize(list(texts)))
    mask = features.mask if features.mask is not None else torch.ones(features.tokens.shape[:2], dtype=torch.long)
    return features.tokens.float().cpu(), mask.cpu()


@torch.inference_mode()
def pooled_texts(model, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """The text tower's output before its projection, (B, W): vitrine's MiniLM, a CLIP's or SigLIP's, or an ONNX
    export's."""
    chunks = [
        model.pooled_texts(list(texts[s : s + batch_size])).float().cpu() for s in range(0, len(texts), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)
