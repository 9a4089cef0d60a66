"""
A request class that refuses oversized bodies while they arrive.

Twisted Web buffers a whole request body (in memory or a temporary file)
before any resource sees it, so a limit checked only in the handler still
lets a client fill the disk. This request keeps nothing past the limit: it
notes a too-large C{Content-Length} or running total, discards the rest, and
answers 413 without routing the request.
"""

from __future__ import annotations

import json

from twisted.web import server

from scheduler0.api.errors import APIError


class BodyLimitedRequest(server.Request):
    """A L{server.Request} whose body may be at most C{max_body_bytes} long."""

    max_body_bytes: int = 4 * 1024 * 1024
    _body_too_large: bool = False
    _body_received: int = 0

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        if length is not None and length > self.max_body_bytes:
            self._body_too_large = True

    def handleContentChunk(self, data: bytes) -> None:
        if self._body_too_large:
            return
        self._body_received += len(data)
        if self._body_received > self.max_body_bytes:
            self._body_too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._body_too_large:
            super().process()
            return
        error = APIError(
            413,
            f"body: larger than the limit of {self.max_body_bytes} bytes",
            {"body": f"larger than {self.max_body_bytes} bytes"},
        )
        self.setResponseCode(413)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"connection", b"close")
        self.write(json.dumps(error.envelope(), separators=(",", ":")).encode("utf-8"))
        self.finish()


def body_limited_request(max_body_bytes: int) -> type[BodyLimitedRequest]:
    """A request class for C{Site(requestFactory=...)} with this body limit."""
    return type(
        "BodyLimitedRequest", (BodyLimitedRequest,), {"max_body_bytes": int(max_body_bytes)}
    )
