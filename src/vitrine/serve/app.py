"""The FastAPI app: search, tagging and product endpoints, the web UI at `/`, OpenAPI at `/docs`."""

from __future__ import annotations

import os
import time
from importlib import resources
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi import Query as QueryParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

import vitrine
from vitrine.errors import Forbidden, InvalidRequest, Unauthorized, VitrineError
from vitrine.search import Query
from vitrine.search.answer import answer, product_view
from vitrine.serve import bodies
from vitrine.serve.bodies import (
    CatalogFacets,
    EmbedForm,
    EmbedJSON,
    EmbedResult,
    Mode,
    Product,
    ProductForm,
    ProductJSON,
    ProductPage,
    SearchBatchJSON,
    SearchBatchResult,
    SearchForm,
    SearchJSON,
    SearchResult,
    TagForm,
    TagJSON,
    TagResult,
    UpsertResult,
    error_responses,
    load_yaml,
    read_body,
    request_body,
)
from vitrine.serve.errors import install_error_handlers
from vitrine.serve.limits import MULTIPART_OVERHEAD, BodyLimit
from vitrine.serve.mapping import RequestMapper
from vitrine.serve.metrics import Metrics, ObserveRequests
from vitrine.serve.requests import clean_text, image_url
from vitrine.serve.server import server_stack
from vitrine.serve.service import SearchService
from vitrine.serve.settings import ServeSettings
from vitrine.serve.tokens import Tokens

MAX_PAGE_LIMIT = 1000  # GET /products: products a page
MAX_PAGE_OFFSET = 10_000_000


