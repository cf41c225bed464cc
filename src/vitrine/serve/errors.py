"""Every refusal as JSON: `{"error": {"status", "message"}}`, never an HTML page or a stack trace; an invalid request is a
400, and a write that found the disk full a 507 (nothing of it was made)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from vitrine.disk import is_disk_full
from vitrine.index.store import StoreUnavailable
from vitrine.serve.bodies import validation_message
from vitrine.serve.service import ServiceError

log = logging.getLogger("vitrine.serve")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away; it reaches the logs and metrics only
INSUFFICIENT_STORAGE = 507
DISK_FULL_MESSAGE = (
    "insufficient storage: the server's disk is full; the write was not made and the catalog is as before"
)
INTERNAL_MESSAGE = "internal error; the server log has the details"
SERVICE_UNAVAILABLE = 503
RETRY_AFTER_S = 5  # a Milvus server restarting is back in seconds; loading its collection again takes up to a minute


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        return error_response(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(
            400, validation_message(list(exc.errors()), skip=1)
        )  # the contract: every invalid request is a 400

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect):
        # the client hung up while sending its body (a closed browser tab, a load generator stopping): nobody reads
        # the answer, and it is no server error; one line at debug, not a traceback for every one of them
        log.debug("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable):
        # the index's server is down, restarting or loading: not this service's fault, and the same request may succeed
        # shortly (the store reconnects by itself); a write so refused was not acknowledged
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError):
        if is_disk_full(exc):  # the message names the file in the log only: server paths stay on the server
            log.error("%s %s: %s", request.method, request.url.path, exc)
            return error_response(INSUFFICIENT_STORAGE, DISK_FULL_MESSAGE)
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, INTERNAL_MESSAGE)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, INTERNAL_MESSAGE)
