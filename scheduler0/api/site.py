"""
The HTTP site the API is served by, and the limits it enforces while bytes
arrive, before any resource sees a request.

Twisted Web buffers a whole request body (in memory or a temporary file)
before any resource sees it, so a limit checked only in the handler still
lets a client fill the disk. L{BodyLimitedRequest} keeps nothing past the
limit: it notes a too-large C{Content-Length} or running total, discards the
rest, and answers 413 without routing the request.

Twisted's idle timeout restarts with every byte, so a client trickling a
request a byte at a time holds its connection for ever. L{DeadlineHTTPChannel}
gives each request a fixed time to arrive, and L{api_site} builds the Site
with both limits and the idle timeout.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from scheduler0.api.errors import APIError


class BodyLimitedRequest(server.Request):
    """A L{server.Request} whose body may be at most C{max_body_bytes} long."""

    max_body_bytes: int = 4 * 1024 * 1024
    # A peer's forwarded write carries the client's body plus the ids and
    # timestamps the API added (a 10,000-job array grows by about 3 MB).
    peer_max_body_bytes: int = 2 * 4 * 1024 * 1024 + 8 * 1024 * 1024
    _body_too_large: bool = False
    _body_received: int = 0
    _limit: int | None = None

    def _body_limit(self) -> int:
        if self._limit is None:
            # The request line is parsed by now; the Request learns its
            # path only once the body is in, so ask the channel.
            path = getattr(self.channel, "_path", b"") or b""
            peer = isinstance(path, bytes) and path.startswith(b"/peer/")
            self._limit = self.peer_max_body_bytes if peer else self.max_body_bytes
        return self._limit

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        if length is not None and length > self._body_limit():
            self._body_too_large = True

    def handleContentChunk(self, data: bytes) -> None:
        if self._body_too_large:
            return
        self._body_received += len(data)
        if self._body_received > self._body_limit():
            self._body_too_large = True
            # Twisted documents content as a binary file but leaves it typed None.
            content = cast(BinaryIO, self.content)
            content.seek(0)
            content.truncate()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._body_too_large:
            super().process()
            return
        limit = self._body_limit()
        error = APIError(
            413,
            f"body: larger than the limit of {limit} bytes",
            {"body": f"larger than {limit} bytes"},
        )
        self.setResponseCode(413)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"connection", b"close")
        self.write(json.dumps(error.envelope(), separators=(",", ":")).encode("utf-8"))
        self.finish()


def body_limited_request(max_body_bytes: int) -> type[BodyLimitedRequest]:
    """A request class for C{Site(requestFactory=...)} with this body limit."""
    return type(
        "BodyLimitedRequest",
        (BodyLimitedRequest,),
        {
            "max_body_bytes": int(max_body_bytes),
            "peer_max_body_bytes": 2 * int(max_body_bytes) + 8 * 1024 * 1024,
        },
    )


# The answer to a request that did not arrive in time. It is written straight
# to the transport: the request is incomplete, so there is no Request to
# answer through (often not even a request line).
_TIMEOUT_BODY = json.dumps(
    APIError(
        408,
        "request: not received in time; send the whole request promptly",
        {"request": "not received in time"},
        code="request_timeout",
    ).envelope(),
    separators=(",", ":"),
).encode("utf-8")
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n" % len(_TIMEOUT_BODY)
) + _TIMEOUT_BODY


class DeadlineHTTPChannel(http.HTTPChannel):
    """
    An L{http.HTTPChannel} that gives each request a fixed time to arrive.

    The channel's idle timeout restarts with every byte, so a client sending
    a byte every few seconds could hold a connection (and a server slot) for
    ever. Here a request must arrive whole, from its first byte to the end
    of its body, within C{request_timeout_s}; past that the client is
    answered 408 and the connection is closed. The time the server takes to
    answer does not count, and the idle timeout still closes keep-alive
    connections that wait between requests.
    """

    def __init__(self, request_timeout_s: float | None = None) -> None:
        super().__init__()
        self.request_timeout_s = request_timeout_s
        self._request_deadline: IDelayedCall | None = None
        self._closing = False

    def dataReceived(self, data: bytes) -> None:
        # Bytes that arrive while a request is being answered are buffered
        # and fed back through here once it is done, so the next request's
        # clock starts when it is read, not while the server was busy.
        if (
            data
            and self._request_deadline is None
            and not self._handlingRequest
            and self.request_timeout_s is not None
            and not self._closing
        ):
            self._request_deadline = self.callLater(self.request_timeout_s, self._request_timed_out)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        # Before handing the request on: answering it may at once start
        # reading the next pipelined one, which arms a new deadline.
        self._cancel_request_deadline()
        super().allContentReceived()

    def timeoutConnection(self) -> None:
        """
        The idle timeout: a keep-alive connection with no request in progress
        is closed quietly; one stuck half-way through a request is answered
        408 first.
        """
        if self._request_deadline is not None:
            self._request_timed_out()
            return
        self._log.debug("closing idle HTTP connection from {peer}", peer=self._peer())
        self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._cancel_request_deadline()
        super().connectionLost(reason)

    def _request_timed_out(self) -> None:
        self._cancel_request_deadline()
        if self._closing:
            return
        self._log.debug(
            "closing HTTP connection from {peer}: request not received within {limit} s",
            peer=self._peer(),
            limit=self.request_timeout_s,
        )
        # Nothing of the request in progress has been answered (answers
        # start only once a request is whole), so the 408 is its answer.
        # Connected: the deadline is cancelled when the connection is lost.
        assert self.transport is not None
        self.transport.write(_TIMEOUT_RESPONSE)
        self._close()

    def loseConnection(self) -> None:
        # Every close (ours, a 400 for a malformed request, the end of a
        # non-persistent answer) comes through here: no more deadlines.
        self._closing = True
        self._cancel_request_deadline()
        super().loseConnection()

    def _close(self) -> None:
        """
        Close, and abort if the client will not even read what was sent
        (also when a close started elsewhere has not finished by now).
        """
        self.setTimeout(None)
        if self.abortTimeout is not None and self._abortingCall is None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        if not self._closing:
            self.loseConnection()

    def _cancel_request_deadline(self) -> None:
        if self._request_deadline is not None:
            if self._request_deadline.active():
                self._request_deadline.cancel()
            self._request_deadline = None

    def _peer(self) -> str:
        try:
            assert self.transport is not None
            return str(self.transport.getPeer())
        except Exception:
            return "?"


class APISite(server.Site):
    """
    The API's L{server.Site}: requests get L{DeadlineHTTPChannel}'s time
    limit, idle connections close after C{timeout} seconds, and nothing is
    written to an access log (request lines are noise at this rate).
    """

    noisy = False

    def __init__(
        self,
        resource: IResource,
        *,
        clock: IReactorTime,
        request_factory: type[server.Request],
        request_timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        super().__init__(
            resource, requestFactory=request_factory, timeout=idle_timeout_s, reactor=clock
        )
        self.request_timeout_s = request_timeout_s

    def protocol(self) -> Any:  # type: ignore[override]
        # HTTPFactory wraps its channel in a proxy that can switch to HTTP/2
        # after TLS ALPN; the API offers no h2, so the channel serves alone.
        return DeadlineHTTPChannel(self.request_timeout_s)

    def startFactory(self) -> None:
        # No access log, so no log file and no once-a-second timestamp timer.
        pass

    def log(self, request: Any) -> None:
        pass


def api_site(
    resource: IResource,
    *,
    clock: IReactorTime,
    max_body_bytes: int,
    request_timeout_s: float,
    idle_timeout_s: float,
) -> APISite:
    """
    The Site the node serves its API with: bodies over C{max_body_bytes}
    answered 413, requests that take longer than C{request_timeout_s} to
    arrive answered 408 and cut, idle connections closed after
    C{idle_timeout_s}; timers run on C{clock}.
    """
    return APISite(
        resource,
        clock=clock,
        request_factory=body_limited_request(max_body_bytes),
        request_timeout_s=request_timeout_s,
        idle_timeout_s=idle_timeout_s,
    )
