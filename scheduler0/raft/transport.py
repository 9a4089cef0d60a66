"""
Twisted TCP transport for Raft messages between cluster nodes.

The sockets come from injected endpoints: C{listen_endpoint} for the listener
and C{connect_endpoint_factory(host, port)} for each outbound connection, so
the same transport runs over plain TCP or mutual TLS (L{scheduler0.tls} builds
both from the config).  The authenticated handshake below runs either way.

Each node listens on its RaftAddress and keeps outbound connections to every
peer; a connection carries opaque payloads (one Raft message per frame) in one
direction only, from the node that connected to the node that accepted.  A
connection is usable only after the authenticated handshake of
L{scheduler0.raft.framing}; the accepting side learns the sender's node id from
it and checks that the sender is a current peer.

Per peer there is one "control" connection, kept up eagerly and reconnected
with capped exponential backoff plus jitter, which carries every message up to
C{large_frame_threshold} bytes in order.  Larger messages (snapshot chunks, big
append batches) go on up to C{max_pool - 1} further "bulk" connections opened
on demand, so a heartbeat is never queued behind megabytes of snapshot.

C{send} never blocks and never raises for network trouble: a message that
cannot be handed to a connection is dropped and counted, which Raft tolerates
by retrying.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any, cast

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IListeningPort,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from scheduler0.raft.framing import (
    DEFAULT_MAX_FRAME,
    HANDSHAKE_MAX_FRAME,
    KIND_DATA,
    NONCE_SIZE,
    WELCOME,
    Auth,
    Challenge,
    FrameDecoder,
    FrameError,
    HandshakeError,
    Hello,
    client_proof,
    data_frame_parts,
    derive_link_key,
    frame_parts,
    proofs_equal,
    server_proof,
)

log = Logger()

#: Smallest permitted C{max_frame}: handshake frames and small Raft messages must fit.
MIN_MAX_FRAME = 1024

#: Upper bound of what a Twisted transport buffers before pausing its producer.
_TRANSPORT_BUFFER = 64 * 1024


_CONNECTION_DONE = Failure(ConnectionDone())


class IRaftTransport(Interface):
    """Moves opaque Raft messages between cluster nodes."""

    def start() -> Deferred:
        """Start listening and connecting; fires once listening."""

    def stop() -> Deferred:
        """Close the listener and every connection and cancel every timer."""

    def send(to_node_id: int, payload: bytes) -> None:
        """Queue C{payload} for C{to_node_id}; never blocks, drops when it must."""

    def set_peers(peers: dict[int, str]) -> None:
        """Replace the peer set (node id -> "host:port")."""

    def stats() -> dict:
        """Per-peer counters."""


def parse_peer_address(node_id: int, address: str) -> tuple[str, int]:
    """
    Split a peer's "host:port" (or "[v6]:port") into host and port, raising a
    ValueError that names the peer when it is malformed.
    """
    where = f"peers[{node_id!r}]"
    if not isinstance(address, str):
        raise ValueError(f"{where}: address must be a 'host:port' string, got {address!r}")
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{where}: address {address!r} is not 'host:port'")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"{where}: port {port} in {address!r} is outside 1..65535")
    return host, port


@attrs.define(eq=False)
class _PeerStats:
    """Counters for one peer, reported by L{RaftTransport.stats}."""

    sent: int = 0
    received: int = 0
    dropped: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    connect_failures: int = 0
    connects: int = 0


@attrs.define(eq=False)
class _Outbound:
    """
    One outbound connection to a peer, from the connect attempt until it is
    closed.  Messages sent while it is still connecting wait in C{pending}
    (bounded) and are written in order once the handshake completes.
    """

    link: _PeerLink
    bulk: bool
    state: str = "connecting"  # connecting -> open -> closed
    protocol: _RaftProtocol | None = None
    attempt: Deferred | None = None
    pending: list[list[bytes]] = attrs.field(factory=list)
    pending_bytes: int = 0

    @property
    def backlog(self) -> int:
        """Bytes waiting on this connection, to pick the least loaded one."""
        if self.state == "open" and self.protocol is not None:
            return self.protocol.unflushed_bytes
        return self.pending_bytes


@attrs.define(eq=False)
class _PeerLink:
    """Everything the transport keeps about one peer."""

    node_id: int
    address: str
    host: str
    port: int
    stats: _PeerStats = attrs.field(factory=_PeerStats)
    control: _Outbound | None = None
    bulk: list[_Outbound] = attrs.field(factory=list)
    failures: int = 0
    retry: IDelayedCall | None = None  # the next reconnect
    inbound: list[_RaftProtocol] = attrs.field(factory=list)
    removed: bool = False

    def outbound(self) -> list[_Outbound]:
        """Every live outbound connection (control first)."""
        return ([self.control] if self.control is not None else []) + list(self.bulk)


@implementer(IPushProducer)
class _RaftProtocol(Protocol):
    """
    One end of a Raft link.  The client end runs the handshake and then only
    writes data frames; the server end answers the handshake and then only
    reads them.  Any violation of the protocol drops the connection.
    """

    def __init__(self, owner: RaftTransport, *, role: str, outbound: _Outbound | None = None):
        self.owner = owner
        self.role = role
        self.outbound = outbound
        self.expected_peer = outbound.link.node_id if outbound is not None else None
        self.peer_node_id: int | None = None
        self.state = "new"
        self.decoder = FrameDecoder(HANDSHAKE_MAX_FRAME)
        self.nonce = b""
        self.peer_nonce = b""
        self.timer: IDelayedCall | None = None
        self.stall_timer: IDelayedCall | None = None
        self.paused = False
        self.unflushed_bytes = 0
        self.closing = False
        self.ready: Deferred = Deferred(self._cancel_handshake)
        self.closed: Deferred = Deferred()

    # -- connection life cycle -------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            setter = getattr(transport, option, None)
            if setter is not None:
                try:
                    setter(True)
                except Exception:  # not every transport supports socket options
                    pass
        # A connected TCP or TLS transport is also the consumer we produce for.
        consumer = cast(IConsumer, transport)
        consumer.registerProducer(self, True)
        self.nonce = self.owner.nonce_source(NONCE_SIZE)
        if self.role == "client":
            assert self.expected_peer is not None
            hello = Hello(self.owner.node_id, self.expected_peer, self.nonce)
            self._write_frame(hello.encode())
            self.state = "await-challenge"
        else:
            self.state = "await-hello"
            self.timer = self.owner.reactor.callLater(
                self.owner.timeout_s, self._fail, "handshake not completed in time"
            )
            self.owner._inbound_made(self)

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self.closing = True
        was = self.state
        self.state = "closed"
        for name in ("timer", "stall_timer"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        if self.role == "client":
            if not self.ready.called:
                self.ready.errback(HandshakeError(f"connection lost during handshake ({was})"))
            elif was == "open" and self.outbound is not None:
                self.owner._outbound_lost(self.outbound)
        else:
            self.owner._inbound_lost(self)
        self.closed.callback(None)

    def abort(self) -> None:
        """Drop the connection at once, discarding anything unsent."""
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def _fail(self, reason: str) -> None:
        if self.closing:
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        peer = self.peer_node_id if self.peer_node_id is not None else self.expected_peer
        log.warn(
            "Raft link {role} with peer {peer} dropped: {reason}",
            role=self.role,
            peer=peer,
            reason=reason,
        )
        if self.role == "server" and self.state != "open":
            self.owner.rejected_inbound += 1
        if self.role == "client" and not self.ready.called:
            self.ready.errback(HandshakeError(reason))
        self.abort()

    def _cancel_handshake(self, _: Deferred) -> None:
        self.abort()

    # -- reading -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            self._fail(f"bad frame: {e}")
            return
        for body in frames:
            if self.closing:
                return
            try:
                self._frame_received(body)
            except (FrameError, HandshakeError) as e:
                self._fail(str(e))
                return

    def _frame_received(self, body: bytes) -> None:
        state = self.state
        if state == "open" and self.role == "server":
            if body[0] != KIND_DATA:
                raise FrameError(f"unexpected frame kind {body[0]} after handshake")
            self.owner._deliver(self, body[1:])
        elif state == "await-hello":
            self._hello_received(Hello.decode(body))
        elif state == "await-auth":
            self._auth_received(Auth.decode(body))
        elif state == "await-challenge":
            self._challenge_received(Challenge.decode(body))
        elif state == "await-welcome":
            if body != WELCOME:
                raise HandshakeError(f"expected welcome, got frame kind {body[0]}")
            self._welcome_received()
        else:
            raise FrameError(f"unexpected frame kind {body[0]} in state {state}")

    def _hello_received(self, hello: Hello) -> None:
        owner = self.owner
        if hello.server_id != owner.node_id:
            raise HandshakeError(
                f"peer expected node {hello.server_id}, this is node {owner.node_id}"
            )
        if hello.client_id == owner.node_id or hello.client_id not in owner._links:
            raise HandshakeError(f"node {hello.client_id} is not a peer")
        self.peer_node_id = hello.client_id
        self.peer_nonce = hello.client_nonce
        mac = server_proof(
            owner._link_key, hello.client_id, owner.node_id, hello.client_nonce, self.nonce
        )
        self._write_frame(Challenge(owner.node_id, self.nonce, mac).encode())
        self.state = "await-auth"

    def _auth_received(self, auth: Auth) -> None:
        owner = self.owner
        assert self.peer_node_id is not None
        expected = client_proof(
            owner._link_key, self.peer_node_id, owner.node_id, self.peer_nonce, self.nonce
        )
        if not proofs_equal(expected, auth.client_mac):
            raise HandshakeError(f"node {self.peer_node_id} failed authentication")
        if self.peer_node_id not in owner._links:
            raise HandshakeError(f"node {self.peer_node_id} is no longer a peer")
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.state = "open"
        self.decoder.max_frame = owner.max_frame
        self._write_frame(WELCOME)
        owner._inbound_authenticated(self)

    def _challenge_received(self, challenge: Challenge) -> None:
        owner = self.owner
        assert self.expected_peer is not None
        if challenge.server_id != self.expected_peer:
            raise HandshakeError(
                f"expected node {self.expected_peer}, reached node {challenge.server_id}"
            )
        expected = server_proof(
            owner._link_key, owner.node_id, self.expected_peer, self.nonce, challenge.server_nonce
        )
        if not proofs_equal(expected, challenge.server_mac):
            raise HandshakeError(f"node {self.expected_peer} failed authentication")
        mac = client_proof(
            owner._link_key, owner.node_id, self.expected_peer, self.nonce, challenge.server_nonce
        )
        self._write_frame(Auth(mac).encode())
        self.state = "await-welcome"

    def _welcome_received(self) -> None:
        self.state = "open"
        self.peer_node_id = self.expected_peer
        self.ready.callback(self)

    # -- writing -----------------------------------------------------------------

    def _write_frame(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.writeSequence(frame_parts(body, HANDSHAKE_MAX_FRAME))

    def write_data(self, parts: list[bytes], size: int) -> bool:
        """
        Write one data frame; False (nothing written) when the connection is
        closing or its unflushed backlog would exceed the owner's limit.
        """
        if self.closing or self.state != "open":
            return False
        if self.paused and self.unflushed_bytes + size > self.owner.max_pending_bytes:
            return False
        if self.paused:
            self.unflushed_bytes += size
            if self.stall_timer is not None and self.stall_timer.active():
                self.stall_timer.delay(size / self.owner.min_throughput)
        else:
            # Not paused means the transport's buffer was below its limit
            # (64 KiB in Twisted) before this write.
            self.unflushed_bytes = size + _TRANSPORT_BUFFER
        assert self.transport is not None  # connected: the state is "open"
        self.transport.writeSequence(parts)
        return True

    # -- IPushProducer: the transport tells us when its buffer is full/drained --

    def pauseProducing(self) -> None:
        if self.paused or self.closing:
            return
        self.paused = True
        # A connection whose buffer does not drain within the IO timeout (plus
        # the time the buffered bytes need at a minimal rate) is dead.
        allowance = self.owner.timeout_s + self.unflushed_bytes / self.owner.min_throughput
        self.stall_timer = self.owner.reactor.callLater(
            allowance, self._fail, "write stalled beyond the IO timeout"
        )

    def resumeProducing(self) -> None:
        self.paused = False
        self.unflushed_bytes = 0
        if self.stall_timer is not None and self.stall_timer.active():
            self.stall_timer.cancel()
        self.stall_timer = None

    def stopProducing(self) -> None:
        self.closing = True


class _ServerFactory(Factory):
    """Builds the accepting end of Raft links."""

    noisy = False

    def __init__(self, owner: RaftTransport):
        self.owner = owner

    def buildProtocol(self, addr: Any) -> _RaftProtocol:
        return _RaftProtocol(self.owner, role="server")


class _ClientFactory(Factory):
    """Builds the connecting end of one outbound Raft link."""

    noisy = False

    def __init__(self, owner: RaftTransport, outbound: _Outbound):
        self.owner = owner
        self.outbound = outbound

    def buildProtocol(self, addr: Any) -> _RaftProtocol:
        return _RaftProtocol(self.owner, role="client", outbound=self.outbound)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(name: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")

    return check


@implementer(IRaftTransport)
@attrs.define(eq=False, kw_only=True)
class RaftTransport:
    """
    Authenticated, pooled, reconnecting TCP transport for Raft messages.

    C{on_message(from_node_id, payload)} is called for every message received
    from an authenticated peer.  Everything that touches time, sockets or
    randomness is injected: C{reactor} needs C{callLater} (and C{connectTCP}
    only when the default C{connect_endpoint_factory} is used).
    C{connect_endpoint_factory(host, port)} returns the client endpoint for
    one outbound connection (C{None}: plain TCP with C{timeout_s}); pass
    L{scheduler0.tls.raft_client_endpoint_factory} for TLS.
    """

    reactor: IReactorTime
    node_id: int
    secret_key: bytes = attrs.field(repr=False)
    listen_endpoint: IStreamServerEndpoint
    peers: dict[int, str]
    on_message: Callable[[int, bytes], None]
    connect_endpoint_factory: Callable[[str, int], IStreamClientEndpoint] | None = None
    timeout_s: float = attrs.field(default=1.0, validator=_positive("timeout_s"))
    max_pool: int = 3
    max_frame: int = DEFAULT_MAX_FRAME
    rng: Any = None
    large_frame_threshold: int = 64 * 1024
    backoff_initial_s: float = attrs.field(default=0.1, validator=_positive("backoff_initial_s"))
    backoff_max_s: float = attrs.field(default=2.0, validator=_positive("backoff_max_s"))
    backoff_jitter: float = 0.5
    #: Unflushed bytes a connection may hold (default: two maximal frames).
    max_pending_bytes: int = attrs.field(
        default=attrs.Factory(lambda self: 2 * self.max_frame, takes_self=True)
    )
    min_throughput: float = attrs.field(default=float(2**20), validator=_positive("min_throughput"))
    nonce_source: Callable[[int], bytes] = os.urandom

    #: Connections refused at the handshake (bad frames, bad key, not a peer, timeout).
    rejected_inbound: int = attrs.field(default=0, init=False)
    #: Messages dropped because their destination is not a peer.
    dropped_unknown: int = attrs.field(default=0, init=False)
    #: The listening port once L{start} has fired.
    listening_port: IListeningPort | None = attrs.field(default=None, init=False)
    #: The factory the listener serves (tests drive it over fake transports).
    factory: _ServerFactory = attrs.field(init=False)

    _link_key: bytes = attrs.field(init=False, repr=False)
    _links: dict[int, _PeerLink] = attrs.field(factory=dict, init=False)
    _unbound_inbound: list[_RaftProtocol] = attrs.field(factory=list, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _stopping: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if not _is_int(self.node_id) or self.node_id <= 0:
            raise ValueError(f"node_id must be a positive integer, got {self.node_id!r}")
        try:
            self._link_key = derive_link_key(self.secret_key)
        except ValueError:
            raise ValueError("secret_key must be non-empty bytes") from None
        if not _is_int(self.max_pool) or self.max_pool < 1:
            raise ValueError(f"max_pool must be an integer >= 1, got {self.max_pool!r}")
        if not _is_int(self.max_frame) or self.max_frame < MIN_MAX_FRAME:
            raise ValueError(
                f"max_frame must be an integer >= {MIN_MAX_FRAME}, got {self.max_frame!r}"
            )
        if not _is_int(self.large_frame_threshold) or self.large_frame_threshold < 1:
            raise ValueError(
                "large_frame_threshold must be a positive integer, "
                f"got {self.large_frame_threshold!r}"
            )
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError(f"backoff_jitter must be in [0, 1), got {self.backoff_jitter!r}")
        if self.rng is None:
            self.rng = random.Random()
        if self.connect_endpoint_factory is None:
            self.connect_endpoint_factory = self._tcp_endpoint
        self.factory = _ServerFactory(self)
        self._links = self._make_links(self.peers)

    # -- public API ----------------------------------------------------------------

    def start(self) -> Deferred[IListeningPort]:
        """Listen for peers, then connect to each; fires with the listening port."""
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> IListeningPort:
        if self._started:
            raise RuntimeError("RaftTransport.start() called twice")
        self._started = True
        port = self.listening_port = await self.listen_endpoint.listen(self.factory)
        if not self._stopping:
            for link in self._links.values():
                self._ensure_control(link)
        return port

    def stop(self) -> Deferred:
        """
        Close the listener and every connection and cancel every timer; fires
        when all connections have closed.
        """
        self._stopping = True
        waits: list[Deferred] = []
        if self.listening_port is not None:
            waits.append(defer.maybeDeferred(self.listening_port.stopListening))
        for link in list(self._links.values()):
            waits.extend(self._close_link(link))
        for protocol in list(self._unbound_inbound):
            waits.append(self._close_protocol(protocol))
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def send(self, to_node_id: int, payload: bytes) -> None:
        """
        Hand C{payload} to a connection to C{to_node_id}, or drop it and count
        the drop.  Messages up to C{large_frame_threshold} bytes go on the
        peer's control connection and arrive in the order sent.
        """
        link = self._links.get(to_node_id)
        if link is None:
            self.dropped_unknown += 1
            return
        if not isinstance(payload, (bytes, bytearray)):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        size = len(payload) + 1
        if size > self.max_frame or self._stopping or not self._started:
            link.stats.dropped += 1
            if size > self.max_frame:
                log.warn(
                    "Dropped a {size}-byte message to node {peer}: above max_frame {max_frame}",
                    size=len(payload),
                    peer=to_node_id,
                    max_frame=self.max_frame,
                )
            return
        parts = data_frame_parts(bytes(payload), self.max_frame)
        if len(payload) > self.large_frame_threshold and self.max_pool > 1:
            outbound = self._bulk_for(link)
        else:
            outbound = link.control
        if outbound is None or not self._hand_over(outbound, parts, size):
            link.stats.dropped += 1

    def set_peers(self, peers: dict[int, str]) -> None:
        """
        Replace the peer set: removed peers lose their connections (both
        directions), new peers are connected, changed addresses reconnect.
        """
        new_links = self._make_links(peers)
        for node_id, link in list(self._links.items()):
            fresh = new_links.get(node_id)
            if fresh is None or fresh.address != link.address:
                del self._links[node_id]
                self._close_link(link)
        for node_id, fresh in new_links.items():
            if node_id not in self._links:
                self._links[node_id] = fresh
                if self._started and not self._stopping:
                    self._ensure_control(fresh)
        self.peers = dict(peers)

    def stats(self) -> dict:
        """
        Per-peer counters: C{{node_id: {"address", "connected", "connections",
        "inbound", "sent", "received", "dropped", "bytes_sent", "bytes_received",
        "connects", "connect_failures"}}}.
        """
        result = {}
        for node_id, link in self._links.items():
            s = link.stats
            result[node_id] = {
                "address": link.address,
                "connected": link.control is not None and link.control.state == "open",
                "connections": sum(1 for o in link.outbound() if o.state == "open"),
                "inbound": len(link.inbound),
                "sent": s.sent,
                "received": s.received,
                "dropped": s.dropped,
                "bytes_sent": s.bytes_sent,
                "bytes_received": s.bytes_received,
                "connects": s.connects,
                "connect_failures": s.connect_failures,
            }
        return result

    # -- peers -------------------------------------------------------------------------

    def _make_links(self, peers: dict[int, str]) -> dict[int, _PeerLink]:
        if not isinstance(peers, dict):
            raise ValueError(f"peers must be a dict of node id to 'host:port', got {peers!r}")
        links = {}
        for node_id, address in peers.items():
            if not _is_int(node_id) or node_id <= 0:
                raise ValueError(f"peers: node id {node_id!r} is not a positive integer")
            if node_id == self.node_id:
                continue  # a replica list names this node too; it is not a peer
            host, port = parse_peer_address(node_id, address)
            links[node_id] = _PeerLink(node_id=node_id, address=address, host=host, port=port)
        return links

    def _close_link(self, link: _PeerLink) -> list[Deferred]:
        link.removed = True
        if link.retry is not None and link.retry.active():
            link.retry.cancel()
        link.retry = None
        waits = []
        for outbound in link.outbound():
            if outbound.protocol is not None:
                waits.append(self._close_protocol(outbound.protocol))
            elif outbound.attempt is not None:
                outbound.attempt.cancel()
        for protocol in list(link.inbound):
            waits.append(self._close_protocol(protocol))
        return waits

    def _close_protocol(self, protocol: _RaftProtocol) -> Deferred:
        waiter: Deferred = Deferred()
        if protocol.closed.called:
            waiter.callback(None)
        else:
            protocol.closed.addBoth(waiter.callback)
            protocol.abort()
        return waiter

    # -- outbound connections ----------------------------------------------------------

    def _tcp_endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        endpoint_class = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        # Only plain TCP links need the reactor to be an IReactorTCP as well.
        reactor = cast(IReactorTCP, self.reactor)
        return endpoint_class(reactor, host, port, timeout=self.timeout_s)

    def _ensure_control(self, link: _PeerLink) -> None:
        if link.control is None and link.retry is None and not link.removed and not self._stopping:
            self._open(link, bulk=False)

    def _bulk_for(self, link: _PeerLink) -> _Outbound | None:
        """
        Pick the connection for a large message: the oldest open bulk
        connection that is not backed up, else a new one while the pool has
        room, else the least loaded.  None while the peer is unreachable.
        """
        if link.control is None or link.control.state != "open":
            return None
        for outbound in link.bulk:
            protocol = outbound.protocol
            if outbound.state == "open" and protocol is not None and not protocol.paused:
                return outbound
        for outbound in link.bulk:
            if outbound.state == "connecting":
                return outbound
        if 1 + len(link.bulk) < self.max_pool:
            return self._open(link, bulk=True)
        if not link.bulk:
            return None
        return min(link.bulk, key=lambda o: o.backlog)

    def _open(self, link: _PeerLink, *, bulk: bool) -> _Outbound:
        outbound = _Outbound(link=link, bulk=bulk)
        if bulk:
            link.bulk.append(outbound)
        else:
            link.control = outbound
        attempt = Deferred.fromCoroutine(self._connect(outbound))
        outbound.attempt = attempt
        attempt.addTimeout(self.timeout_s, self.reactor)
        attempt.addCallbacks(
            lambda protocol: self._opened(outbound, protocol),
            lambda failure: self._open_failed(outbound, failure),
        )
        return outbound

    async def _connect(self, outbound: _Outbound) -> _RaftProtocol:
        link = outbound.link
        assert self.connect_endpoint_factory is not None
        endpoint = self.connect_endpoint_factory(link.host, link.port)
        # The endpoint hands back what _ClientFactory built (a TLS endpoint
        # unwraps it).
        protocol = cast(_RaftProtocol, await endpoint.connect(_ClientFactory(self, outbound)))
        outbound.protocol = protocol
        await protocol.ready
        return protocol

    def _opened(self, outbound: _Outbound, protocol: _RaftProtocol) -> None:
        link = outbound.link
        outbound.attempt = None
        outbound.state = "open"
        outbound.protocol = protocol
        link.stats.connects += 1
        if not outbound.bulk:
            link.failures = 0
        if link.removed or self._stopping:
            protocol.abort()
            return
        pending, outbound.pending, outbound.pending_bytes = outbound.pending, [], 0
        for parts in pending:
            if not self._hand_over(outbound, parts, len(parts[1]) + 1):
                link.stats.dropped += 1

    def _open_failed(self, outbound: _Outbound, failure: Failure) -> None:
        link = outbound.link
        outbound.attempt = None
        outbound.state = "closed"
        if outbound.protocol is not None and not outbound.protocol.closing:
            outbound.protocol.abort()
        link.stats.dropped += len(outbound.pending)
        outbound.pending, outbound.pending_bytes = [], 0
        if link.removed or self._stopping:
            self._forget(outbound)
            return
        link.stats.connect_failures += 1
        log.info(
            "Raft connection to node {peer} at {address} failed: {why}",
            peer=link.node_id,
            address=link.address,
            why=failure.getErrorMessage() or getattr(failure.type, "__name__", ""),
        )
        if not outbound.bulk:
            link.failures += 1
        self._forget(outbound)

    def _outbound_lost(self, outbound: _Outbound) -> None:
        """An open outbound connection closed."""
        outbound.state = "closed"
        self._forget(outbound)

    def _forget(self, outbound: _Outbound) -> None:
        link = outbound.link
        if outbound.bulk:
            if outbound in link.bulk:
                link.bulk.remove(outbound)
            return
        if link.control is outbound:
            link.control = None
            if not link.removed and not self._stopping:
                self._schedule_reconnect(link)

    def backoff_delay(self, failures: int) -> float:
        """
        Seconds to wait before reconnecting after C{failures} consecutive
        failures: doubling from C{backoff_initial_s}, capped at
        C{backoff_max_s}, shortened by up to C{backoff_jitter} of itself at random.
        """
        exponent = max(failures, 1) - 1
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(exponent, 64))
        return base * (1.0 - self.backoff_jitter * self.rng.random())

    def _schedule_reconnect(self, link: _PeerLink) -> None:
        delay = self.backoff_delay(link.failures)
        link.retry = self.reactor.callLater(delay, self._reconnect, link)

    def _reconnect(self, link: _PeerLink) -> None:
        link.retry = None
        self._ensure_control(link)

    def _hand_over(self, outbound: _Outbound, parts: list[bytes], size: int) -> bool:
        """Write or queue one data frame on C{outbound}; False if it must be dropped."""
        stats = outbound.link.stats
        if outbound.state == "connecting":
            if outbound.pending_bytes + size > self.max_pending_bytes:
                return False
            outbound.pending.append(parts)
            outbound.pending_bytes += size
            return True
        if outbound.state == "open" and outbound.protocol is not None:
            if outbound.protocol.write_data(parts, size):
                stats.sent += 1
                stats.bytes_sent += size - 1
                return True
        return False

    # -- inbound connections ------------------------------------------------------------

    def _inbound_made(self, protocol: _RaftProtocol) -> None:
        if self._stopping:
            protocol.abort()
            return
        self._unbound_inbound.append(protocol)

    def _inbound_authenticated(self, protocol: _RaftProtocol) -> None:
        if protocol in self._unbound_inbound:
            self._unbound_inbound.remove(protocol)
        assert protocol.peer_node_id is not None
        link = self._links[protocol.peer_node_id]
        link.inbound.append(protocol)
        # A well-behaved peer keeps at most max_pool connections to us; extra
        # ones are leftovers of a peer that restarted, so the oldest go.
        while len(link.inbound) > self.max_pool:
            stale = link.inbound.pop(0)
            stale.abort()

    def _inbound_lost(self, protocol: _RaftProtocol) -> None:
        if protocol in self._unbound_inbound:
            self._unbound_inbound.remove(protocol)
        peer = protocol.peer_node_id
        link = self._links.get(peer) if peer is not None else None
        if link is not None and protocol in link.inbound:
            link.inbound.remove(protocol)

    def _deliver(self, protocol: _RaftProtocol, payload: bytes) -> None:
        peer = protocol.peer_node_id
        assert peer is not None
        link = self._links.get(peer)
        if link is None or protocol not in link.inbound:
            # The peer was removed while this frame was in flight.
            protocol.abort()
            return
        link.stats.received += 1
        link.stats.bytes_received += len(payload)
        try:
            self.on_message(peer, payload)
        except Exception:
            log.failure("on_message failed for a message from node {peer}", peer=peer)
