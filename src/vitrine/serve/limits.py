"""Request limits enforced before a route runs: the body size (Content-Length, or counted while it streams)."""

from __future__ import annotations

from vitrine.errors import TooLarge
from vitrine.serve.errors import error_response

MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries on top of the image itself


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
            # Once the body went over the limit, whatever the app answers (it may turn the error into a 400) becomes the
            # 413.
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
        except* BodyLimit.TooLarge:  # raised bare, or grouped by a task group of the middleware stack
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        response = error_response(413, TooLarge.code, f"request body is over the limit of {self.limit} bytes")
        await response({"type": "http"}, None, send)
