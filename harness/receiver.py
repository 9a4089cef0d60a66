"""
A real HTTP callback receiver for end-to-end tests and benchmarks: it
listens on 127.0.0.1, answers every POST with a chosen status, and records
each delivery with its arrival time.

Run as a program it is a demo receiver to point jobs at while trying
Scheduler0 out: it answers 200 and prints one line per execution.

    python -m harness.receiver --port 8000
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site


@attrs.frozen
class Arrival:
    """One execution as a callback POST delivered it."""

    at: float
    path: str
    headers: dict[str, str]
    item: dict[str, Any]
    # The whole POST body the item came in (to check its signature).
    body: bytes = b""


@attrs.define(eq=False)
class CallbackReceiver(Resource):
    """Record every callback item; C{status_for(path)} picks the answer."""

    clock: Any
    status_for: Callable[[str], int] = lambda path: 200
    # Seconds to hold the answer to a POST to this path (a slow endpoint).
    delay_for: Callable[[str], float] = lambda path: 0.0
    # The body of the answer to a POST to this path.
    body_for: Callable[[str], bytes] = lambda path: b'{"ok": true}'
    arrivals: list[Arrival] = attrs.field(factory=list)
    # Called with each arrival; with keep=False arrivals are not kept (the
    # long-running demo receiver of `python -m harness.receiver`).
    on_arrival: Callable[[Arrival], None] | None = None
    keep: bool = True
    posts: int = 0
    _waiters: list[tuple[Callable[[], bool], Deferred]] = attrs.field(factory=list)
    # The answers held back by delay_for, cancelled by stop().
    _held: set[Any] = attrs.field(factory=set)
    _port: Any = None
    _site: Any = None
    isLeaf = True

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render_POST(self, request: Any) -> bytes | int:
        now = self.clock.seconds()
        path = request.path.decode("utf-8", "replace")
        headers = {
            k.decode("latin-1").lower(): v[0].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.posts += 1
        raw = request.content.read()
        body = json.loads(raw or b"null")
        for item in body if isinstance(body, list) else [body]:
            arrival = Arrival(now, path, headers, item, raw)
            if self.keep:
                self.arrivals.append(arrival)
            if self.on_arrival is not None:
                self.on_arrival(arrival)
        self._wake()
        request.setResponseCode(self.status_for(path))
        request.setHeader(b"content-type", b"application/json")
        delay = self.delay_for(path)
        if delay > 0:
            answer = self.body_for(path)

            def finish() -> None:
                self._held.discard(call)
                if not request.finished and not request._disconnected:
                    request.write(answer)
                    request.finish()

            call = self.clock.callLater(delay, finish)
            self._held.add(call)
            return NOT_DONE_YET
        return self.body_for(path)

    def wait_until(self, predicate: Callable[[], bool]) -> Deferred:
        """A Deferred that fires once C{predicate()} is true after a delivery."""
        d: Deferred = Deferred()
        if predicate():
            d.callback(None)
        else:
            self._waiters.append((predicate, d))
        return d

    def _wake(self) -> None:
        still = []
        for predicate, d in self._waiters:
            if predicate():
                d.callback(None)
            else:
                still.append((predicate, d))
        self._waiters = still

    async def listen(self, reactor: Any, port: int = 0) -> int:
        """Listen on 127.0.0.1 and return the port."""
        site = _TrackingSite(self, requestFactory=_InMemoryRequest, timeout=None)
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        self._site = site
        self._port = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(site)
        return int(self._port.getHost().port)

    async def stop(self) -> None:
        """Stop listening, drop every open connection and every answer still held back."""
        for call in list(self._held):
            if call.active():
                call.cancel()
        self._held.clear()
        await self._port.stopListening()
        await self._site.close_connections()


class _InMemoryRequest(Request):
    """Keep every body in memory (Twisted spools bodies over 100 kB to disk)."""

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()  # type: ignore[assignment]  # Twisted declares it None


class _TrackingSite(Site):
    """A Site that can close the connections it accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open: dict[Any, Deferred] = {}

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        lost: Deferred = Deferred()
        self.open[protocol] = lost
        original = protocol.connectionLost

        def connection_lost(reason: Any) -> None:
            original(reason)
            self.open.pop(protocol, None)
            lost.callback(None)

        protocol.connectionLost = connection_lost
        return protocol

    async def close_connections(self) -> None:
        waiting = list(self.open.items())
        for protocol, _ in waiting:
            # Twisted's HTTP factory hands out a wrapper that keeps the
            # transport on the channel it wraps.
            transport = getattr(protocol, "transport", None)
            if transport is None:
                transport = getattr(getattr(protocol, "_channel", None), "transport", None)
            if transport is not None:
                transport.abortConnection()
        for _, lost in waiting:
            await lost


def describe(arrival: Arrival) -> str:
    """One line about one delivered execution: when, where, which job, how late."""
    from scheduler0.timeutil import format_instant, parse_instant, utc_from_timestamp

    item = arrival.item if isinstance(arrival.item, dict) else {}
    late = ""
    try:
        scheduled = parse_instant(item["scheduled_at"]).timestamp()
        late = f" {1000 * (arrival.at - scheduled):.0f} ms late"
    except (KeyError, TypeError, ValueError):
        pass
    return (
        f"{format_instant(utc_from_timestamp(arrival.at))} {arrival.path} "
        f"job {item.get('name')!r} ({item.get('job_uuid')}) "
        f"slot {item.get('scheduled_at')}{late}, "
        f"from node {arrival.headers.get('x-scheduler0-node', '?')}"
    )


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    parser = argparse.ArgumentParser(
        prog="python -m harness.receiver",
        description="Answer callbacks on 127.0.0.1 with 200 and print one line per execution.",
    )
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    async def serve(reactor: Any) -> None:
        def show(arrival: Arrival) -> None:
            print(describe(arrival), flush=True)

        receiver = CallbackReceiver(reactor, on_arrival=show, keep=False)
        port = await receiver.listen(reactor, args.port)
        print(f"receiving callbacks at http://127.0.0.1:{port}/ (Ctrl-C to stop)", flush=True)
        await Deferred()  # until the reactor stops

    task.react(lambda reactor: Deferred.fromCoroutine(serve(reactor)))


if __name__ == "__main__":
    main(sys.argv[1:])
