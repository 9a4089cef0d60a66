"""
A fault-injecting TCP proxy for real-process cluster tests.

Every byte one node sends another passes through a L{TCPProxy} the test
controls: it can cut the link (close everything and refuse new
connections), black-hole one direction, or delay bytes while keeping their
order. Faults take effect at once on connections already open.

"forward" is the direction from the dialling client to the target,
"backward" the answers coming back.

Limits, on purpose: faults act on bytes, not on connection set-up or
closes. The proxy always accepts and then closes when the target cannot be
reached (the dialler sees its connection closed rather than refused), a
close on one side is passed on once held bytes have drained (also while a
direction is dropped), and there is no TCP half-close: when either side
closes, the other is closed too.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

Direction = Literal["forward", "backward", "both"]
DIRECTIONS: tuple[str, str] = ("forward", "backward")


def _directions(direction: str) -> tuple[str, ...]:
    """The one-way directions C{direction} names; a clear error for anything else."""
    if direction == "both":
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    raise ValueError(
        f"direction: invalid value {direction!r}; expected 'forward', 'backward' or 'both'"
    )


@implementer(IPushProducer)
@attrs.define(eq=False)
class _ReadPauser:
    """
    Stands in for a source transport as the producer of the other side, so
    a full write buffer pauses reading at the source (backpressure). Unlike
    registering the transport itself, it does not close the source when the
    sink disconnects: closing is the relay's job, after delayed bytes drain.
    """

    transport: Any

    def pauseProducing(self) -> None:
        if not self.transport.disconnected:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if not self.transport.disconnected:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


@attrs.define(eq=False)
class _Pipe:
    """
    One direction of one proxied connection: drops, delays in order, or
    passes bytes to the sink transport, and closes the sink once the source
    has closed and everything queued has been delivered.
    """

    proxy: TCPProxy
    direction: str
    sink: Any = None  # the transport bytes are written to, once connected
    queue: deque[tuple[float, bytes]] = attrs.field(factory=deque)
    timer: Any = None
    source_closed: bool = False
    dead: bool = False

    def carry(self, data: bytes) -> None:
        """Take bytes read from the source: drop, queue or write them."""
        if self.dead:
            return
        if self.proxy.is_dropping(self.direction):
            self.proxy.dropped[self.direction] += len(data)
            return
        delay = self.proxy.delays[self.direction]
        if delay <= 0 and not self.queue and self.sink is not None:
            self._write(data)
            return
        now = self.proxy.reactor.seconds()
        release_at = now + max(delay, 0.0)
        if self.queue:  # never overtake bytes already waiting
            release_at = max(release_at, self.queue[-1][0])
        self.queue.append((release_at, data))
        self._schedule()

    def attach(self, sink: Any) -> None:
        """The sink is connected: deliver whatever is already due."""
        self.sink = sink
        self._deliver_due()

    def flush(self) -> None:
        """Deliver everything queued now, in order (used on heal)."""
        for index, (_, data) in enumerate(self.queue):
            self.queue[index] = (0.0, data)
        self._deliver_due()

    def close_source(self) -> None:
        """The source has closed: close the sink after the queue drains."""
        self.source_closed = True
        self._deliver_due()

    def abort(self) -> None:
        """Forget queued bytes and stop the timer; the relay aborts the transports."""
        self.dead = True
        self.queue.clear()
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _schedule(self) -> None:
        self._cancel_timer()
        if self.dead or self.sink is None or not self.queue:
            return
        wait = max(self.queue[0][0] - self.proxy.reactor.seconds(), 0.0)
        self.timer = self.proxy.reactor.callLater(wait, self._deliver_due)

    def _deliver_due(self) -> None:
        self._cancel_timer()
        if self.dead or self.sink is None:
            return
        now = self.proxy.reactor.seconds()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if self.proxy.is_dropping(self.direction):
                self.proxy.dropped[self.direction] += len(data)
            else:
                self._write(data)
        if self.queue:
            self._schedule()
        elif self.source_closed:
            self.sink.loseConnection()

    def _write(self, data: bytes) -> None:
        self.proxy.forwarded[self.direction] += len(data)
        self.sink.write(data)


class _ClientSide(Protocol):
    """The connection the proxy accepted from the dialling node."""

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def connectionMade(self) -> None:
        self.relay.client_connected(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.relay.forward.carry(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.relay.client_lost()


class _TargetSide(Protocol):
    """The connection the proxy dialled to the target."""

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def dataReceived(self, data: bytes) -> None:
        self.relay.backward.carry(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.relay.target_lost()


@attrs.define(eq=False)
class _Relay:
    """One proxied TCP connection: the accepted side, the dialled side, a pipe each way."""

    proxy: TCPProxy
    forward: _Pipe
    backward: _Pipe
    client: Any = None
    target: Any = None
    dialling: Deferred | None = None
    client_open: bool = False
    target_open: bool = False
    ended: Deferred = attrs.field(factory=Deferred)

    @classmethod
    def create(cls, proxy: TCPProxy) -> _Relay:
        return cls(proxy, _Pipe(proxy, "forward"), _Pipe(proxy, "backward"))

    def client_connected(self, transport: Any) -> None:
        self.client = transport
        self.client_open = True
        if self.proxy.is_cut:
            self.proxy.refused += 1
            transport.abortConnection()
            return
        self.proxy.accepted += 1
        transport.pauseProducing()  # read nothing until the target side is there
        self.backward.attach(transport)
        endpoint = TCP4ClientEndpoint(
            self.proxy.reactor,
            self.proxy.target_host,
            self.proxy.target_port,
            timeout=self.proxy.connect_timeout,
        )
        self.dialling = connectProtocol(endpoint, _TargetSide(self))
        self.dialling.addCallbacks(self._target_connected, self._target_failed)

    def _target_connected(self, protocol: _TargetSide) -> None:
        self.dialling = None
        self.target = protocol.transport
        self.target_open = True
        if not self.client_open or self.proxy.is_cut:
            self.target.abortConnection()
            return
        self.target.registerProducer(_ReadPauser(self.client), True)
        self.client.registerProducer(_ReadPauser(self.target), True)
        self.forward.attach(self.target)
        self.client.resumeProducing()

    def _target_failed(self, reason: Any) -> None:
        # The target refused or the dial was cancelled: the dialler sees a closed connection.
        self.dialling = None
        if self.client_open:
            self.client.abortConnection()
        self._maybe_ended()

    def client_lost(self) -> None:
        self.client_open = False
        if self.dialling is not None:
            self.dialling.cancel()
        self.forward.close_source()
        self._maybe_ended()

    def target_lost(self) -> None:
        self.target_open = False
        self.backward.close_source()
        self._maybe_ended()

    def abort(self) -> None:
        """Close both sides at once, discarding anything queued."""
        self.forward.abort()
        self.backward.abort()
        if self.dialling is not None:
            self.dialling.cancel()
        sides = ((self.client, self.client_open), (self.target, self.target_open))
        for transport, is_open in sides:
            if transport is not None and is_open:
                transport.abortConnection()

    def _maybe_ended(self) -> None:
        if self.client_open or self.target_open or self.dialling is not None:
            return
        self.forward.abort()
        self.backward.abort()
        self.proxy._relays.discard(self)
        if not self.ended.called:
            self.ended.callback(None)


@attrs.define(eq=False)
class TCPProxy:
    """
    Listen on 127.0.0.1 and relay each accepted connection to
    C{target_host:target_port}, applying the faults currently set.

    Counters: C{forwarded} and C{dropped} (bytes per direction),
    C{accepted} (connections relayed) and C{refused} (closed at once
    because the link was cut).
    """

    reactor: Any
    target_host: str
    target_port: int
    listen_port: int = 0
    connect_timeout: float = 5.0
    is_cut: bool = False
    delays: dict[str, float] = attrs.field(factory=lambda: dict.fromkeys(DIRECTIONS, 0.0))
    dropping: set[str] = attrs.field(factory=set)
    forwarded: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    dropped: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    accepted: int = 0
    refused: int = 0
    _listening: Any = None
    _relays: set[_Relay] = attrs.field(factory=set)

    @property
    def port(self) -> int:
        """The port the proxy listens on (after L{start})."""
        if self._listening is None:
            raise RuntimeError("TCPProxy.port: the proxy is not listening; call start() first")
        return int(self._listening.getHost().port)

    @property
    def open_connections(self) -> int:
        """How many proxied connections are open or closing right now."""
        return len(self._relays)

    def held(self, direction: Direction = "both") -> int:
        """How many bytes going C{direction} are held by a delay right now."""
        wanted = _directions(direction)
        return sum(
            len(data)
            for relay in self._relays
            for pipe in (relay.forward, relay.backward)
            if pipe.direction in wanted
            for _, data in pipe.queue
        )

    async def start(self) -> int:
        """Start listening on 127.0.0.1 and return the port."""
        endpoint = TCP4ServerEndpoint(self.reactor, self.listen_port, interface="127.0.0.1")
        self._listening = await endpoint.listen(Factory.forProtocol(self._accept))
        return self.port

    def _accept(self) -> _ClientSide:
        relay = _Relay.create(self)
        self._relays.add(relay)
        return _ClientSide(relay)

    async def stop(self) -> None:
        """Stop listening and close every connection; returns once all are gone."""
        if self._listening is not None:
            listening, self._listening = self._listening, None
            await listening.stopListening()
        await self._abort_all()

    async def _abort_all(self) -> None:
        relays = list(self._relays)
        for relay in relays:
            relay.abort()
        if relays:
            await DeferredList([relay.ended for relay in relays])

    # -- faults ---------------------------------------------------------

    def cut(self) -> None:
        """Close every open connection and close new ones at once, until L{heal}."""
        self.is_cut = True
        for relay in list(self._relays):
            relay.abort()

    def drop(self, direction: Direction = "both") -> None:
        """Silently discard bytes going C{direction}; connections stay open (a black hole)."""
        self.dropping.update(_directions(direction))

    def delay(self, seconds: float, direction: Direction = "both") -> None:
        """Hold bytes going C{direction} for C{seconds} before passing them on, in order."""
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"seconds: invalid value {seconds!r}; expected a number >= 0")
        for one in _directions(direction):
            self.delays[one] = float(seconds)

    def heal(self) -> None:
        """Undo every fault; bytes still held by a delay are passed on now, in order."""
        self.is_cut = False
        self.dropping.clear()
        for one in DIRECTIONS:
            self.delays[one] = 0.0
        for relay in list(self._relays):
            relay.forward.flush()
            relay.backward.flush()

    def is_dropping(self, direction: str) -> bool:
        return direction in self.dropping
