"""The FastAPI app: search, tagging and product endpoints, the web UI at `/`, OpenAPI at `/docs`."""
from __future__ import annotations

import hmac
import time
from importlib import resources
from typing import Annotated

import yaml
from fastapi import Depends, FastAPI, File, Form, Query as QueryParam, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

import vitrine
from vitrine.search import parse_filters
from vitrine.serve.errors import install_error_handlers
from vitrine.serve.limits import MULTIPART_OVERHEAD, BodyLimit
from vitrine.serve.metrics import Metrics
from vitrine.serve.requests import checked_k, clean_text, image_url, product_id_from_image_url, read_image
from vitrine.serve.service import Query, SearchService, ServiceError, product_view
from vitrine.serve.settings import ServeSettings


def create_app(settings: ServeSettings, service: SearchService | None = None) -> FastAPI:
    service = service or SearchService(settings)
    metrics = Metrics()
    # FastAPIOffline serves Swagger UI and ReDoc from the package, so /docs works with no network (no CDN).
    app = FastAPIOffline(title="vitrine", version=vitrine.__version__,
                         description="Fashion search (text, image, image + modification), open-vocabulary tagging and a product catalog.")
    app.state.service, app.state.settings = service, settings

    install_error_handlers(app)

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

    def hit_view(rank: int, hit) -> dict:
        return {"rank": rank, "score": round(hit.score, 4), **product_view(hit.metadata), "image_url": image_url(hit.id)}

    def run_search(text, modification, image, image_url_, k, filters) -> dict:
        text, modification = clean_text("text", text, settings), clean_text("modification", modification, settings)
        picture = None
        if image is not None and image_url_:
            raise ServiceError("give an image upload or an image_url, not both")
        if image is not None:
            picture = read_image(image, settings)
        elif image_url_:
            picture = service.product_image(product_id_from_image_url(image_url_))
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
        query = Query(text=text, image=picture, modification=modification, k=checked_k(k, settings), filters=parsed)
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
        tags = service.tag(read_image(image, settings), parsed)
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
        title = clean_text("title", title, settings)
        row, created = service.upsert(id, title, parsed, read_image(image, settings))
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
