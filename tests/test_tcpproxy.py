"""
The fault-injecting TCP proxy, over real TCP on 127.0.0.1: a target server
and a client both made of small recording protocols, with bounded waits.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.process import free_port
from harness.tcpproxy import TCPProxy
from harness.waiting import wait_for

WAIT = 5.0


class _Peer(Protocol):
    """Record what arrives and when; C{lost} fires when the connection ends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.chunks: list[tuple[float, bytes]] = []
        self.lost: Deferred = Deferred()
        self.open = False

    def connectionMade(self) -> None:
        self.open = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.chunks.append((reactor.seconds(), data))

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        self.lost.callback(None)


class ProxyTestCase(TestCase):
    """A target server on a real port and a proxy in front of it."""

    timeout = 30

    async def set_up(self) -> None:
        self.server_peers: list[_Peer] = []

        def accept() -> _Peer:
            peer = _Peer()
            self.server_peers.append(peer)
            return peer

        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(accept)
        )
        self.addCleanup(self._close_servers)
        self.addCleanup(listening.stopListening)
        self.proxy = TCPProxy(reactor, "127.0.0.1", listening.getHost().port)
        await self.proxy.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.proxy.stop()))

    async def _close_servers(self) -> None:
        for peer in self.server_peers:
            if peer.open:
                peer.transport.abortConnection()
                await peer.lost

    async def connect(self) -> tuple[_Peer, _Peer]:
        """A client connected through the proxy, and the server side it reached."""
        count = len(self.server_peers)
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.port), _Peer()
        )

        async def close_client() -> None:
            if client.open:
                client.transport.abortConnection()
                await client.lost

        self.addCleanup(close_client)
        await wait_for(
            reactor, lambda: len(self.server_peers) > count, timeout=WAIT, what="server side"
        )
        return client, self.server_peers[count]

    async def wait(self, probe: Any, what: str) -> Any:
        return await wait_for(reactor, probe, timeout=WAIT, interval=0.01, what=what)


