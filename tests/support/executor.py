"""
An L{HTTPExecutor} on a fake clock and a fake HTTP client whose POSTs the
test answers by hand, and a delivery to submit to it.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from scheduler0.delivery import Delivery, Outcome
from scheduler0.executor.http import HTTPExecutor


def delivery(n: int = 1, url: str = "http://receiver.test/hook", **changes: Any) -> Delivery:
    values: dict[str, Any] = {
        "execution_id": f"exec-{n}",
        "job_uuid": f"job-{n}",
        "project_uuid": "project-1",
        "name": f"job number {n}",
        "spec": "@every 1s",
        "data": {"n": n},
        "scheduled_at": "2026-03-01T12:00:00.000Z",
        "callback_url": url,
        "timeout_s": 30.0,
        "retry_max": 3,
    }
    values.update(changes)
    return Delivery(**values)


class FakeResponse:
    """An IResponse-like answer whose body arrives at once (or never, if C{stall})."""

    def __init__(
        self,
        code: int,
        headers: dict[str, str] | None = None,
        stall: bool = False,
        body: bytes = b'{"ok": true}',
    ):
        self.code = code
        self.headers = Headers({k: [v] for k, v in (headers or {}).items()})
        self.stall = stall
        self.body = body
        self.transport = StringTransport()

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        protocol.dataReceived(self.body)
        if not self.stall:
            protocol.connectionLost(Failure(ResponseDone()))


@attrs.define(eq=False)
class Request:
    """One POST the executor made, answered by hand."""

    url: str
    body: bytes
    headers: dict[str, str]
    kwargs: dict[str, Any]
    d: Deferred

    @property
    def items(self) -> list[dict[str, Any]]:
        return json.loads(self.body)

    @property
    def ids(self) -> list[str]:
        return [item["execution_id"] for item in self.items]

    def respond(self, code: int = 200, **kw: Any) -> FakeResponse:
        response = FakeResponse(code, **kw)
        self.d.callback(response)
        return response

    def fail(self, exc: BaseException) -> None:
        self.d.errback(Failure(exc))


@attrs.define(eq=False)
class FakeHTTPClient:
    """Record POSTs and keep them open until the test answers them."""

    requests: list[Request] = attrs.field(factory=list)
    peak: int = 0

    def post(self, url: str, data: bytes | None = None, headers: Any = None, **kwargs: Any):
        d: Deferred = Deferred()
        self.requests.append(Request(url, data or b"", dict(headers or {}), kwargs, d))
        self.peak = max(self.peak, self.open_count())
        return d

    def open_count(self) -> int:
        return sum(1 for r in self.requests if not r.d.called)

    def open(self) -> list[Request]:
        return [r for r in self.requests if not r.d.called]


class Harness:
    """An executor on a fake clock and client, collecting what it reports."""

    def __init__(self, **kwargs: Any) -> None:
        self.clock = Clock()
        self.client = FakeHTTPClient()
        self.outcomes: list[Outcome] = []
        self.started: list[tuple[str, float]] = []
        self.executor = HTTPExecutor(
            self.clock,
            self.client,
            self.outcomes.append,
            on_started=lambda d, at: self.started.append((d.execution_id, at)),
            **kwargs,
        )

    def submit(self, *deliveries: Delivery) -> None:
        for d in deliveries:
            self.executor.submit(d)

    def turn(self) -> None:
        """Let the reactor run one iteration at the current time."""
        self.clock.advance(0)

    def by_id(self) -> dict[str, Outcome]:
        return {o.delivery.execution_id: o for o in self.outcomes}
