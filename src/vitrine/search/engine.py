"""The query engine: every surface's searches (HTTP, `/search/batch`, the CLI, the Python API) run here, on one
index and the model that built it, with the same checks, relevance judgement and reference exclusion."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from vitrine.constants import DEFAULT_SEARCH_MODE
from vitrine.data.images import load_image
from vitrine.errors import VitrineError
from vitrine.index.store import SearchHit
from vitrine.index.stores import open_store
from vitrine.models import create_model
from vitrine.ranking import Calibration, FilterError, Ranked, Ranker, RankOptions
from vitrine.ranking.calibrate import calibrate
from vitrine.search.query import Filters, Query, QueryError

ImageQuery = str | os.PathLike | Image.Image  # a file, or an image already decoded
# An image query whose vector is this close to a stored product's is that product's own photo, however it was sent
# (an upload of the catalog's file, a path, an image_url): it is left out of its own results and is a composed
# query's reference. Measured on the hi-res catalog (1,012 photos, kagl-base): each photo sent as a query scores
# 1.0000 to its own product (min); the nearest other product scores a median 0.783 and p99 0.955, and only 2
# products reach 0.995 to another, both exact duplicate photos (a large upload decoded in JPEG draft mode keeps a
# cosine >= 0.9991 to the full decode: serve/app.py's DRAFT_MARGIN).
SAME_PRODUCT = 0.995
CALIBRATION_BATCH = 64

TextEncoder = Callable[[Sequence[str]], Sequence[torch.Tensor]]
ImageEncoder = Callable[[Sequence[torch.Tensor]], Sequence[tuple[torch.Tensor, torch.Tensor]]]


class SearchEngine:
    """An index plus the model that built it (another model is refused). Safe across threads: reads of the index
    are serialised on `lock`, which writers of the same store take too; encoding runs outside it."""

    def __init__(
        self,
        index: str | None = None,
        model: str | None = None,
        runtime: str = "torch",
        fallback: bool = False,
        *,
        store=None,
        encoder=None,
        relevance: str = "shopper",
        combiner: str = "combiner",
        search_mode: str = DEFAULT_SEARCH_MODE,
    ):
        from vitrine.index.runtime import check_query_runtime

        self.store = store if store is not None else open_store(index, model=model)
        self.model = (
            encoder if encoder is not None else create_model(self.store.model, runtime=runtime, fallback=fallback)
        )
        self.model.eval()
        check_query_runtime(self.store, self.model)
        self.fallback, self.relevance, self.combiner, self.search_mode = fallback, relevance, combiner, search_mode
        self.ranker = Ranker(self.store)
        self.lock = threading.RLock()
        self._calibration: Calibration | None = None
        self._calibration_generation: int | None = None
        self._composer = None
        self._recalibrating: threading.Thread | None = None

    # ---- start-up ----------------------------------------------------------------------------------
    def warm(self, composed: bool = True) -> None:
        """Do now what a first query would otherwise pay for: the catalog's values, the relevance calibration, the
        Combiner, and one pass of each tower (ONNX Runtime and torch allocate on their first call)."""
        with self.lock:
            self.store.refresh()
            self.ranker.vocabulary()
            self.calibration()
        sample = self.store.sample(1)
        text = (sample[0].get("title") if sample else None) or "warm up"
        self.rank(Query(text=text, k=24))  # the ranking's first use: the catalog's rows, filters and coded values
        features = self.image_features([self.model.image_transform(warm_picture())])
        if composed:
            composer = self.composer()
            with torch.inference_mode():
                embeds, tokens = features[0]
                composer.queries(
                    embeds.unsqueeze(0), ["in black"], tokens.unsqueeze(0) if composer.needs_tokens else None
                )

    # ---- encoding (plain forward passes; the service batches concurrent requests into them) ----------
    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        with torch.inference_mode():
            return list(self.model.encode_text(list(texts)))

    def image_features(self, pixels: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(embedding, tokens) of each preprocessed image."""
        with torch.inference_mode():
            features = self.model.image_features(torch.stack(list(pixels)))
        return list(zip(features.embeds, features.tokens))

    def query_vectors(
        self, queries: Sequence[Query], encode_texts: TextEncoder | None = None,
        image_features: ImageEncoder | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """((len(queries), D) query vectors, each query's plain image embedding or None): the texts in one pass, the
        images in another, the composed ones through the Combiner together."""
        encode_texts, image_features = encode_texts or self.encode_texts, image_features or self.image_features
        rows: list[torch.Tensor | None] = [None] * len(queries)
        images: list[torch.Tensor | None] = [None] * len(queries)
        texts = [i for i, q in enumerate(queries) if q.image is None]
        if texts:
            for i, vector in zip(texts, encode_texts([queries[i].text for i in texts])):
                rows[i] = vector
        pictures = [i for i, q in enumerate(queries) if q.image is not None]
        if pictures:
            encoded = image_features([self.model.image_transform(queries[i].image) for i in pictures])
            for i, (embeds, _) in zip(pictures, encoded):
                rows[i] = images[i] = embeds
            composed = [
                (i, embeds, tokens) for i, (embeds, tokens) in zip(pictures, encoded) if queries[i].modification
            ]
            if composed:
                for (i, _, _), vector in zip(composed, self._composed(queries, composed)):
                    rows[i] = vector
        return torch.stack(rows), images

    def _composed(self, queries: Sequence[Query], composed: list) -> torch.Tensor:
        composer = self.composer()
        with torch.inference_mode():
            if (
                composer.model is not self.model
            ):  # AGCN reads tokens, which the ONNX runtimes lack: the torch model's own
                own = composer.model.image_features(
                    torch.stack([composer.model.image_transform(queries[i].image) for i, _, _ in composed])
                )
                composed = [(i, embeds, tokens) for (i, _, _), embeds, tokens in zip(composed, own.embeds, own.tokens)]
            tokens = torch.stack([t for _, _, t in composed]) if composer.needs_tokens else None
            return composer.queries(
                torch.stack([e for _, e, _ in composed]), [queries[i].modification for i, _, _ in composed], tokens
            )

    def composer(self):
        """The Combiner (or the sum, for a model with none shipped), loaded once."""
        with self.lock:
            if self._composer is None:
                from vitrine.cir.compose import composer_for

                self._composer = composer_for(self.model, self.combiner, True, lambda: create_model(self.store.model))
            return self._composer

    # ---- ranking ------------------------------------------------------------------------------------
    def rank(
        self, query: Query, vector: torch.Tensor | None = None, image_vector: torch.Tensor | None = None,
        blocking: bool = True,
    ) -> Ranked | None:
        """The ranked page of `query`; `vector` (and, for an image query, `image_vector`) when the caller encoded it.
        With `blocking` False, None when another thread holds the index (a writer): the caller may wait elsewhere."""
        if vector is None:
            vectors, images = self.query_vectors([query])
            vector, image_vector = vectors, images[0]
        if not self.lock.acquire(blocking=blocking):
            return None
        try:
            self.store.refresh()
            return self._rank_current(query, vector.reshape(1, -1), image_vector)
        finally:
            self.lock.release()

    def rank_many(
        self, queries: Sequence[Query], per_item: bool = False, encode_texts: TextEncoder | None = None,
        image_features: ImageEncoder | None = None,
    ) -> list[Ranked | VitrineError]:
        """Several queries, encoded together, ranked one by one. A refused query raises, or with `per_item` takes its
        place in the answer as its QueryError (a filter no product can match, say)."""
        vectors, images = self.query_vectors(queries, encode_texts, image_features)
        with self.lock:
            self.store.refresh()
            if not per_item:
                for query in queries:
                    self.ranker.check_filters(query.filters)
            out: list[Ranked | VitrineError] = []
            for i, query in enumerate(queries):
                try:
                    out.append(self._rank_current(query, vectors[i : i + 1], images[i]))
                except (QueryError, FilterError) as exc:
                    if not per_item:
                        raise
                    out.append(exc)
            return out

    def options(self, query: Query, reference: str | None = None) -> RankOptions:
        exclude = (reference,) if reference and query.exclude_reference else ()
        return RankOptions(
            mode=query.mode or self.search_mode, soft_filters=query.soft_filters, min_score=query.min_score,
            offset=query.offset, exclude=exclude,
        )

    def reference(self, query: Query, image_vector: torch.Tensor | None) -> str | None:
        """The stored product an image query shows: the one the caller named, else the one whose vector matches the
        image's (SAME_PRODUCT)."""
        if query.image is None:
            return None
        if query.reference_id:
            return query.reference_id
        if image_vector is None:
            return None
        hits = self.store.search(image_vector.reshape(1, -1).float().numpy(), 1)[0]
        return hits[0].id if hits and hits[0].similarity is not None and hits[0].similarity >= SAME_PRODUCT else None

    def _rank_current(self, query: Query, vector: torch.Tensor, image_vector: torch.Tensor | None) -> Ranked:
        """Under the lock, with the store refreshed."""
        self.ranker.check_filters(query.filters)
        reference = self.reference(query, image_vector)
        composed = query.kind == "composed"
        calibration = self.calibration(wait=False) if not composed else None
        row = self.store.product(reference) if composed and reference else None
        try:
            return self.ranker.rank(
                vector.float().numpy(), None if query.image is not None else query.text, query.k, query.filters,
                self.options(query, reference), calibration, soft_text=query.modification if composed else None,
                reference=row,
            )
        except ValueError as exc:  # a mode this store cannot run (lexical on Milvus)
            raise QueryError(str(exc)) from None

    def calibration(self, wait: bool = True) -> Calibration | None:
        """What a query for a product this catalog has scores (`relevance`): computed on first use (or `warm`) and again
        after a commit that grew or shrank the catalog by a quarter; a query only compares generations. Without `wait`
        (a query), a calibration made due by another process's commit is redone in a thread while the one before
        serves; the writer in this process redoes it itself (the service's `_calibrate_after_commit`)."""
        with self.lock:
            generation = self.store.generation
            if self._calibration_generation == generation:  # the catalog's size is reread only after a write
                return self._calibration
            products = self.store.stats()["products"]
            if self._calibration is not None and not self._calibration.stale(products):
                self._calibration_generation = generation
                return self._calibration
            if self._calibration is not None and not wait:
                if self._recalibrating is None:
                    self._recalibrating = threading.Thread(target=self._recalibrate, name="recalibrate", daemon=True)
                    self._recalibrating.start()
                return self._calibration
            self._calibration = calibrate(self.store, self._encode_for_calibration, self.relevance)
            self._calibration_generation = generation  # only once made: a store that failed midway is asked again
            return self._calibration

    def _recalibrate(self) -> None:
        try:
            with self.lock:
                generation = self.store.generation
            made = calibrate(_Locked(self.store, self.lock), self._encode_for_calibration, self.relevance)
            with self.lock:
                self._calibration, self._calibration_generation = made, generation
        except Exception:  # a store gone away meanwhile: the next query asks again
            pass
        finally:
            self._recalibrating = None

    def _encode_for_calibration(self, texts: Sequence[str]):
        return (
            torch.stack(
                [
                    v
                    for i in range(0, len(texts), CALIBRATION_BATCH)
                    for v in self.encode_texts(texts[i : i + CALIBRATION_BATCH])
                ]
            )
            .float()
            .numpy()
        )

    # ---- conveniences for the Python API and the CLI -----------------------------------------------
    def text(
        self, query: str, k: int = 10, filters: Filters | None = None, options: RankOptions = RankOptions()
    ) -> list[SearchHit]:
        """Ranked by `options` (default: hybrid, query words as soft filters)."""
        return self.rank(Query(text=query, k=k, filters=filters or {}, **_query_options(options))).hits

    def image(
        self, path: ImageQuery, k: int = 10, filters: Filters | None = None, options: RankOptions = RankOptions()
    ) -> list[SearchHit]:
        return self.rank(
            Query(image=load_image(path, what="query image"), k=k, filters=filters or {}, **_query_options(options))
        ).hits

    def composed(
        self, path: ImageQuery, modification: str, k: int = 10, filters: Filters | None = None,
        combiner: str | None = None, options: RankOptions = RankOptions(),
    ) -> list[SearchHit]:
        """ "Like this image, but <modification>": the combiner turns both into one query (CLIP4Cir)."""
        if not (modification or "").strip():
            raise QueryError("the modification text is empty")
        if combiner is not None and combiner != self.combiner:
            with self.lock:
                self.combiner, self._composer = combiner, None
        query = Query(
            image=load_image(path, what="query image"), modification=modification, k=k, filters=filters or {},
            **_query_options(options),
        )
        return self.rank(query).hits

    def close(self) -> None:
        with self.lock:
            self.store.close()


def warm_picture() -> Image.Image:
    """A product shot stand-in: a garment-coloured shape on white (a first call then walks the foreground path too)."""
    picture = Image.new("RGB", (240, 320), (255, 255, 255))
    picture.paste((150, 30, 40), (60, 60, 180, 280))
    return picture


class _Locked:
    """A store whose every call takes `lock` (a thread calibrating beside the queries; encoding stays outside it)."""

    def __init__(self, store, lock):
        self._store, self._lock = store, lock

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            with self._lock:
                return attribute(*args, **kwargs)

        return call


def _query_options(options: RankOptions) -> dict:
    """A RankOptions' query-level settings (fusion weights and pools are the engine's; `vitrine.ranking.Ranker` takes
    all)."""
    return {
        "mode": options.mode, "soft_filters": options.soft_filters, "min_score": options.min_score,
        "offset": options.offset,
    }