class TCPProxyTests(ProxyTestCase):
    async def test_bytes_pass_both_ways(self) -> None:
        """Bytes from the client reach the target and its answers come back; both are counted."""
        await self.set_up()
        client, server = await self.connect()
        client.transport.write(b"ping")
        await self.wait(lambda: server.received == b"ping", "request at target")
        server.transport.write(b"pong!")
        await self.wait(lambda: client.received == b"pong!", "answer at client")
        self.assertEqual(self.proxy.forwarded, {"forward": 4, "backward": 5})
        self.assertEqual(self.proxy.accepted, 1)
        self.assertEqual(self.proxy.open_connections, 1)

    async def test_large_transfer_arrives_whole(self) -> None:
        """Several megabytes each way arrive complete and in order (backpressure loses nothing)."""
        await self.set_up()
        client, server = await self.connect()
        up = bytes(range(256)) * 16384  # 4 MiB
        down = bytes(reversed(range(256))) * 16384
        client.transport.write(up)
        server.transport.write(down)
        await self.wait(lambda: len(server.received) == len(up), "upload")
        await self.wait(lambda: len(client.received) == len(down), "download")
        self.assertEqual(bytes(server.received), up)
        self.assertEqual(bytes(client.received), down)

    async def test_close_propagates(self) -> None:
        """When the client closes, the proxy closes the target side too."""
        await self.set_up()
        client, server = await self.connect()
        client.transport.write(b"bye")
        client.transport.loseConnection()
        await server.lost
        self.assertEqual(server.received, b"bye")
        await self.wait(lambda: self.proxy.open_connections == 0, "relay to end")

    async def test_cut_closes_open_and_refuses_new_until_heal(self) -> None:
        """
        C{cut} closes open connections at once and closes new ones as they
        arrive, without reaching the target; after C{heal} connections work.
        """
        await self.set_up()
        client, server = await self.connect()
        self.proxy.cut()
        await client.lost
        await server.lost

        refused = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.port), _Peer()
        )
        await refused.lost
        self.assertEqual(len(self.server_peers), 1)
        self.assertEqual(self.proxy.refused, 1)

        self.proxy.heal()
        client, server = await self.connect()
        client.transport.write(b"again")
        await self.wait(lambda: server.received == b"again", "bytes after heal")
        self.assertEqual(self.proxy.accepted, 2)

    async def test_drop_forward_black_holes_one_direction(self) -> None:
        """
        With C{drop("forward")} the client's bytes vanish while the
        connection stays open and answers still flow back; C{heal} restores it.
        """
        await self.set_up()
        client, server = await self.connect()
        self.proxy.drop("forward")
        client.transport.write(b"lost")
        await self.wait(lambda: self.proxy.dropped["forward"] == 4, "bytes dropped")
        server.transport.write(b"still")
        await self.wait(lambda: client.received == b"still", "answer through")
        self.assertTrue(client.open)
        self.assertTrue(server.open)

        self.proxy.heal()
        client.transport.write(b"kept")
        await self.wait(lambda: server.received == b"kept", "bytes after heal")
        self.assertEqual(server.received, b"kept")

    async def test_drop_backward_black_holes_answers(self) -> None:
        """With C{drop("backward")} answers vanish while requests still reach the target."""
        await self.set_up()
        client, server = await self.connect()
        self.proxy.drop("backward")
        server.transport.write(b"lost")
        await self.wait(lambda: self.proxy.dropped["backward"] == 4, "answer dropped")
        client.transport.write(b"req")
        await self.wait(lambda: server.received == b"req", "request through")
        self.assertEqual(client.received, b"")

    async def test_delay_holds_bytes_and_keeps_order(self) -> None:
        """
        C{delay(d)} passes bytes on no sooner than C{d} seconds after they
        were sent, and a later, shorter delay never lets bytes overtake.
        """
        await self.set_up()
        client, server = await self.connect()
        self.proxy.delay(0.3, "forward")
        sent_at = reactor.seconds()
        client.transport.write(b"a")
        await self.wait(lambda: self.proxy.held("forward") == 1, "first byte held")
        self.proxy.delay(0.0, "forward")
        client.transport.write(b"b")
        await self.wait(lambda: server.received == b"ab", "delayed bytes")
        self.assertGreaterEqual(server.chunks[0][0] - sent_at, 0.3)
        # The backward direction was not delayed.
        server.transport.write(b"x")
        await self.wait(lambda: client.received == b"x", "answer")

    async def test_delay_applies_to_open_connections_both_ways(self) -> None:
        """A delay set after connecting holds bytes in both directions."""
        await self.set_up()
        client, server = await self.connect()
        self.proxy.delay(0.2)
        start = reactor.seconds()
        client.transport.write(b"q")
        server.transport.write(b"r")
        await self.wait(lambda: server.received == b"q" and client.received == b"r", "bytes")
        self.assertGreaterEqual(server.chunks[0][0] - start, 0.2)
        self.assertGreaterEqual(client.chunks[0][0] - start, 0.2)

    async def test_heal_releases_delayed_bytes_now(self) -> None:
        """Bytes held by a long delay are passed on as soon as the proxy heals."""
        await self.set_up()
        client, server = await self.connect()
        self.proxy.delay(60)
        client.transport.write(b"held")
        await self.wait(lambda: self.proxy.held("forward") == 4, "bytes held")
        self.assertEqual(server.received, b"")
        self.proxy.heal()
        await self.wait(lambda: server.received == b"held", "released bytes")

    async def test_unreachable_target_closes_the_client(self) -> None:
        """When the target refuses, the dialling client sees its connection closed."""
        proxy = TCPProxy(reactor, "127.0.0.1", free_port())
        await proxy.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(proxy.stop()))
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port), _Peer()
        )
        await client.lost
        await self.wait(lambda: proxy.open_connections == 0, "relay to end")

    async def test_stop_closes_everything(self) -> None:
        """C{stop} closes open connections and the listening port (the reactor is left clean)."""
        await self.set_up()
        client, server = await self.connect()
        self.proxy.delay(60)
        client.transport.write(b"pending")
        port = self.proxy.port
        await self.proxy.stop()
        await client.lost
        await server.lost
        self.assertEqual(self.proxy.open_connections, 0)
        with self.assertRaises(ConnectionRefusedError):
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Peer())


class TCPProxyArgumentTests(SynchronousTestCase):
    def test_bad_direction_is_named(self) -> None:
        """An unknown direction is rejected with an error naming C{direction}."""
        proxy = TCPProxy(None, "127.0.0.1", 1)
        error = self.assertRaises(ValueError, proxy.drop, "sideways")
        self.assertIn("direction", str(error))
        error = self.assertRaises(ValueError, proxy.delay, 1, "up")
        self.assertIn("direction", str(error))

    def test_negative_delay_is_named(self) -> None:
        """A negative delay is rejected with an error naming C{seconds}."""
        error = self.assertRaises(ValueError, TCPProxy(None, "127.0.0.1", 1).delay, -1)
        self.assertIn("seconds", str(error))

    def test_port_before_start_is_an_error(self) -> None:
        """Asking for the port before C{start} says to call start()."""
        error = self.assertRaises(RuntimeError, lambda: TCPProxy(None, "127.0.0.1", 1).port)
        self.assertIn("start()", str(error))
