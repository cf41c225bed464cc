"""The FastAPI app: search, tagging and product endpoints, the web UI at `/`, OpenAPI at `/docs`."""
from __future__ import annotations

import hmac
import io
import logging
import time
from importlib import resources
from typing import Annotated
from urllib.parse import unquote, urlparse

import yaml
from fastapi import Depends, FastAPI, File, Form, Query as QueryParam, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

import vitrine
from vitrine.data.errors import ImageDecodeError
from vitrine.data.images import decode_image
from vitrine.search import parse_filters
from vitrine.serve.metrics import Metrics
from vitrine.serve.service import Query, SearchService, ServiceError, product_view
from vitrine.serve.settings import ServeSettings

log = logging.getLogger("vitrine.serve")
MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries on top of the image itself


def error_body(status: int, message: str, **extra) -> dict:
    return {"error": {"status": status, "message": message, **extra}}


def error_response(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse(error_body(status, message, **extra), status_code=status, headers=headers)


class BodyLimit:
    """Refuses bodies over the limit with a 413: at once from Content-Length, else while the body streams in."""

    class TooLarge(Exception):
        pass

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen, exceeded, started = 0, False, False

        async def counted_receive():
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise BodyLimit.TooLarge()
            return message

        async def guarded_send(message):
            # Once the body went over the limit, whatever the app answers (it may turn the error into a 400) becomes the 413.
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyLimit.TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        response = error_response(413, f"request body is over the limit of {self.limit} bytes")
        await response({"type": "http"}, None, send)


def create_app(settings: ServeSettings, service: SearchService | None = None) -> FastAPI:
    service = service or SearchService(settings)
    metrics = Metrics()
    # FastAPIOffline serves Swagger UI and ReDoc from the package, so /docs works with no network (no CDN).
    app = FastAPIOffline(title="vitrine", version=vitrine.__version__,
                  description="Fashion search (text, image, image + modification), open-vocabulary tagging and a product catalog.")
    app.state.service, app.state.settings = service, settings

    # ---- errors: always a JSON body, never a stack trace -------------------------------------------
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        return error_response(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in exc.errors()]
        return error_response(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the server log has the details")

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(request.method, getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - start)
        return response

    # ---- auth ----------------------------------------------------------------------------------------
    def _check_token(request: Request, expected: str) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise StarletteHTTPException(401, "this endpoint needs 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise StarletteHTTPException(403, "the bearer token is not valid for this endpoint")

    def can_read(request: Request) -> None:
        if settings.read_token:
            _check_token(request, settings.read_token)

    def can_write(request: Request) -> None:
        if not settings.write_token:
            raise StarletteHTTPException(403, "writes are disabled: start the server with a write token (VITRINE_WRITE_TOKEN or --write-token)")
        _check_token(request, settings.write_token)

    # ---- request helpers -----------------------------------------------------------------------------
    def read_image(upload: UploadFile) -> Image.Image:
        data = upload.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ServiceError(f"image {upload.filename!r} is over the upload limit of {settings.max_upload_bytes} bytes", 413)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
        except Exception:
            raise ServiceError(f"{upload.filename or 'the upload'} is not an image vitrine can read (JPEG, PNG, WebP, GIF, BMP, TIFF)", 415) from None
        if width * height > settings.max_pixels:
            raise ServiceError(f"image is {width}x{height} = {width * height} pixels, over the limit of {settings.max_pixels}", 413)
        try:
            return decode_image(data, max_pixels=settings.max_pixels)
        except ImageDecodeError as exc:
            raise ServiceError(f"{upload.filename or 'the upload'}: {exc.detail}", 415) from None

    def check_text(name: str, text: str | None) -> str | None:
        if text is None or not text.strip():
            return None
        if len(text) > settings.max_text_chars:
            raise ServiceError(f"{name} is {len(text)} characters; the limit is {settings.max_text_chars}")
        return text.strip()

    def check_k(k: int) -> int:
        if not 1 <= k <= settings.max_k:
            raise ServiceError(f"k must be between 1 and {settings.max_k}, got {k}")
        return k

    def image_from_url(url: str) -> Image.Image:
        parts = [unquote(p) for p in urlparse(url).path.split("/") if p]
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "image":
            raise ServiceError("image_url must be the image URL of a catalog product, /products/{id}/image (vitrine fetches no other URLs)")
        return service.product_image(parts[1])

    def hit_view(rank: int, hit) -> dict:
        return {"rank": rank, "score": round(hit.score, 4), **product_view(hit.metadata), "image_url": image_url(hit.id)}

    def run_search(text, modification, image, image_url_, k, filters) -> dict:
        text, modification = check_text("text", text), check_text("modification", modification)
        picture = None
        if image is not None and image_url_:
            raise ServiceError("give an image upload or an image_url, not both")
        if image is not None:
            picture = read_image(image)
        elif image_url_:
            picture = image_from_url(image_url_)
        if picture is None and modification:
            raise ServiceError("a modification changes an image query: give an image or an image_url too")
        if picture is None and not text:
            raise ServiceError("give a text query, an image, or an image with a modification")
        if picture is not None and text:
            raise ServiceError("give text or an image, not both; to change an image query, send the change as 'modification'")
        try:
            parsed = parse_filters(filters or [])
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
        query = Query(text=text, image=picture, modification=modification, k=check_k(k), filters=parsed)
        start = time.perf_counter()
        hits = service.search(query)
        return {"query": {"kind": query.kind, "text": text, "modification": modification, "k": query.k, "filters": parsed},
                "took_ms": round((time.perf_counter() - start) * 1000, 2),
                "results": [hit_view(rank, hit) for rank, hit in enumerate(hits, 1)]}

    # ---- endpoints -----------------------------------------------------------------------------------
    @app.post("/search", tags=["search"], dependencies=[Depends(can_read)], summary="search by text, image, or image + modification")
    def search(text: Annotated[str | None, Form(description="text query")] = None,
               modification: Annotated[str | None, Form(description='with an image: what should change, e.g. "in black"')] = None,
               image: Annotated[UploadFile | None, File(description="query image")] = None,
               image_url: Annotated[str | None, Form(description="a catalog product's image URL, /products/{id}/image")] = None,
               k: Annotated[int, Form(description="number of results")] = 10,
               filter: Annotated[list[str] | None, Form(description="field=value; repeat for more (same field: any of the values)")] = None):
        return run_search(text, modification, image, image_url, k, filter)

    @app.get("/search", tags=["search"], dependencies=[Depends(can_read)], summary="search by text or by a catalog product's image")
    def search_get(text: str | None = None, modification: str | None = None, image_url: str | None = None, k: int = 10,
                   filter: Annotated[list[str] | None, QueryParam()] = None):
        return run_search(text, modification, None, image_url, k, filter)

    @app.post("/tag", tags=["tagging"], dependencies=[Depends(can_read)], summary="tag an image with open-vocabulary attributes")
    def tag(image: Annotated[UploadFile, File(description="the image to tag")],
            vocabulary: Annotated[str | None, Form(description="attribute vocabulary as YAML or JSON (default: the shipped one)")] = None):
        from vitrine.tagging.vocabulary import vocabulary_from_dict

        parsed = None
        if vocabulary and vocabulary.strip():
            try:
                parsed = vocabulary_from_dict(yaml.safe_load(vocabulary), origin="vocabulary")
            except yaml.YAMLError as exc:
                raise ServiceError(f"vocabulary is not valid YAML or JSON: {exc}") from None
            except ValueError as exc:
                raise ServiceError(str(exc)) from None
        tags = service.tag(read_image(image), parsed)
        return {"tags": {name: t.to_dict() for name, t in tags.items()}}

    @app.get("/attributes", tags=["catalog"], dependencies=[Depends(can_read)], summary="attribute fields and their most common values")
    def attributes(per_field: int = 30):
        values = service.attribute_values(max(1, min(per_field, 500)))
        return {"fields": {name: [{"value": v, "count": n} for v, n in rows] for name, rows in values.items()}}

    @app.get("/products/{product_id}", tags=["catalog"], dependencies=[Depends(can_read)], summary="one product")
    def get_product(product_id: str):
        return {**product_view(service.product(product_id)), "image_url": image_url(product_id)}

    @app.get("/products/{product_id}/image", tags=["catalog"], dependencies=[Depends(can_read)], summary="a product's image (JPEG)",
             response_class=FileResponse)
    def get_product_image(product_id: str):
        return FileResponse(service.image_path(product_id), media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @app.post("/products", tags=["catalog"], dependencies=[Depends(can_write)], status_code=201,
              summary="add or replace a product (needs the write token)")
    def upsert_product(response: Response,
                       id: Annotated[str, Form(description="product id")],
                       image: Annotated[UploadFile, File(description="product image")],
                       title: Annotated[str | None, Form()] = None,
                       attributes: Annotated[str | None, Form(description='JSON object of attribute -> value, e.g. {"gender": "Women"}')] = None):
        parsed = {}
        if attributes and attributes.strip():
            try:
                parsed = yaml.safe_load(attributes)
            except yaml.YAMLError:
                parsed = None
            if not isinstance(parsed, dict) or not all(isinstance(v, (str, int, float)) or v is None for v in parsed.values()):
                raise ServiceError('attributes must be a JSON object of attribute -> text value, e.g. {"gender": "Women"}')
            parsed = {str(k): None if v is None else str(v) for k, v in parsed.items()}
        title = check_text("title", title)
        row, created = service.upsert(id, title, parsed, read_image(image))
        response.status_code = 201 if created else 200
        return {**product_view(row), "image_url": image_url(id), "created": created}

    @app.delete("/products/{product_id}", tags=["catalog"], dependencies=[Depends(can_write)], status_code=204,
                summary="delete a product (needs the write token)")
    def delete_product(product_id: str):
        service.delete(product_id)
        return Response(status_code=204)

    @app.get("/healthz", tags=["service"], summary="liveness and catalog size")
    def healthz():
        stats = service.stats()
        return {"status": "ok", "products": stats["products"], "model": stats["model"], "index_kind": stats["index_kind"],
                "version": vitrine.__version__}

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    def prometheus():
        return Response(metrics.render(service.stats()["products"]), media_type=metrics.content_type)

    static = resources.files("vitrine.serve").joinpath("static")

    @app.get("/", include_in_schema=False)
    def index_page():
        return HTMLResponse(static.joinpath("index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    return app


def image_url(product_id: str) -> str:
    from urllib.parse import quote

    return f"/products/{quote(product_id, safe='')}/image"


def app_from_environment() -> FastAPI:
    """For uvicorn workers (`--factory`): settings from VITRINE_SERVE_SETTINGS."""
    import os

    from vitrine.serve.settings import SETTINGS_ENV

    import torch

    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    # One intra-op thread per request by default: batch-1 encoding gains nothing from splitting ops across cores
    # (measured: p50 10.5 ms with one thread vs 15.2 ms with two), and concurrent requests fill the cores instead.
    torch.set_num_threads(settings.threads or 1)
    return create_app(settings)
