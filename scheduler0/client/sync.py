"""
L{Client}: the blocking Python client, on the standard library alone.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from scheduler0.client.operations import (
    NodeUnreachable,
    Operations,
    Request,
    auth_headers,
    parse_response,
    retry_delay,
)

# (method, url, headers, body, timeout) -> (status, response headers, body)
Transport = Callable[
    [str, str, Mapping[str, str], "bytes | None", float], "tuple[int, Mapping[str, str], bytes]"
]


def urllib_transport(
    method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
) -> tuple[int, Mapping[str, str], bytes]:
    """
    One blocking HTTP exchange with urllib. Error statuses are answers, not
    exceptions; transport failures raise C{OSError}.
    """
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, OSError):
            raise reason from None
        raise OSError(str(reason)) from None


def _reason(error: OSError) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is it running?)"
    return error.strerror or str(error) or type(error).__name__


class Client(Operations):
    """
    The whole Scheduler0 API as blocking calls returning plain dicts (the
    answer's C{data}). Errors raise L{APIError}; no answer at all raises
    L{NodeUnreachable} (a C{ConnectionError}). With C{retries} > 0, reads and
    writes under an Idempotency-Key are sent again after 429, 503 or a lost
    connection, with back-off (C{Retry-After} honoured).

    Credentials: C{api_key}+C{api_secret} (a client credential) or
    C{username}+C{password} (the admin credentials of C{.scheduler0}).
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
        transport: Transport | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._auth = auth_headers(api_key, api_secret, username, password)
        self._transport = transport or urllib_transport
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"<Client {self.endpoint}>"  # never the secrets

    def _send_once(self, request: Request) -> Any:
        try:
            status, headers, raw = self._transport(
                request.method,
                request.url(self.endpoint),
                request.headers(self._auth),
                request.body_bytes(),
                self.timeout,
            )
        except OSError as error:
            raise NodeUnreachable(self.endpoint, _reason(error)) from None
        return parse_response(request, status, headers, raw)

    def _perform(self, request: Request) -> Any:
        attempt = 0
        while True:
            try:
                return self._send_once(request)
            except Exception as error:
                delay = retry_delay(request, error, attempt) if attempt < self.retries else None
                if delay is None:
                    raise
            self._sleep(delay)
            attempt += 1

    def _iterate(self, request: Request) -> Iterator[Any]:
        while True:
            page = self._perform(request)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            request = request.next_page(page["next_cursor"])
