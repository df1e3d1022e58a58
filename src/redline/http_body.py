"""A cap on the size of a request body, for redline's two HTTP servers (``redline serve``, the feedback app).

Pure ASGI, no imports: ``declared_length`` reads a request's Content-Length (the app's login form is read only
when it says the form is small), and ``BodyLimit`` holds a whole server's bodies to a limit, from the
Content-Length before reading and by counting the bytes of a chunked body as they come, so no client can have
gigabytes read into memory.
"""

from __future__ import annotations

from typing import Any, Callable


def declared_length(scope: dict) -> int | None:
    """The request's Content-Length in bytes; None if it sent none (a chunked body) or one that is not a number."""
    value = dict(scope.get("headers") or ()).get(b"content-length", b"").decode("latin-1").strip()
    return int(value) if value.isascii() and value.isdigit() else None


class BodyLimit:
    """ASGI middleware: a request body of more than ``limit`` bytes gets ``refusal(limit)`` (an ASGI response).

    A declared Content-Length over the limit is refused before a byte is read; a body without one is read up to
    the limit and refused as soon as it passes it. A body within the limit is read whole here and handed on as
    it came (the app would read it whole anyway), then ``receive`` goes on to the client's later messages (a
    disconnect).
    """

    def __init__(self, app, limit: int, refusal: Callable[[int], Any]):
        self.app, self.limit, self.refusal = app, limit, refusal

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = declared_length(scope)
        if size is not None and size > self.limit:
            return await self.refusal(self.limit)(scope, receive, send)
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: the app meets that as it would
                break
            total += len(message.get("body", b""))
            if total > self.limit:
                return await self.refusal(self.limit)(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)
