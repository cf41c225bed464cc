"""What the HTTP layer calls: search, tagging and product writes over one index, safe across threads and workers.

Reads and writes in one process are serialised on the index with a lock; the model work (encoding, tagging)
runs outside it. Several worker processes share the index directory: a write takes a file lock and first
rereads what another worker committed, and every read rereads the index when its generation moved on.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

from vitrine.data.tagged import PREDICTED_FIELDS, PREDICTED_PREFIX, with_tags
from vitrine.disk import locked, writing
from vitrine.errors import InvalidRequest, NotFound, VitrineError
from vitrine.failpoints import failpoint
from vitrine.index.snapshot import sweep_leftovers
from vitrine.index.store import SearchHit, StoreUnavailable, images_dir, is_milvus
from vitrine.index.stores import open_store
from vitrine.models import create_model
from vitrine.ranking import Ranked
from vitrine.search import Query, SearchEngine
from vitrine.search.engine import warm_picture
from vitrine.serve.batching import MicroBatcher
from vitrine.serve.facets import catalog_facets
from vitrine.serve.images import ImageStore, lock_dir
from vitrine.serve.settings import ServeSettings

IMAGE_COMMIT = "serve.image_commit"  # store state: the token of the last upsert's staged image, committed with its row
PRODUCT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_VOCABULARY_VALUES = 500  # a request's vocabulary is embedded on the spot: keep that bounded


class SearchService:
    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.images_dir = Path(settings.images) if settings.images else images_dir(settings.index)
        # FAISS: the index directory serialises writers across workers; Milvus orders writes itself (the lock only
        # guards images)
        self.lock_dir = lock_dir(settings.index, self.images_dir)
        with self._write_lock():  # opening removes stale vector files: never while another worker commits
            self.store = open_store(settings.index, model=settings.model)
            # temp files of writers that died mid-write (prepare, backfill, a worker, a snapshot)
            ImageStore(self.images_dir).sweep()
            if not is_milvus(settings.index):
                sweep_leftovers(settings.index)
        model = create_model(self.store.model, runtime=settings.runtime, fallback=True)
        self.engine = SearchEngine(
            store=self.store, encoder=model, relevance=settings.relevance, combiner=settings.combiner,
            search_mode=settings.search_mode,
        )
        self.model, self.ranker = self.engine.model, self.engine.ranker
        self.images = ImageStore(self.images_dir)
        self._lock = self.engine.lock  # reads and writes of the store, in this process
        self._fields: tuple[int, set[str]] | None = None
        self._tag_model = None
        self._taggers: OrderedDict[str, object] = OrderedDict()
        # Concurrent queries share forward passes (a lone query is not delayed): see MicroBatcher.
        wait = settings.batch_wait_us / 1e6
        self._encode_texts = MicroBatcher(
            self.engine.encode_texts, settings.max_batch, name="text-encoder", max_wait=wait
        )
        self._encode_images = MicroBatcher(
            self.engine.image_features, settings.max_batch, name="image-encoder", max_wait=wait
        )
        self.engine.calibration()  # at start, so that no query waits for it (`warm` loads the rest)

    def warm(self) -> None:
        """Load now what a worker's first query, tag and composed query would otherwise wait for."""
        self.engine.warm(composed=True)
        self._tagger().tag_images([warm_picture()])

    # ---- reads -------------------------------------------------------------------------------------
    def search(self, query: Query, vector: torch.Tensor | None = None) -> list[SearchHit]:
        """The hits of `query` (see `rank` for the rest of the answer)."""
        return self.rank(query, vector).hits

    def rank(self, query: Query, vector: torch.Tensor | None = None, blocking: bool = True) -> Ranked | None:
        """The ranked page of `query`; `vector` is its encoding when the caller already has it (see `text_vector`).
        With `blocking` False, None rather than wait while a writer holds the index (the event loop never waits)."""
        image_vector = None
        if vector is None:
            vectors, images = self.engine.query_vectors([query], self._batched_texts, self._batched_images)
            vector, image_vector = vectors, images[0]
        return self.engine.rank(query, vector, image_vector, blocking=blocking)  # QueryError, FilterError: as raised

    async def text_vector(self, text: str) -> torch.Tensor:
        """A text query's vector, awaited on the event loop while the encoder thread batches it with its neighbours."""
        return (await self._encode_texts.submit(text)).unsqueeze(0)

    def rank_many(self, queries: Sequence[Query], per_item: bool = False) -> list[Ranked | VitrineError]:
        """Several queries at once: all texts in one forward pass, all images in another, then one ranking per query.
        A refused query raises, or with `per_item` takes its place in the answer as its VitrineError."""
        return self.engine.rank_many(queries, per_item)

    def _calibrate_after_commit(self) -> None:
        """The writer, not the next query, pays for a calibration a commit made due; a store that went away since the
        commit leaves it to the next query (the write itself is done)."""
        try:
            self.engine.calibration()
        except StoreUnavailable:
            pass

    def _batched_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        return [self._encode_texts(text) for text in texts]

    def _batched_images(self, pixels: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self._encode_images(p) for p in pixels]

    def embed(
        self, texts: Sequence[str] = (), images: Sequence[Image.Image] = ()
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Unit-norm vectors of `texts` (one forward pass) and of `images` (another), as the index's model makes
        them."""
        text_vectors = (
            [torch.nn.functional.normalize(v.float(), dim=-1) for v in self.engine.encode_texts(texts)] if texts else []
        )
        image_vectors = (
            [
                torch.nn.functional.normalize(e.float(), dim=-1)
                for e, _ in self.engine.image_features([self.model.image_transform(i) for i in images])
            ]
            if images
            else []
        )
        return text_vectors, image_vectors

    def page(self, offset: int, limit: int, filters: Mapping[str, Sequence[str]]) -> tuple[int, list[dict]]:
        """(how many products match `filters`, `limit` of them from `offset`), in the store's order (FAISS: by id)."""
        with self._lock:
            self.store.refresh()
            self._check_filters(filters)
            return self.store.page(offset, limit, filters)

    def product(self, product_id: str) -> dict:
        with self._lock:
            self.store.refresh()
            row = self.store.product(product_id)
        if row is None:
            raise NotFound(f"no product with id {product_id!r}", code="unknown_product")
        return row

    def image_path(self, product_id: str) -> Path:
        """Where the product's image is now: its stored JPEG, or, while another worker's committed upsert of it is not
        yet
        settled, the image that upsert staged (so that a row is never shown without its image, or with the one
        before)."""
        with self._lock:
            self.store.refresh()
            # The last upsert's token before the row: a commit between the two reads shows as a changed row, so a staged
            # image is taken only when the row read is the one it was staged with (FAISS commits both in one
            # transaction).
            last = self.store.get_state(IMAGE_COMMIT)
            row = self.store.product(product_id)
            if row is None:
                raise NotFound(f"no product with id {product_id!r}", code="unknown_product")
            # staged before its row committed: with this row read, an upsert's staged image is there (or settled)
            staged = (
                self.images.staged_image(product_id, self._committed(row, last)) if self.images.has_staged() else None
            )
        if staged is not None:
            return staged
        path = self.images.path(product_id)
        if not path.is_file():
            raise NotFound(f"product {product_id!r} has no stored image", code="no_image")
        return path

    def image_bytes(self, product_id: str) -> bytes:
        """The stored JPEG, read in one open: a delete between the check and the read is a 404, never a 500."""
        path = self.image_path(product_id)
        candidates = [path, self.images.path(product_id)] if self.images.is_staged(path) else [path]
        for candidate in candidates:  # a staged image settled meanwhile has moved to the stored path
            try:
                return candidate.read_bytes()
            except FileNotFoundError:
                continue
        raise NotFound(f"product {product_id!r} has no stored image", code="no_image")

    def product_image(self, product_id: str) -> Image.Image:
        with Image.open(io.BytesIO(self.image_bytes(product_id))) as image:
            return image.convert("RGB")

    def attribute_values(
        self, per_field: int = 50, name: str | None = None, prefix: str | None = None
    ) -> dict[str, list[tuple[str, int]]]:
        """Each field's most common values with counts; one field's, and those starting with `prefix` (any case), on
        request."""
        with self._lock:
            self.store.refresh()
            values = self.ranker.catalog_values()
        values = {n: rows for n, rows in values.items() if not n.startswith(PREDICTED_PREFIX) and n != PREDICTED_FIELDS}
        if name is not None:
            if name not in values:
                raise NotFound(
                    f"no attribute field {name!r}; this catalog has: {', '.join(sorted(values))}", code="unknown_field"
                )
            values = {name: values[name]}
        if prefix:
            folded = prefix.casefold()
            values = {n: [(v, c) for v, c in rows if v.casefold().startswith(folded)] for n, rows in values.items()}
        return {n: rows[:per_field] for n, rows in values.items()}

    def facets(self) -> dict:
        """The fields shoppers filter by: the saved schema's categorical columns, then predicted tags
        (`vitrine.serve.facets`)."""
        with self._lock:
            self.store.refresh()
            return catalog_facets(self.store, self.ranker.catalog_values())

    def stats(self) -> dict:
        with self._lock:
            self.store.refresh()
            return self.store.stats()

    def tag(self, image: Image.Image, vocabulary=None) -> dict:
        tagger = self._tagger(vocabulary)
        with torch.inference_mode():
            return tagger.tag_images([image])[0]

    # ---- writes ------------------------------------------------------------------------------------
    def upsert(
        self, product_id: str, title: str | None, attributes: Mapping[str, str], image: Image.Image,
        new_attributes: bool = False,
    ) -> tuple[dict, bool]:
        """Add or replace a product (vector, attributes, predicted tags, image); returns (its row, created). An
        attribute
        name the catalog does not have is refused unless `new_attributes` (an empty catalog takes any)."""
        if not PRODUCT_ID.match(product_id or ""):
            raise InvalidRequest(
                f"product id {product_id!r} must be 1-128 characters of letters, digits and . _ : - (starting with a "
                "letter or digit)"
            )
        for name in attributes:
            if name in ("id", "title", PREDICTED_FIELDS) or name.startswith(PREDICTED_PREFIX) or not name.strip():
                raise InvalidRequest(f"attribute name {name!r} is reserved or empty")
        if not new_attributes:
            self._check_attribute_names(attributes)
        with torch.inference_mode():
            vector = self.model.encode_image(self.model.preprocess([image])).float().numpy()
        tags = self.tag(image)
        metadata = with_tags({"title": title, **{k: v for k, v in attributes.items() if v not in (None, "")}}, tags)
        with self._lock, self._write_lock():
            self.store.refresh()
            before = self.store.product(product_id)
            # Shown only once the row has committed (the lock's release settles it): a crash at any point leaves the
            # old product or the new one, each with its own image.
            # Until then a reader of another worker that sees the row reads the staged image (`image_path`).
            token = self.images.stage(product_id, image, {"before": before})
            with writing(self.settings.index):  # a full disk: the commit is rolled back, the staged image dropped
                self.store.upsert([product_id], vector, [metadata], state={IMAGE_COMMIT: token})
            failpoint("serve.upsert_committed")  # the row is visible to other workers; its image not yet settled
            row = self.store.product(product_id)
        self._calibrate_after_commit()
        return row, before is None

    def delete(self, product_id: str) -> None:
        with self._lock, self._write_lock():
            self.store.refresh()
            self.images.stage(
                product_id, None
            )  # removed when the lock is released, if the row is gone: a crash leaves no stray file
            with writing(self.settings.index):
                removed = self.store.delete([product_id])
            if not removed:
                raise NotFound(f"no product with id {product_id!r}", code="unknown_product")
        self._calibrate_after_commit()

    def close(self) -> None:
        self._encode_texts.close()
        self._encode_images.close()
        with self._lock:
            self.store.close()

    # ---- helpers -----------------------------------------------------------------------------------
    @contextmanager
    def _write_lock(self):
        """The writers' lock, across workers; image changes are settled on taking it and before leaving it."""
        with locked(self.lock_dir):
            self._settle_images()  # what a writer that died holding the lock staged
            try:
                yield
            finally:
                self._settle_images()  # this holder's writes; at start-up, a crashed process's (the store is open now)

    def _settle_images(self) -> None:
        """Show or drop each staged image change by whether its write committed, so that images agree with rows.

        An upsert committed if the store holds its token (FAISS saves it in the row's own transaction) or its row
        changed since it was staged (Milvus saves state after the rows); a removal is due once the row is gone.
        """
        store = getattr(self, "store", None)
        if store is None:  # start-up, before the store is open
            return
        images = getattr(self, "images", None) or ImageStore(self.images_dir)
        if not images.has_staged():
            return
        store.refresh()
        images.settle(self._committed())

    def _committed(self, row: dict | None = None, last: str | None = None):
        """`committed(token, entry)`: whether a staged image change's write committed (for `settle` and readers).
        A reader passes the product's `row` and the `last` upsert's token as it read them (token first)."""
        last = self.store.get_state(IMAGE_COMMIT) if row is None else last

        def committed(token: str, entry: dict) -> bool:
            current = row if row is not None else self.store.product(entry["id"])
            return (token == last or current != entry["before"]) if entry["image"] else current is None

        return committed

    def _catalog_fields(self) -> set[str]:
        """The attribute names the catalog's products have (predicted tags left out), reread after each write."""
        if self._fields is None or self._fields[0] != self.store.generation:
            self._fields = (self.store.generation, self.store.fields())
        return {n for n in self._fields[1] if not n.startswith(PREDICTED_PREFIX) and n != PREDICTED_FIELDS}

    def _check_attribute_names(self, attributes: Mapping[str, object]) -> None:
        with self._lock:
            self.store.refresh()
            known = self._catalog_fields()
        unknown = sorted(set(attributes) - known)
        if unknown and known:
            raise InvalidRequest(
                f"attribute(s) {unknown} are not in this catalog, which has: {', '.join(sorted(known))}; "
                "send new_attributes=true to add a field",
                code="unknown_attribute",
            )

    def _check_filters(self, filters: Mapping[str, Sequence[str]]) -> None:
        self.ranker.check_filters(filters, listing="GET /attributes?field={field} lists all")

    def _tagger(self, vocabulary=None):
        from vitrine.models import DEFAULT_TAG_MODEL
        from vitrine.tagging.catalog_tags import saved_vocabulary
        from vitrine.tagging.tagger import Tagger
        from vitrine.tagging.views import make_views
        from vitrine.tagging.vocabulary import builtin_vocabulary

        key = "builtin" if vocabulary is None else hashlib.sha1(repr(vocabulary.to_dict()).encode()).hexdigest()
        with self._lock:
            if key in self._taggers:
                self._taggers.move_to_end(key)
                return self._taggers[key]
            if self._tag_model is None:
                name = self.settings.tag_model or DEFAULT_TAG_MODEL
                self._tag_model = (
                    self.model
                    if name == self.model.name
                    else create_model(name, runtime=self.settings.runtime, fallback=True)
                )
                self._tag_model.eval()
            # the vocabulary the index was tagged with (a shop catalog's own columns), else the shipped KAGL one
            vocabulary = (
                vocabulary or saved_vocabulary(self.settings.index) or builtin_vocabulary(model=self._tag_model.name)
            )
            if sum(len(a.values) for a in vocabulary.attributes) > MAX_VOCABULARY_VALUES:
                raise InvalidRequest(f"a request's vocabulary may hold at most {MAX_VOCABULARY_VALUES} values in all")
            tagger = Tagger(self._tag_model, vocabulary, make_views(self.settings.regions))
            self._taggers[key] = tagger
            while len(self._taggers) > 8:
                self._taggers.popitem(last=False)
            return tagger