def create_app(settings: ServeSettings, service: SearchService | None = None) -> FastAPI:
    service = service or SearchService(settings)
    metrics = Metrics()
    # FastAPIOffline serves Swagger UI and ReDoc from the package, so /docs works with no network (no CDN).
    app = FastAPIOffline(
        title="vitrine",
        version=vitrine.__version__,
        description="Fashion search (text, image, image + modification), open-vocabulary tagging and a product "
        "catalog.",
    )
    app.state.service, app.state.settings = service, settings

    install_error_handlers(app)

    app.add_middleware(ObserveRequests, metrics=metrics)

    def respond(result: dict):
        """A search answer: bytes straight from orjson (no per-hit response-model round trip)."""
        return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    # ---- auth ----------------------------------------------------------------------------------------
    tokens = Tokens(settings.read_token, settings.write_token, settings.token_file)

    def _check_token(request: Request, role: str) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
        if not tokens.current().accepts(role, token.strip()):
            raise Forbidden("the bearer token is not valid for this endpoint")

    def can_read(request: Request) -> None:
        if tokens.current().read:
            _check_token(request, "read")

    def can_write(request: Request) -> None:
        if not tokens.current().write:
            raise Forbidden(
                "writes are disabled: start the server with a write token (VITRINE_WRITE_TOKEN, --write-token or a "
                "token file)",
                code="writes_disabled",
            )
        _check_token(request, "write")

    mapper = RequestMapper(settings, service)  # a request's parts -> a checked Query (vitrine.serve.mapping)
    picture_of, make_query, form_filters, query_from = (
        mapper.picture, mapper.query, mapper.form_filters, mapper.from_body,
    )

    def result_view(query: Query, ranked, took_ms: float) -> dict:
        return answer(query, ranked, took_ms, lambda item: {"image_url": image_url(item)})

    def run_search(query: Query) -> dict:
        start = time.perf_counter()
        ranked = service.rank(query)
        return result_view(query, ranked, round((time.perf_counter() - start) * 1000, 2))

    async def run_text_search(query: Query) -> dict:
        """A text query: encoded while the event loop waits (no thread held), then ranked on the loop (about a
        millisecond: less than a hop to a thread and back, measured against a pool thread and a dedicated ranking
        thread, both slower under load), or in a pool thread while a writer holds the index."""
        start = time.perf_counter()
        vector = await service.text_vector(query.text)
        ranked = service.rank(query, vector, blocking=False) or await run_in_threadpool(service.rank, query, vector)
        return result_view(query, ranked, round((time.perf_counter() - start) * 1000, 2))

    def checked_batch(items: list, what: str) -> None:
        if not 1 <= len(items) <= settings.max_batch_queries:
            raise InvalidRequest(f"a batch holds 1 to {settings.max_batch_queries} {what}, got {len(items)}")

    def each(make, inputs: list, on_error: str, where: str) -> list:
        """`make(input, where)` for each input: its value, or (on_error "report") its VitrineError in its place."""
        out = []
        for i, item in enumerate(inputs):
            try:
                out.append(make(item, f"{where}[{i}]: "))
            except VitrineError as exc:
                if on_error == "fail":
                    raise
                out.append(exc)
        return out

    def item_error(exc: VitrineError) -> dict:
        return exc.body()

    def run_batch(body: SearchBatchJSON) -> dict:
        checked_batch(body.queries, "queries")
        parsed = each(query_from, body.queries, body.on_error, "queries")
        start = time.perf_counter()
        good = [q for q in parsed if not isinstance(q, VitrineError)]
        ranked = iter(service.rank_many(good, per_item=body.on_error == "report") if good else [])
        took = round((time.perf_counter() - start) * 1000, 2)
        results = []
        for i, query in enumerate(parsed):
            if isinstance(query, VitrineError):  # refused as parsed: its message names its place already
                results.append(item_error(query))
                continue
            outcome = next(ranked)
            if isinstance(outcome, VitrineError):  # refused as ranked (a filter no product matches): named the same way
                outcome = outcome.prefixed(f"queries[{i}]: ")
            results.append(
                item_error(outcome) if isinstance(outcome, VitrineError) else result_view(query, outcome, took)
            )
        return {
            "took_ms": took, "errors": sum(isinstance(r, dict) and "error" in r for r in results), "results": results,
        }

    def run_embed(body: EmbedJSON | EmbedForm) -> dict:
        if isinstance(body, EmbedForm):
            texts, images, urls = body.text, body.image, body.image_url
        else:
            texts, images, urls = body.texts, body.images, body.image_urls
        checked_batch([*texts, *images, *urls], "inputs (texts, images and image_urls together)")

        def text_of(text, where):
            cleaned = clean_text(f"{where}text", text, settings)
            if cleaned is None:
                raise InvalidRequest(f"{where}the text is empty")
            return cleaned

        def picture(image, url, where):
            found = picture_of(image or None, url or None, where)
            if found is None:
                raise InvalidRequest(f"{where}the {'image' if url is None else 'image_url'} is empty")
            return found

        start = time.perf_counter()
        texts = each(text_of, texts, body.on_error, "texts")
        pictures = each(lambda image, where: picture(image, None, where), images, body.on_error, "images")
        pictures += each(lambda url, where: picture(None, url, where), urls, body.on_error, "image_urls")
        text_vectors, image_vectors = service.embed(
            [t for t in texts if not isinstance(t, VitrineError)],
            [p for p in pictures if not isinstance(p, VitrineError)],
        )

        def placed(inputs: list, vectors) -> list[dict]:
            vectors = iter(vectors)
            return [
                item_error(x) if isinstance(x, VitrineError) else {"vector": next(vectors).tolist()} for x in inputs
            ]

        texts_out, pictures_out = placed(texts, text_vectors), placed(pictures, image_vectors)
        return {
            "model": service.model.name, "runtime": getattr(service.model, "runtime", "torch"),
            "dim": int(service.model.embed_dim), "took_ms": round((time.perf_counter() - start) * 1000, 2),
            "errors": sum("error" in r for r in texts_out + pictures_out), "texts": texts_out,
            "images": pictures_out[: len(images)], "image_urls": pictures_out[len(images) :],
        }

    def attributes_of(text: str | dict | None) -> dict[str, str | None]:
        """An upsert's attributes (a JSON object, or its text from a form) as attribute -> text value."""
        parsed = text if isinstance(text, dict) else {}
        if isinstance(text, str) and text.strip():
            try:
                parsed = load_yaml(text, "attributes")
            except VitrineError as exc:
                if "surrogate" in exc.message:
                    raise
                parsed = None
        if not isinstance(parsed, dict) or not all(
            isinstance(v, (str, int, float)) or v is None for v in parsed.values()
        ):
            raise InvalidRequest(
                'attributes must be a JSON object of attribute -> text value, e.g. {"gender": "Women"}'
            )
        return {str(k): None if v is None else str(v) for k, v in parsed.items()}

    def run_upsert(body: ProductJSON | ProductForm) -> tuple[dict, bool]:
        picture = picture_of(body.image, body.image_url)
        if picture is None:
            raise InvalidRequest(
                "give the product image: an upload or base64 'image', or a catalog 'image_url' to copy"
            )
        title = clean_text("title", body.title, settings)
        row, created = service.upsert(
            body.id, title, attributes_of(body.attributes), picture, new_attributes=body.new_attributes
        )
        return {**product_view(row), "image_url": image_url(body.id), "created": created}, created

    def run_tag(body: TagJSON | TagForm) -> dict:
        from vitrine.tagging.vocabulary import vocabulary_from_dict

        picture = picture_of(body.image, getattr(body, "image_url", None))
        if picture is None:
            raise InvalidRequest("give the image to tag, as base64 'image' or a catalog 'image_url'")
        vocabulary = body.vocabulary
        parsed = None
        if isinstance(vocabulary, str) and vocabulary.strip():
            vocabulary = load_yaml(vocabulary, "vocabulary")
        if vocabulary not in (None, "") and not (isinstance(vocabulary, str) and not vocabulary.strip()):
            parsed = vocabulary_from_dict(vocabulary, origin="vocabulary")
        tags = service.tag(picture, parsed)
        return {"tags": {name: t.to_dict() for name, t in tags.items()}}

    # ---- endpoints -----------------------------------------------------------------------------------
    read_errors = error_responses(400, 401, 403, 404, 413, 415)
    # 503: the index's Milvus server is down or restarting
    search_errors = error_responses(400, 401, 403, 404, 413, 415, 503)

    @app.post(
        "/search", tags=["search"], dependencies=[Depends(can_read)], response_model=SearchResult,
        responses=search_errors, summary="search by text, image, or image + modification (JSON or form)",
        openapi_extra=request_body(SearchJSON, SearchForm),
    )
    async def search(request: Request):
        body = await read_body(request, SearchJSON, SearchForm)
        if body.image is None and not body.image_url:  # a text query: nothing to decode, so checked here
            return respond(await run_text_search(query_from(body)))
        return respond(await run_in_threadpool(lambda: run_search(query_from(body))))

    @app.post(
        "/search/batch", tags=["search"], dependencies=[Depends(can_read)], response_model=SearchBatchResult,
        responses=search_errors, summary="several searches in one request, encoded together (JSON)",
        openapi_extra=request_body(SearchBatchJSON, None),
    )
    async def search_batch(request: Request):
        return respond(await run_in_threadpool(run_batch, await read_body(request, SearchBatchJSON, None)))

    @app.get(
        "/search", tags=["search"], dependencies=[Depends(can_read)], response_model=SearchResult,
        responses=search_errors, summary="search by text or by a catalog product's image",
    )
    def search_get(
        text: str | None = None, modification: str | None = None, image_url: str | None = None, k: int = 10,
        filter: Annotated[list[str] | None, QueryParam()] = None, mode: Mode | None = None, soft_filters: bool = True,
        exclude_reference: bool = True, min_score: float | None = None, offset: int = 0,
    ):
        ranking = {
            "mode": mode, "soft_filters": soft_filters, "exclude_reference": exclude_reference, "min_score": min_score,
            "offset": offset,
        }
        return respond(
            run_search(make_query(text, modification, None, image_url, k, form_filters(filter or []), ranking=ranking))
        )

    @app.post(
        "/tag", tags=["tagging"], dependencies=[Depends(can_read)], response_model=TagResult, responses=read_errors,
        summary="tag an image with open-vocabulary attributes (JSON or form)",
        openapi_extra=request_body(TagJSON, TagForm),
    )
    async def tag(request: Request):
        body = await read_body(request, TagJSON, TagForm)
        return await run_in_threadpool(run_tag, body)

    @app.get(
        "/attributes",
        tags=["catalog"],
        dependencies=[Depends(can_read)],
        responses=error_responses(400, 401, 403, 404, 503),
        summary="attribute fields and their most common values (one field's, or those starting with a prefix: "
        "type-ahead)",
    )
    def attributes(per_field: int = 30, field: str | None = None, prefix: str | None = None):
        values = service.attribute_values(max(1, min(per_field, 5000)), field, prefix)
        return {"fields": {name: [{"value": v, "count": n} for v, n in rows] for name, rows in values.items()}}

    @app.get(
        "/schema", tags=["catalog"], dependencies=[Depends(can_read)], response_model=CatalogFacets,
        responses=error_responses(401, 403, 503),
        summary="the catalog's columns and the fields to filter by (the UI's chips)",
    )
    def catalog_schema():
        return service.facets()

    @app.get(
        "/products", tags=["catalog"], dependencies=[Depends(can_read)], response_model=ProductPage,
        responses=error_responses(400, 401, 403, 503),
        summary="page through the catalog (in id order), optionally filtered",
    )
    def list_products(
        offset: Annotated[int, QueryParam(ge=0, le=MAX_PAGE_OFFSET)] = 0,
        limit: Annotated[int, QueryParam(ge=1, le=MAX_PAGE_LIMIT)] = 50,
        filter: Annotated[list[str] | None, QueryParam(description="field=value; repeat for more")] = None,
    ):
        total, rows = service.page(offset, limit, form_filters(filter or []))
        products = [{**product_view(row), "image_url": image_url(row["id"])} for row in rows]
        return respond({"total": total, "offset": offset, "limit": limit, "products": products})

    @app.post(
        "/embed", tags=["search"], dependencies=[Depends(can_read)], response_model=EmbedResult, responses=read_errors,
        summary="unit-norm vectors of texts and images (JSON or form), from the index's model",
        openapi_extra=request_body(EmbedJSON, EmbedForm),
    )
    async def embed(request: Request):
        body = await read_body(request, EmbedJSON, EmbedForm, max_files=settings.max_batch_queries)
        return respond(await run_in_threadpool(run_embed, body))

    @app.get(
        "/products/{product_id}", tags=["catalog"], dependencies=[Depends(can_read)], response_model=Product,
        responses=error_responses(401, 403, 404, 503), summary="one product",
    )
    def get_product(product_id: str):
        return {**product_view(service.product(product_id)), "image_url": image_url(product_id)}

    @app.get(
        "/products/{product_id}/image",
        tags=["catalog"],
        dependencies=[Depends(can_read)],
        summary="a product's image (JPEG)",
        responses={
            200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
            **error_responses(401, 403, 404, 503),
        },
        response_class=Response,
    )
    def get_product_image(product_id: str):
        return Response(service.image_bytes(product_id), media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @app.post(
        "/products",
        tags=["catalog"],
        dependencies=[Depends(can_write)],
        status_code=201,
        response_model=UpsertResult,
        responses={
            200: {"model": UpsertResult, "description": "replaced"},
            **error_responses(400, 401, 403, 404, 413, 415, 503, 507),
        },
        summary="add or replace a product (JSON or form; needs the write token)",
        openapi_extra=request_body(ProductJSON, ProductForm),
    )
    async def upsert_product(request: Request):
        body = await read_body(request, ProductJSON, ProductForm)
        view, created = await run_in_threadpool(run_upsert, body)
        return Response(orjson.dumps(view), status_code=201 if created else 200, media_type="application/json")

    @app.delete(
        "/products/{product_id}", tags=["catalog"], dependencies=[Depends(can_write)], status_code=204,
        responses=error_responses(401, 403, 404, 503, 507), summary="delete a product (needs the write token)",
    )
    def delete_product(product_id: str):
        service.delete(product_id)
        return Response(status_code=204)

    @app.get(
        "/healthz", tags=["service"], summary="liveness and catalog size", responses=error_responses(401, 403, 503)
    )
    def healthz():
        stats = service.stats()
        return {
            "status": "ok", "products": stats["products"], "model": stats["model"], "index_kind": stats["index_kind"],
            "runtime": getattr(service.model, "runtime", "torch"), "version": vitrine.__version__,
            "server": server_stack(),
            "worker": {**getattr(app.state, "worker", {"pid": os.getpid()}), "rss_mib": round(_rss_mib(), 1)},
        }

    @app.get(
        "/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus():
        return Response(metrics.render(service.stats()["products"]), media_type=metrics.content_type)

    static = resources.files("vitrine.serve").joinpath("static")

    @app.get("/", include_in_schema=False)
    def index_page():
        return HTMLResponse(static.joinpath("index.html").read_text(encoding="utf-8"))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(
            static.joinpath("favicon.svg").read_bytes(), media_type="image/svg+xml",
            headers={"Cache-Control": "max-age=86400"},
        )

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    # JSON carries an image as base64: 4/3 of its bytes
    app.add_middleware(BodyLimit, limit=(settings.max_upload_bytes * 4) // 3 + MULTIPART_OVERHEAD)
    if settings.cors_origins:  # off unless configured: a browser page on another origin cannot call the API
        origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"], max_age=600,
        )

    plain_openapi = app.openapi

    def openapi() -> dict:
        return bodies.add_components(plain_openapi())

    app.openapi = openapi
    return app


def app_from_environment() -> FastAPI:
    """For uvicorn workers (`--factory`): settings from VITRINE_SERVE_SETTINGS."""
    import gc
    import os
    import sys

    import torch

    from vitrine.serve.settings import SETTINGS_ENV

    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    # One intra-op thread per request by default: batch-1 encoding gains nothing from splitting ops across cores
    # (measured: p50 10.5 ms with one thread vs 15.2 ms with two), and concurrent requests fill the cores instead.
    torch.set_num_threads(settings.threads or 1)
    start = time.perf_counter()
    service = SearchService(settings)
    # Before the worker answers anything (/healthz included): the models, the Combiner, the tagging model, the
    # calibration, one pass of each. A first query is then as fast as any other.
    service.warm()
    app = create_app(settings, service)
    # What start-up made (models, sessions, the catalog's rows) lives as long as the worker: collected once now and
    # frozen out of the collector's reach, a request never pays a full collection of it (seen: 200 ms on a first query)
    gc.collect()
    gc.freeze()
    app.state.worker = {
        "pid": os.getpid(), "ready_in_s": round(time.perf_counter() - start, 2),
        "rss_mib_at_ready": round(_rss_mib(), 1),
    }
    print(
        f"vitrine worker {os.getpid()}: ready in {app.state.worker['ready_in_s']} s, "
        f"{app.state.worker['rss_mib_at_ready']} MiB resident",
        file=sys.stderr,
        flush=True,
    )
    return app


def _rss_mib() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0
