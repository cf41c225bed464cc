"""vitrine from Python in open_clip's idiom: `create_model_and_transforms`, `get_tokenizer`, `encode_image` /
`encode_text`; plus `Index` (search a built index) and `Tagger` (attribute tags). The top layer: it may import any
part of vitrine, and no part of vitrine imports it (`vitrine/__init__.py` re-exports its names lazily)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

import numpy as np
import torch
from PIL import Image
from torch import nn

from vitrine.data.images import load_image
from vitrine.data.transforms import ImageTransform
from vitrine.embed.encode import encode_texts
from vitrine.errors import InvalidInput, WrongType
from vitrine.index.store import SearchHit
from vitrine.models import DEFAULT_MODEL, DEFAULT_TAG_MODEL, Encoder, create_model
from vitrine.ranking import Ranked
from vitrine.search import Filters, ImageQuery, Query, SearchEngine
from vitrine.tagging.factory import VocabularySpec, create_tagger
from vitrine.tagging.tagger import Tag

Tokens = Mapping[str, torch.Tensor]

__all__ = ["Index", "OpenClipStyleModel", "Tagger", "Tokenizer", "create_model_and_transforms", "get_tokenizer"]


class OpenClipStyleModel(nn.Module):
    """A vitrine `Encoder` with open_clip's calls (`encode_image(pixels)`, `encode_text(tokens)`) and fashion-clip's
    (`encode_images`, `encode_texts`); every embedding is L2-normalised."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        return self.encoder.embed_dim

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) pixels made by `preprocess` -> (B, D) unit-norm embeddings."""
        _unit_norm_only(normalize)
        with torch.inference_mode():
            return self.encoder.encode_image(pixels.to(self.encoder.device))

    def encode_text(self, tokens: Tokens, normalize: bool = True) -> torch.Tensor:
        """The tokenizer's batch -> (B, D) unit-norm embeddings."""
        _unit_norm_only(normalize)
        if not isinstance(tokens, Mapping):
            raise WrongType(
                f"encode_text takes the batch that vitrine.get_tokenizer({self.name!r}) returns, got "
                f"{type(tokens).__name__}; encode_texts takes strings"
            )
        with torch.inference_mode():
            return self.encoder.text_features_from_tokens(dict(tokens)).embeds

    def encode_images(self, images: Sequence[ImageQuery], batch_size: int = 32) -> np.ndarray:
        """Images or image files -> (N, D) float32 unit-norm embeddings."""
        images = _listed(images, "encode_images", "images")
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(images), batch_size):
            pixels = self.encoder.preprocess([load_image(image) for image in images[start : start + batch_size]])
            chunks.append(self.encode_image(pixels).float().cpu().numpy())
        return np.concatenate(chunks)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Strings -> (N, D) float32 unit-norm embeddings."""
        return encode_texts(self.encoder, _listed(texts, "encode_texts", "texts"), batch_size=batch_size).numpy()


class Tokenizer:
    """open_clip's tokenizer call: a string or a list of strings -> the token batch `encode_text` takes."""

    def __init__(self, tokenize: Callable[[list[str]], dict[str, torch.Tensor]]):
        self._tokenize = tokenize

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        return self._tokenize([texts] if isinstance(texts, str) else list(texts))


def create_model_and_transforms(
    name: str = DEFAULT_MODEL, runtime: str = "torch"
) -> tuple[OpenClipStyleModel, ImageTransform]:
    """A registry model in eval mode and its preprocess (a PIL image -> a (3, H, W) tensor).

    open_clip returns (model, preprocess_train, preprocess_val); vitrine has a single eval transform, so two values."""
    encoder = create_model(name, runtime=runtime)
    return OpenClipStyleModel(encoder).eval(), encoder.image_transform


def get_tokenizer(name: str = DEFAULT_MODEL, runtime: str = "torch") -> Tokenizer:
    """The tokenizer of model `name`'s text tower (the model is built to read it)."""
    return Tokenizer(create_model(name, runtime=runtime).tokenize)


class Index:
    """A built index (a folder made by `vitrine index build`, or `milvus:...`), searched with the model that built
    it."""

    def __init__(self, path: str | os.PathLike, model: str | None = None, runtime: str = "torch"):
        self.engine = SearchEngine(os.fspath(path), model=model, runtime=runtime)

    def search(
        self, text: str | None = None, image: ImageQuery | None = None, modify: str | None = None,
        filters: Filters | None = None, k: int = 10,
    ) -> list[SearchHit]:
        """Products for `text`, for `image` (a file or a PIL image), or for `image` changed by `modify` (composed),
        ranked as `vitrine search` ranks them; `filters` maps a field to a value or a list of values. An image that
        is a stored product's own photo leaves that product out."""
        return self.rank(text, image, modify, filters, k).hits

    def rank(
        self,
        text: str | None = None,
        image: ImageQuery | None = None,
        modify: str | None = None,
        filters: Filters | None = None,
        k: int = 10,
        **options,
    ) -> Ranked:
        """`search`'s whole answer, as `POST /search` gives it: `hits`, `total`, `relevance` (is anything a close
        match?), `facets`, `excluded` and the `mode` that ran. `options`: mode, soft_filters, min_score, offset,
        exclude_reference (as `vitrine.search.Query` takes them). Refusals raise `QueryError` / `FilterError` in the
        words HTTP's 400 and the CLI use."""
        picture = None if image is None else load_image(image, what="query image")
        return self.engine.rank(
            Query(text=text, image=picture, modification=modify, k=k, filters=filters or {}, **options)
        )

    def stats(self) -> dict:
        """Products, vectors, index kind, model (as `vitrine index stats`)."""
        return self.engine.store.stats()

    def __len__(self) -> int:
        return int(self.stats()["products"])

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class Tagger:
    """Open-vocabulary attribute tags (`vitrine tag`): `vocabulary` is a YAML/JSON file, its dict, a comma list of the
    shipped KAGL attributes, or None for all of them."""

    def __init__(
        self, model: str = DEFAULT_TAG_MODEL, vocabulary: VocabularySpec = None, regions: str = "foreground",
        pooling: str = "blend", runtime: str = "torch",
    ):
        self.tagger = create_tagger(model, vocabulary, regions, pooling, runtime=runtime)

    @property
    def attributes(self) -> list[str]:
        return list(self.tagger.vocabulary.names)

    def tag(self, images: Sequence[ImageQuery]) -> list[dict[str, Tag]]:
        """Per image, {attribute: Tag}: `.value` (or 'unknown' below the attribute's threshold), `.best`,
        `.probability`."""
        with torch.inference_mode():
            return self.tagger.tag_images(_listed(images, "tag", "images"))


def _unit_norm_only(normalize: bool) -> None:
    if not normalize:
        raise InvalidInput("vitrine encoders return L2-normalised embeddings only (open_clip's normalize=True)")


def _listed(values: Sequence, call: str, what: str) -> list:
    if isinstance(values, (str, os.PathLike, Image.Image)):
        raise WrongType(f"{call} takes a list of {what}; for one, pass [it]")
    return list(values)
