"""Every refusal as JSON, `{"error": {"status", "code", "message"}}`, never an HTML page or a stack trace.

One table: a `vitrine.errors` class answers with its own status and code (a write that found the disk full is a 507
and nothing of it was made; a store whose server is down a 503 with Retry-After); the framework's own refusals are
mapped by status below; anything else is a bug, logged with its traceback and answered as a 500 `internal`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from vitrine.disk import is_disk_full
from vitrine.errors import DiskFull, InvalidRequest, Unauthorized, Unavailable, VitrineError
from vitrine.serve.bodies import validation_message

log = logging.getLogger("vitrine.serve")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away; it reaches the logs and metrics only
DISK_FULL_MESSAGE = (
    "insufficient storage: the server's disk is full; the write was not made and the catalog is as before"
)
INTERNAL_CODE = "internal"
INTERNAL_MESSAGE = "internal error; the server log has the details"
RETRY_AFTER_S = 5  # a Milvus server restarting is back in seconds; loading its collection again takes up to a minute
# The framework's refusals (routing, auth, methods, body limits), by status: the code a client matches on.
HTTP_CODES = {
    400: InvalidRequest.code, 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    413: "too_large", 415: "unsupported_media_type", 503: "unavailable",
}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "code": code, "message": message}}, status_code=status, headers=headers
    )


def answer(exc: VitrineError, request: Request) -> JSONResponse:
    """The response to a vitrine error: its status and code; server-side detail stays in the log."""
    if isinstance(exc, DiskFull):  # the message names a server path: the log has it, the client a plain sentence
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(exc.status, exc.code, DISK_FULL_MESSAGE)
    if isinstance(exc, Unavailable):  # the index's server is down or loading: the same request may succeed shortly
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(exc.status, exc.code, exc.message, headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, Unauthorized):
        return error_response(exc.status, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"})
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(exc.status, exc.code, exc.message)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VitrineError)
    async def _vitrine_error(request: Request, exc: VitrineError):
        return answer(exc, request)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        # the contract: every invalid request is a 400 invalid_request
        return error_response(400, InvalidRequest.code, validation_message(list(exc.errors()), skip=1))

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect):
        # the client hung up while sending its body (a closed browser tab, a load generator stopping): nobody reads
        # the answer, and it is no server error; one line at debug, not a traceback for every one of them
        log.debug("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError):
        if is_disk_full(exc):  # a bare ENOSPC from a library that does not know vitrine's errors
            return answer(DiskFull(str(exc)), request)
        return _internal(request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _internal(request)


def _internal(request: Request) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, INTERNAL_CODE, INTERNAL_MESSAGE)
