"""
L{AsyncClient}: the same operations as L{Client}, answering Deferreds, on treq.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError
from twisted.internet.error import TimeoutError as TwistedTimeoutError
from twisted.internet.task import deferLater
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from scheduler0.client.operations import (
    NodeUnreachable,
    Operations,
    Request,
    auth_headers,
    parse_response,
    retry_delay,
)

_UNREACHABLE = (
    ConnectError,
    ConnectionLost,
    DNSLookupError,
    TwistedTimeoutError,
    ResponseFailed,
    ResponseNeverReceived,
    CancelledError,
    OSError,
)


def _reason(error: BaseException) -> str:
    if isinstance(error, CancelledError | TwistedTimeoutError):
        return "no answer in time"
    if isinstance(error, ConnectError) and "refused" in type(error).__name__.lower():
        return "connection refused (is it running?)"
    return str(error) or type(error).__name__


class AsyncClient(Operations):
    """
    The whole Scheduler0 API for Twisted code: every method of L{Client},
    returning a Deferred of the answer's C{data} (C{iter_*} return async
    iterators). C{http} is a treq C{HTTPClient} (inject one in tests, e.g.
    C{treq.testing.StubTreq}); C{reactor} times requests and retry back-off.
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        retries: int = 0,
        reactor: Any = None,
        http: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent

            http = HTTPClient(Agent(reactor))
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.reactor = reactor
        self.http = http
        self._auth = auth_headers(api_key, api_secret, username, password)

    def __repr__(self) -> str:
        return f"<AsyncClient {self.endpoint}>"  # never the secrets

    async def _send_once(self, request: Request) -> Any:
        try:
            response = await self.http.request(
                request.method,
                request.url(self.endpoint),
                headers=request.headers(self._auth),
                data=request.body_bytes(),
                timeout=self.timeout,
                reactor=self.reactor,
            )
            raw = await response.content()
        except _UNREACHABLE as error:
            raise NodeUnreachable(self.endpoint, _reason(error)) from None
        headers = {
            name.decode("latin-1"): values[-1].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders()
        }
        return parse_response(request, response.code, headers, raw)

    async def _perform_async(self, request: Request) -> Any:
        attempt = 0
        while True:
            try:
                return await self._send_once(request)
            except Exception as error:
                delay = retry_delay(request, error, attempt) if attempt < self.retries else None
                if delay is None:
                    raise
            await deferLater(self.reactor, delay)
            attempt += 1

    def _perform(self, request: Request) -> Deferred:
        return Deferred.fromCoroutine(self._perform_async(request))

    async def _iterate(self, request: Request) -> AsyncIterator[Any]:
        while True:
            page = await self._perform_async(request)
            for item in page["items"]:
                yield item
            if not page.get("next_cursor"):
                return
            request = request.next_page(page["next_cursor"])
