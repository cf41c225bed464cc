"""An HTTP request's parts -> a checked `vitrine.search.Query`: the server's own limits (text length, k, offset, upload
size, one image source) here, everything every surface shares in `Query` itself. A plain module: tests call it
without a server."""

from __future__ import annotations

from PIL import Image

from vitrine.errors import InvalidRequest, VitrineError
from vitrine.search import Query, QueryError, checked_filters, parse_filters
from vitrine.search.query import TEXT_AND_IMAGE
from vitrine.serve.bodies import SearchForm, SearchJSON, decode_base64_image
from vitrine.serve.requests import checked_k, clean_text, image_from_bytes, product_id_from_image_url, read_image
from vitrine.serve.service import SearchService
from vitrine.serve.settings import ServeSettings

# A search upload is decoded at no less than 4x the resolution the model's transform keeps (JPEG draft mode). Measured
# on
# 300 hi-res photos scaled up to 2304x3072: 122.1 -> 16.2 ms per image, cosine to the full decode min 0.9991 (2x kept
# measured min 0.9930). Uploads under 4x the input decode in full, unchanged.
DRAFT_MARGIN = 4.0
MAX_OFFSET = 1000  # paging deeper ranks a pool this large per query
RANKING_FIELDS = ("mode", "soft_filters", "exclude_reference", "min_score", "offset")


class RequestMapper:
    """Builds queries from request bodies for one service (its model's transform, its catalog's images)."""

    def __init__(self, settings: ServeSettings, service: SearchService):
        self.settings, self.service = settings, service

    def search_draft(self, width: int, height: int) -> tuple[int, int]:
        """A search image may be decoded down to DRAFT_MARGIN times what the model's transform keeps of it (tags and
        stored product images always decode in full)."""
        return self.service.model.image_transform.source_size_for(width, height, DRAFT_MARGIN)

    def picture(self, image, image_url: str | None, where: str = "", draft=None) -> Image.Image | None:
        """The query image from an upload, base64 text or a catalog image URL (at most one of them)."""
        settings = self.settings
        if image is not None and image_url:
            raise InvalidRequest(f"{where}give an image upload or an image_url, not both")
        if isinstance(image, str):
            return image_from_bytes(
                decode_base64_image(image, f"{where}image", settings.max_upload_bytes), f"{where}image", settings, draft
            )
        if image is not None:
            return read_image(image, settings, draft)
        if image_url:
            return self.service.product_image(product_id_from_image_url(image_url))
        return None

    def query(
        self, text, modification, image, image_url, k, filters: dict[str, list[str]], where: str = "", ranking=None
    ) -> Query:
        """A checked query; `where` prefixes messages with the query's place in a batch."""
        settings = self.settings
        # over the length limit: refused here; blank: Query says so, in the words every surface uses
        text = clean_text(f"{where}text", text, settings) or (text if isinstance(text, str) and not image else None)
        modification = clean_text(f"{where}modification", modification, settings)
        if image is not None and text:  # before touching the image: a text with an image is refused as such
            raise InvalidRequest(f"{where}{TEXT_AND_IMAGE}")
        picture = self.picture(image, image_url, where, draft=self.search_draft)
        try:
            k = checked_k(k, settings)
        except VitrineError as exc:
            raise exc.prefixed(where) from None
        ranking = dict(ranking or {})
        offset = ranking.get("offset", 0)
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidRequest(f"{where}offset must be between 0 and {MAX_OFFSET}, got {offset}")
        reference = product_id_from_image_url(image_url) if image_url and image is None else None
        try:
            return Query(
                text=text, image=picture, modification=modification, k=k, filters=filters, reference_id=reference,
                **ranking,
            )
        except QueryError as exc:
            raise exc.prefixed(where) from None

    def json_filters(self, filters: dict[str, str | list[str]], where: str = "") -> dict[str, list[str]]:
        try:
            return checked_filters(filters)
        except QueryError as exc:
            raise exc.prefixed(where) from None

    def form_filters(self, specs: list[str]) -> dict[str, list[str]]:
        return parse_filters(specs)

    def from_body(self, body: SearchJSON | SearchForm, where: str = "") -> Query:
        """A `POST /search` body (or one query of a batch) as a Query."""
        ranking = {name: getattr(body, name) for name in RANKING_FIELDS}
        if isinstance(body, SearchForm):
            return self.query(
                body.text, body.modification, body.image, body.image_url, body.k, self.form_filters(body.filter),
                ranking=ranking,
            )
        return self.query(
            body.text, body.modification, body.image, body.image_url, body.k, self.json_filters(body.filters, where),
            where, ranking=ranking,
        )
