"""
Tests for the Raft TCP transport: framing, the authenticated handshake, the
per-peer pool, reconnect backoff and the IO timeouts.

Almost everything runs over in-memory transports (StringTransport and
twisted.test.iosim) on a task.Clock; one test uses real TCP on 127.0.0.1.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from scheduler0.raft.framing import (
    HANDSHAKE_MAX_FRAME,
    KIND_DATA,
    WELCOME,
    Auth,
    Challenge,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    HandshakeError,
    Hello,
    client_proof,
    data_frame_parts,
    derive_link_key,
    encode_frame,
    frame_parts,
    server_proof,
)
from scheduler0.raft.transport import IRaftTransport, RaftTransport, parse_peer_address

SECRET = b"cluster secret for tests"


class FixedRandom:
    """An RNG whose random() always returns the same value."""

    def __init__(self, value: float = 0.0):
        self.value = value

    def random(self) -> float:
        return self.value


def advance_to_next_call(clock: task.Clock) -> None:
    """Advance C{clock} to its earliest pending call."""
    clock.advance(min(call.getTime() for call in clock.getDelayedCalls()) - clock.seconds())


def address_of(node_id: int) -> str:
    return f"10.0.0.{node_id}:7071"


class FakePort:
    """The listening port of a L{FakeServerEndpoint}."""

    def __init__(self, network: FakeNetwork, address: str):
        self.network = network
        self.address = address

    def stopListening(self):
        self.network.listeners.pop(self.address, None)
        return succeed(None)

    def getHost(self):
        host, port = parse_peer_address(0, self.address)
        return IPv4Address("TCP", host, port)


class FakeServerEndpoint:
    def __init__(self, network: FakeNetwork, address: str):
        self.network = network
        self.address = address

    def listen(self, factory):
        self.network.listeners[self.address] = factory
        return succeed(FakePort(self.network, self.address))


class FakeClientEndpoint:
    def __init__(self, network: FakeNetwork, address: str):
        self.network = network
        self.address = address

    def connect(self, factory):
        return self.network.connect(self.address, factory)


class FakeConnection:
    """One connection of the fake network: its pump and both protocols."""

    def __init__(self, address, pump, server, client):
        self.address = address
        self.pump = pump
        self.server = server
        self.client = client


class FakeNetwork:
    """
    An in-memory network of iosim connections on a task.Clock.  Addresses
    with nobody listening refuse; addresses in C{black_holes} never answer
    the connect; nothing moves until L{flush} pumps it.
    """

    def __init__(self):
        self.clock = task.Clock()
        self.listeners: dict[str, object] = {}
        self.connections: list[FakeConnection] = []
        self.attempts: list[tuple[float, str]] = []
        self.black_holes: set[str] = set()

    def endpoint_factory(self, host: str, port: int) -> FakeClientEndpoint:
        return FakeClientEndpoint(self, f"{host}:{port}")

    def connect(self, address, factory):
        self.attempts.append((self.clock.seconds(), address))
        if address in self.black_holes:
            return Deferred()
        server_factory = self.listeners.get(address)
        if server_factory is None:
            return fail(ConnectionRefusedError(address))
        server = server_factory.buildProtocol(None)
        client = factory.buildProtocol(None)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            client,
            iosim.FakeTransport(client, isServer=False),
            greet=False,
            clock=self.clock,
        )
        self.connections.append(FakeConnection(address, pump, server, client))
        return succeed(client)

    def flush(self, connections=None) -> None:
        """Pump the given connections (default: all) until nothing moves."""
        for _ in range(1000):
            pumps = [c.pump for c in (self.connections if connections is None else connections)]
            if not any([pump.pump() for pump in pumps]):
                return
        raise AssertionError("network did not settle")

    def to(self, address: str) -> list[FakeConnection]:
        return [c for c in self.connections if c.address == address]


class Node:
    """A RaftTransport on the fake network plus the messages it received."""

    def __init__(self, network: FakeNetwork, node_id: int, peer_ids, secret=SECRET, **kwargs):
        self.network = network
        self.received: list[tuple[int, bytes]] = []
        kwargs.setdefault("rng", FixedRandom(0.0))
        self.transport = RaftTransport(
            reactor=network.clock,
            node_id=node_id,
            secret_key=secret,
            listen_endpoint=FakeServerEndpoint(network, address_of(node_id)),
            peers={peer: address_of(peer) for peer in peer_ids},
            on_message=lambda sender, payload: self.received.append((sender, payload)),
            connect_endpoint_factory=network.endpoint_factory,
            **kwargs,
        )

    def start(self, case: unittest.SynchronousTestCase) -> None:
        case.successResultOf(self.transport.start())


def cluster(case, count=2, **kwargs) -> tuple[FakeNetwork, list[Node]]:
    """Start C{count} nodes that are peers of each other and let them connect."""
    network = FakeNetwork()
    ids = list(range(1, count + 1))
    nodes = [Node(network, i, [p for p in ids if p != i], **kwargs) for i in ids]
    for node in nodes:
        node.start(case)
    network.flush()
    # Nodes started before their peers listened retry after the first backoff.
    network.clock.advance(nodes[0].transport.backoff_delay(1))
    network.flush()
    for node in nodes:
        assert all(s["connected"] for s in node.transport.stats().values()), node.transport.stats()
    return network, nodes


def server_protocol(transport: RaftTransport):
    """An accepting-side protocol of C{transport} on a StringTransport."""
    protocol = transport.factory.buildProtocol(None)
    wire = StringTransport()
    protocol.makeConnection(wire)
    return protocol, wire


def written_frames(wire: StringTransport) -> list[bytes]:
    frames = FrameDecoder(HANDSHAKE_MAX_FRAME).feed(wire.value())
    wire.clear()
    return frames


def client_handshake(protocol, wire, *, client_id=2, server_id=1, secret=SECRET):
    """
    Play the connecting side of the handshake by hand; return the challenge
    received and every byte sent.
    """
    nonce = os.urandom(32)
    hello = encode_frame(Hello(client_id, server_id, nonce).encode())
    protocol.dataReceived(hello)
    frames = written_frames(wire)
    if len(frames) != 1:
        return None, hello
    challenge = Challenge.decode(frames[0])
    mac = client_proof(derive_link_key(secret), client_id, server_id, nonce, challenge.server_nonce)
    auth = encode_frame(Auth(mac).encode())
    protocol.dataReceived(auth)
    return challenge, hello + auth


def standalone(node_id=1, peer_ids=(2,), **kwargs) -> tuple[RaftTransport, list]:
    received: list[tuple[int, bytes]] = []
    transport = RaftTransport(
        reactor=kwargs.pop("clock", task.Clock()),
        node_id=node_id,
        secret_key=kwargs.pop("secret", SECRET),
        listen_endpoint=None,
        peers={p: address_of(p) for p in peer_ids},
        on_message=lambda sender, payload: received.append((sender, payload)),
        **kwargs,
    )
    return transport, received


class FrameDecoderTests(unittest.SynchronousTestCase):
    """The length-prefixed frame format."""

    def test_frame_split_across_many_reads_is_reassembled(self):
        """A frame delivered one byte at a time comes out whole, once."""
        decoder = FrameDecoder(1024)
        wire = encode_frame(b"hello raft")
        out = []
        for i in range(len(wire)):
            out.extend(decoder.feed(wire[i : i + 1]))
            if i < len(wire) - 1:
                self.assertEqual(out, [])
        self.assertEqual(out, [b"hello raft"])
        self.assertEqual(decoder.buffered, 0)

    def test_many_frames_in_one_read_come_out_in_order(self):
        """Several frames and the start of another in one read: the complete ones, in order."""
        decoder = FrameDecoder(1024)
        bodies = [bytes([i]) * (i + 1) for i in range(50)]
        tail = encode_frame(b"partial")
        wire = b"".join(encode_frame(b) for b in bodies) + tail[:6]
        self.assertEqual(decoder.feed(wire), bodies)
        self.assertEqual(decoder.feed(tail[6:]), [b"partial"])

    @settings(max_examples=200, derandomize=True, deadline=None)
    @given(
        bodies=st.lists(st.binary(min_size=1, max_size=300), max_size=20),
        cuts=st.lists(st.integers(min_value=0, max_value=7000), max_size=30),
    )
    def test_any_split_of_a_frame_stream_yields_the_same_frames(self, bodies, cuts):
        """However the byte stream is cut into reads, the decoder yields exactly the frames sent."""
        wire = b"".join(encode_frame(b) for b in bodies)
        points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
        decoder = FrameDecoder(300)
        out = []
        for start, end in zip(points, points[1:], strict=False):
            out.extend(decoder.feed(wire[start:end]))
        self.assertEqual(out, bodies)
        self.assertEqual(decoder.buffered, 0)

    def test_length_prefix_is_four_bytes_big_endian(self):
        """The prefix is the body length as a 4-byte big-endian integer."""
        self.assertEqual(encode_frame(b"x" * 258)[:4], b"\x00\x00\x01\x02")

    def test_oversized_length_is_rejected_before_the_body_arrives(self):
        """A length above max_frame raises as soon as the 4-byte prefix is in."""
        decoder = FrameDecoder(100)
        self.assertEqual(decoder.feed(encode_frame(b"y" * 100)), [b"y" * 100])
        self.assertRaises(FrameTooLarge, decoder.feed, (101).to_bytes(4, "big"))

    def test_zero_length_is_malformed(self):
        """A zero length is rejected: every frame carries at least its kind byte."""
        self.assertRaises(FrameError, FrameDecoder(100).feed, b"\x00\x00\x00\x00")

    def test_encoder_refuses_empty_and_oversized_bodies(self):
        """The encoder will not produce a frame the decoder would reject."""
        self.assertRaises(FrameError, frame_parts, b"", 100)
        self.assertRaises(FrameTooLarge, frame_parts, b"z" * 101, 100)
        self.assertRaises(FrameTooLarge, data_frame_parts, b"z" * 100, 100)
        self.assertEqual(b"".join(data_frame_parts(b"z" * 99, 100))[4], KIND_DATA)

    def test_hello_round_trips_and_rejects_wrong_version(self):
        """A hello decodes to what was encoded; another version or size is refused."""
        hello = Hello(7, 9, b"n" * 32)
        self.assertEqual(Hello.decode(hello.encode()), hello)
        body = bytearray(hello.encode())
        body[7] = 99  # the version byte follows the kind byte and 6-byte magic
        self.assertRaises(HandshakeError, Hello.decode, bytes(body))
        self.assertRaises(HandshakeError, Hello.decode, hello.encode()[:-1])


class HandshakeTests(unittest.SynchronousTestCase):
    """The accepting side of the handshake, driven byte by byte."""

    def test_valid_handshake_is_welcomed_and_data_delivered(self):
        """A peer with the secret and a known node id is welcomed; its data reaches on_message."""
        transport, received = standalone()
        protocol, wire = server_protocol(transport)
        challenge, _ = client_handshake(protocol, wire)
        self.assertEqual(challenge.server_id, 1)
        self.assertEqual(written_frames(wire), [WELCOME])
        big = b"B" * 5000  # above the pre-handshake limit, fine after it
        protocol.dataReceived(b"".join(data_frame_parts(b"one")) + b"".join(data_frame_parts(big)))
        self.assertEqual(received, [(2, b"one"), (2, big)])
        self.assertFalse(wire.disconnecting)
        self.assertEqual(transport.stats()[2]["received"], 2)

    def test_server_proves_knowledge_of_the_secret(self):
        """The challenge's MAC is the server proof over both nonces and ids."""
        transport, _ = standalone()
        protocol, wire = server_protocol(transport)
        nonce = b"c" * 32
        protocol.dataReceived(encode_frame(Hello(2, 1, nonce).encode()))
        (body,) = written_frames(wire)
        challenge = Challenge.decode(body)
        expected = server_proof(derive_link_key(SECRET), 2, 1, nonce, challenge.server_nonce)
        self.assertEqual(challenge.server_mac, expected)
        wrong = server_proof(derive_link_key(b"other"), 2, 1, nonce, challenge.server_nonce)
        self.assertNotEqual(challenge.server_mac, wrong)

    def test_secret_never_appears_on_the_wire(self):
        """Neither the secret nor the derived key is sent by either side."""
        transport, _ = standalone()
        protocol, wire = server_protocol(transport)
        _, sent = client_handshake(protocol, wire)
        everything = sent + wire.value()
        self.assertNotIn(SECRET, everything)
        self.assertNotIn(derive_link_key(SECRET), everything)

    def test_garbage_before_handshake_drops_the_connection(self):
        """An HTTP request instead of a hello is dropped; nothing is delivered."""
        transport, received = standalone()
        protocol, wire = server_protocol(transport)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(wire.disconnecting)
        self.assertEqual(received, [])
        self.assertEqual(transport.rejected_inbound, 1)

    def test_large_frame_before_handshake_drops_the_connection(self):
        """Before authentication a frame longer than any handshake message is refused."""
        transport, _ = standalone()
        protocol, wire = server_protocol(transport)
        protocol.dataReceived((HANDSHAKE_MAX_FRAME + 1).to_bytes(4, "big"))
        self.assertTrue(wire.disconnecting)

    def test_data_before_handshake_drops_the_connection(self):
        """A well-formed data frame sent before the handshake is refused, not delivered."""
        transport, received = standalone()
        protocol, wire = server_protocol(transport)
        protocol.dataReceived(b"".join(data_frame_parts(b"append entries")))
        self.assertTrue(wire.disconnecting)
        self.assertEqual(received, [])

    def test_data_between_hello_and_auth_drops_the_connection(self):
        """A data frame in place of the auth message is refused."""
        transport, received = standalone()
        protocol, wire = server_protocol(transport)
        protocol.dataReceived(encode_frame(Hello(2, 1, b"n" * 32).encode()))
        self.assertFalse(wire.disconnecting)
        protocol.dataReceived(b"".join(data_frame_parts(b"sneaky")))
        self.assertTrue(wire.disconnecting)
        self.assertEqual(received, [])

    def test_wrong_secret_is_dropped_without_welcome(self):
        """A client that signs with another secret gets no welcome and is dropped."""
        transport, received = standalone()
        protocol, wire = server_protocol(transport)
        client_handshake(protocol, wire, secret=b"not the cluster secret")
        self.assertEqual(written_frames(wire), [])
        self.assertTrue(wire.disconnecting)
        protocol.dataReceived(b"".join(data_frame_parts(b"x")))
        self.assertEqual(received, [])
        self.assertEqual(transport.rejected_inbound, 1)

    def test_unknown_client_node_id_is_dropped(self):
        """A hello from a node that is not a peer is dropped before any challenge."""
        transport, _ = standalone(peer_ids=(2, 3))
        protocol, wire = server_protocol(transport)
        challenge, _ = client_handshake(protocol, wire, client_id=4)
        self.assertIsNone(challenge)
        self.assertTrue(wire.disconnecting)

    def test_client_claiming_our_own_node_id_is_dropped(self):
        """A hello that claims to come from this very node is dropped."""
        transport, _ = standalone(node_id=1, peer_ids=(2,))
        protocol, wire = server_protocol(transport)
        challenge, _ = client_handshake(protocol, wire, client_id=1)
        self.assertIsNone(challenge)
        self.assertTrue(wire.disconnecting)

    def test_hello_for_another_node_id_is_dropped(self):
        """A hello addressed to node 3 reaching node 1 is dropped."""
        transport, _ = standalone(node_id=1, peer_ids=(2,))
        protocol, wire = server_protocol(transport)
        challenge, _ = client_handshake(protocol, wire, server_id=3)
        self.assertIsNone(challenge)
        self.assertTrue(wire.disconnecting)

    def test_replayed_handshake_is_dropped(self):
        """The exact bytes of a successful handshake, replayed on a new connection, fail."""
        transport, received = standalone()
        first, first_wire = server_protocol(transport)
        _, recorded = client_handshake(first, first_wire)
        self.assertEqual(written_frames(first_wire), [WELCOME])
        second, second_wire = server_protocol(transport)
        second.dataReceived(recorded + b"".join(data_frame_parts(b"replayed")))
        frames = written_frames(second_wire)
        self.assertEqual(len(frames), 1)  # the fresh challenge, no welcome
        Challenge.decode(frames[0])
        self.assertTrue(second_wire.disconnecting)
        self.assertEqual(received, [])

    def test_handshake_not_completed_in_time_is_dropped(self):
        """A connection that stops after its hello is dropped once the timeout passes."""
        clock = task.Clock()
        transport, _ = standalone(clock=clock, timeout_s=1.5)
        protocol, wire = server_protocol(transport)
        protocol.dataReceived(encode_frame(Hello(2, 1, b"n" * 32).encode()))
        clock.advance(1.4)
        self.assertFalse(wire.disconnecting)
        clock.advance(0.2)
        self.assertTrue(wire.disconnecting)
        self.assertEqual(transport.rejected_inbound, 1)

    def test_completed_handshake_cancels_its_timeout(self):
        """An authenticated connection is not dropped by the handshake timer."""
        clock = task.Clock()
        transport, _ = standalone(clock=clock)
        protocol, wire = server_protocol(transport)
        client_handshake(protocol, wire)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(wire.disconnecting)

    def test_oversized_frame_after_handshake_drops_the_connection(self):
        """After the handshake a frame above max_frame drops the connection."""
        transport, received = standalone(max_frame=2048)
        protocol, wire = server_protocol(transport)
        client_handshake(protocol, wire)
        protocol.dataReceived((2049).to_bytes(4, "big") + b"\x10")
        self.assertTrue(wire.disconnecting)
        self.assertEqual(received, [])

    def test_unknown_frame_kind_after_handshake_drops_the_connection(self):
        """A frame of unknown kind after the handshake drops the connection."""
        transport, _ = standalone()
        protocol, wire = server_protocol(transport)
        client_handshake(protocol, wire)
        protocol.dataReceived(encode_frame(b"\x63 what"))
        self.assertTrue(wire.disconnecting)

    def test_on_message_errors_do_not_break_the_connection(self):
        """An exception in on_message is logged; later messages still arrive."""
        calls = []

        def on_message(sender, payload):
            calls.append(payload)
            if payload == b"boom":
                raise RuntimeError("handler bug")

        transport, _ = standalone()
        transport.on_message = on_message
        protocol, wire = server_protocol(transport)
        client_handshake(protocol, wire)
        protocol.dataReceived(
            b"".join(data_frame_parts(b"boom")) + b"".join(data_frame_parts(b"ok"))
        )
        self.assertEqual(calls, [b"boom", b"ok"])
        self.assertFalse(wire.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ConstructionTests(unittest.SynchronousTestCase):
    """Configuration errors name what is wrong."""

    def test_provides_the_transport_interface(self):
        """RaftTransport provides IRaftTransport."""
        transport, _ = standalone()
        self.assertTrue(verifyObject(IRaftTransport, transport))

    def test_bad_peer_address_names_the_peer(self):
        """A malformed peer address is rejected with the peer's id in the message."""
        transport, _ = standalone(peer_ids=())
        error = self.assertRaises(ValueError, transport.set_peers, {5: "nohost"})
        self.assertIn("peers[5]", str(error))
        error = self.assertRaises(ValueError, transport.set_peers, {5: "h:99999"})
        self.assertIn("peers[5]", str(error))

    def test_bad_parameters_name_the_parameter(self):
        """Bad node_id, secret_key, max_pool and timeout_s are each named in the error."""
        for kwargs, name in [
            ({"node_id": 0}, "node_id"),
            ({"secret": b""}, "secret_key"),
            ({"max_pool": 0}, "max_pool"),
            ({"timeout_s": 0}, "timeout_s"),
            ({"max_frame": 10}, "max_frame"),
        ]:
            error = self.assertRaises(ValueError, standalone, **kwargs)
            self.assertIn(name, str(error))

    def test_ipv6_peer_address_is_parsed(self):
        """A bracketed IPv6 peer address splits into host and port."""
        self.assertEqual(parse_peer_address(2, "[::1]:7071"), ("::1", 7071))

    def test_own_node_id_in_peers_is_ignored(self):
        """A peer list that contains this node (a replica list) does not make it its own peer."""
        transport, _ = standalone(node_id=1, peer_ids=(1, 2))
        self.assertEqual(sorted(transport.stats()), [2])


class TransportTests(unittest.SynchronousTestCase):
    """Two or more transports over the in-memory network."""

    def test_messages_flow_both_ways_in_order(self):
        """Each node receives the other's messages, in the order they were sent."""
        network, (a, b) = cluster(self)
        for i in range(20):
            a.transport.send(2, b"a%d" % i)
            b.transport.send(1, b"b%d" % i)
        network.flush()
        self.assertEqual(b.received, [(1, b"a%d" % i) for i in range(20)])
        self.assertEqual(a.received, [(2, b"b%d" % i) for i in range(20)])
        stats = a.transport.stats()[2]
        self.assertEqual((stats["sent"], stats["received"], stats["dropped"]), (20, 20, 0))
        self.assertTrue(stats["connected"])

    def test_messages_sent_while_connecting_are_delivered_after_handshake(self):
        """A message sent before the handshake completes waits and is then delivered in order."""
        network = FakeNetwork()
        a, b = Node(network, 1, [2]), Node(network, 2, [1])
        b.start(self)
        a.start(self)
        a.transport.send(2, b"first")
        a.transport.send(2, b"second")
        self.assertEqual(b.received, [])
        network.flush()
        self.assertEqual(b.received, [(1, b"first"), (1, b"second")])

    def test_send_without_connection_drops_and_counts(self):
        """With the peer unreachable, send returns at once and counts the drop."""
        network = FakeNetwork()
        a = Node(network, 1, [2])
        a.start(self)
        a.transport.send(2, b"lost")
        a.transport.send(9, b"nobody")
        self.assertEqual(a.transport.stats()[2]["dropped"], 1)
        self.assertEqual(a.transport.dropped_unknown, 1)
        self.assertFalse(a.transport.stats()[2]["connected"])

    def test_message_above_max_frame_is_dropped(self):
        """A payload that does not fit in max_frame is dropped and counted, not sent."""
        network, (a, b) = cluster(self, max_frame=4096)
        a.transport.send(2, b"x" * 4096)
        network.flush()
        self.assertEqual(b.received, [])
        self.assertEqual(a.transport.stats()[2]["dropped"], 1)

    def test_wrong_secret_between_nodes_never_connects(self):
        """Nodes with different secrets never exchange a message."""
        network = FakeNetwork()
        a = Node(network, 1, [2], secret=b"one secret")
        b = Node(network, 2, [1], secret=b"another secret")
        a.start(self)
        b.start(self)
        network.flush()
        a.transport.send(2, b"hi")
        network.flush()
        self.assertEqual(b.received, [])
        self.assertFalse(a.transport.stats()[2]["connected"])
        self.assertGreaterEqual(a.transport.stats()[2]["connect_failures"], 1)
        self.assertEqual(b.transport.stats()[1]["inbound"], 0)

    def test_reaching_the_wrong_node_fails_the_handshake(self):
        """A client that expects node 2 but reaches node 3 at that address does not connect."""
        network = FakeNetwork()
        a = Node(network, 1, [2])
        impostor = Node(network, 3, [1])
        impostor.transport.listen_endpoint = FakeServerEndpoint(network, address_of(2))
        impostor.start(self)
        a.start(self)
        network.flush()
        self.assertFalse(a.transport.stats()[2]["connected"])
        self.assertEqual(a.transport.stats()[2]["connect_failures"], 1)
        self.assertEqual(impostor.transport.rejected_inbound, 1)

    def scripted_server(self, network, answer):
        """
        Listen at node 2's address with a protocol that answers a hello with
        C{answer(hello)} and records everything it receives afterwards.
        """
        received = []

        class Scripted(Protocol):
            def connectionMade(self):
                self.decoder = FrameDecoder(HANDSHAKE_MAX_FRAME)

            def dataReceived(self, data):
                for body in self.decoder.feed(data):
                    if body[0] == 1:
                        self.transport.write(encode_frame(answer(Hello.decode(body))))
                    else:
                        received.append(body)

        network.listeners[address_of(2)] = Factory.forProtocol(Scripted)
        return received

    def test_client_drops_a_server_with_the_wrong_node_id(self):
        """A server that proves the secret but is node 3, not the expected node 2, is dropped."""
        network = FakeNetwork()
        key = derive_link_key(SECRET)

        def answer(hello):
            nonce = b"s" * 32
            mac = server_proof(key, hello.client_id, 3, hello.client_nonce, nonce)
            return Challenge(3, nonce, mac).encode()

        after_hello = self.scripted_server(network, answer)
        a = Node(network, 1, [2])
        a.start(self)
        network.flush()
        self.assertEqual(after_hello, [])  # no auth was sent
        self.assertEqual(a.transport.stats()[2]["connect_failures"], 1)
        self.assertTrue(network.connections[0].pump.clientIO.disconnecting)

    def test_client_drops_a_server_that_cannot_prove_the_secret(self):
        """A server whose challenge MAC is not made with the cluster key gets no auth."""
        network = FakeNetwork()
        key = derive_link_key(b"guessed secret")

        def answer(hello):
            nonce = b"s" * 32
            mac = server_proof(key, hello.client_id, 2, hello.client_nonce, nonce)
            return Challenge(2, nonce, mac).encode()

        after_hello = self.scripted_server(network, answer)
        a = Node(network, 1, [2])
        a.start(self)
        network.flush()
        self.assertEqual(after_hello, [])
        self.assertEqual(a.transport.stats()[2]["connect_failures"], 1)

    def test_client_with_correct_server_sends_auth(self):
        """Against a correct server the client sends its proof (control for the tests above)."""
        network = FakeNetwork()
        key = derive_link_key(SECRET)

        def answer(hello):
            nonce = b"s" * 32
            mac = server_proof(key, hello.client_id, 2, hello.client_nonce, nonce)
            return Challenge(2, nonce, mac).encode()

        after_hello = self.scripted_server(network, answer)
        a = Node(network, 1, [2])
        a.start(self)
        network.flush()
        self.assertEqual([body[0] for body in after_hello], [Auth(b"m" * 32).encode()[0]])

    def test_reconnect_backs_off_exponentially_up_to_the_cap(self):
        """Failed connects are retried after 0.1, 0.2, 0.4 ... seconds, capped at backoff_max_s."""
        network = FakeNetwork()
        a = Node(network, 1, [2], backoff_initial_s=0.1, backoff_max_s=1.0)
        a.start(self)
        for _ in range(8):
            advance_to_next_call(network.clock)
        times = [round(t, 6) for t, _ in network.attempts]
        self.assertEqual(times, [0.0, 0.1, 0.3, 0.7, 1.5, 2.5, 3.5, 4.5, 5.5])
        self.assertEqual(a.transport.stats()[2]["connect_failures"], 9)

    def test_backoff_jitter_shortens_the_delay_by_the_rng(self):
        """The RNG's draw shortens each delay by up to backoff_jitter of itself."""
        transport, _ = standalone(rng=FixedRandom(0.5), backoff_initial_s=0.1, backoff_jitter=0.5)
        self.assertAlmostEqual(transport.backoff_delay(1), 0.075)
        self.assertAlmostEqual(transport.backoff_delay(3), 0.3)
        transport.rng = FixedRandom(0.0)
        self.assertAlmostEqual(transport.backoff_delay(3), 0.4)

    def test_backoff_resets_after_a_successful_connect(self):
        """After a connection succeeds and is later lost, the next retry uses the initial delay."""
        network = FakeNetwork()
        a = Node(network, 1, [2], backoff_initial_s=0.1)
        a.start(self)
        for _ in range(2):  # fail at 0, 0.1, 0.3; next try at 0.7
            advance_to_next_call(network.clock)
        b = Node(network, 2, [1])
        b.start(self)
        network.clock.advance(0.4)
        network.flush()
        self.assertTrue(a.transport.stats()[2]["connected"])
        (connection,) = [c for c in network.to(address_of(2)) if c.client.owner is a.transport]
        connection.server.abort()
        network.flush()
        self.assertFalse(a.transport.stats()[2]["connected"])
        attempts = len(network.attempts)
        network.clock.advance(0.1)
        self.assertEqual(len(network.attempts), attempts + 1)
        network.flush()
        self.assertTrue(a.transport.stats()[2]["connected"])

    def test_connect_that_never_completes_times_out_and_retries(self):
        """A connect with no answer is abandoned after timeout_s and retried with backoff."""
        network = FakeNetwork()
        network.black_holes.add(address_of(2))
        a = Node(network, 1, [2], timeout_s=1.0, backoff_initial_s=0.1)
        a.start(self)
        network.clock.advance(0.99)
        self.assertEqual(a.transport.stats()[2]["connect_failures"], 0)
        network.clock.advance(0.01)
        self.assertEqual(a.transport.stats()[2]["connect_failures"], 1)
        network.clock.advance(0.1)
        self.assertEqual([round(t, 6) for t, _ in network.attempts], [0.0, 1.1])

    def test_server_that_never_answers_the_hello_times_out(self):
        """A listener that accepts but never answers is abandoned after timeout_s."""
        network = FakeNetwork()
        a = Node(network, 1, [2], timeout_s=1.0)
        network.listeners[address_of(2)] = Factory.forProtocol(Protocol)
        a.start(self)
        network.flush()
        (connection,) = network.connections
        self.assertFalse(connection.pump.clientIO.disconnecting)
        network.clock.advance(1.0)
        self.assertTrue(connection.pump.clientIO.disconnecting)
        network.flush()
        self.assertEqual(a.transport.stats()[2]["connect_failures"], 1)
        self.assertFalse(a.transport.stats()[2]["connected"])

    def test_small_messages_are_not_blocked_behind_a_large_one(self):
        """A heartbeat sent after a snapshot chunk arrives while the chunk is still in flight."""
        network, (a, b) = cluster(self, large_frame_threshold=1024)
        control = list(network.connections)
        a.transport.send(2, b"S" * 200_000)
        a.transport.send(2, b"heartbeat")
        self.assertEqual(len(network.connections), len(control) + 1)
        network.flush(control)  # move only the existing (control) connections
        self.assertEqual(b.received, [(1, b"heartbeat")])
        network.flush()
        self.assertEqual(b.received, [(1, b"heartbeat"), (1, b"S" * 200_000)])

    def test_large_messages_to_one_peer_share_one_bulk_connection_in_order(self):
        """Large messages that are not backed up go on one bulk connection and stay in order."""
        network, (a, b) = cluster(self, large_frame_threshold=100)
        before = len(network.connections)
        big = [bytes([i]) * 1000 for i in range(5)]
        for payload in big:
            a.transport.send(2, payload)
        network.flush()
        self.assertEqual(len(network.connections), before + 1)
        self.assertEqual([p for _, p in b.received], big)

    def test_pool_never_exceeds_max_pool_connections_per_peer(self):
        """With every bulk connection backed up, no more than max_pool connections are opened."""
        network, (a, b) = cluster(self, large_frame_threshold=100, max_pool=3)
        for _round in range(6):
            a.transport.send(2, b"L" * 1000)
            network.flush()
            for connection in network.to(address_of(2)):
                if connection.client.owner is a.transport and not connection.client.paused:
                    connection.client.pauseProducing()  # simulate a full socket buffer
        outbound = [c for c in network.to(address_of(2)) if c.client.owner is a.transport]
        self.assertEqual(len(outbound), 3)
        self.assertEqual(a.transport.stats()[2]["connections"], 3)
        self.assertEqual(len(b.received), 6)
        self.assertEqual(b.transport.stats()[1]["inbound"], 3)

    def test_pool_of_one_carries_large_messages_on_the_control_connection(self):
        """With max_pool=1 everything goes on the single connection, in order."""
        network, (a, b) = cluster(self, large_frame_threshold=100, max_pool=1)
        before = len(network.connections)
        a.transport.send(2, b"L" * 1000)
        a.transport.send(2, b"small")
        network.flush()
        self.assertEqual(len(network.connections), before)
        self.assertEqual([p for _, p in b.received], [b"L" * 1000, b"small"])

    def test_large_message_is_dropped_while_the_peer_is_unreachable(self):
        """Without a control connection a large message is dropped, not queued on a new link."""
        network = FakeNetwork()
        a = Node(network, 1, [2], large_frame_threshold=100)
        a.start(self)
        a.transport.send(2, b"L" * 1000)
        self.assertEqual(a.transport.stats()[2]["dropped"], 1)
        self.assertEqual(len(network.attempts), 1)

    def test_stalled_write_drops_the_connection_after_the_io_timeout(self):
        """A connection whose buffer does not drain within the IO timeout is dropped, redialled."""
        network, (a, b) = cluster(self, timeout_s=1.0, min_throughput=float(2**30))
        (connection,) = [c for c in network.connections if c.client.owner is a.transport]
        connection.client.pauseProducing()
        network.clock.advance(0.9)
        self.assertFalse(connection.pump.clientIO.disconnecting)
        connection.client.resumeProducing()
        connection.client.pauseProducing()
        network.clock.advance(0.9)
        self.assertFalse(connection.pump.clientIO.disconnecting)
        network.clock.advance(0.2)
        self.assertTrue(connection.pump.clientIO.disconnecting)
        network.flush()
        self.assertFalse(a.transport.stats()[2]["connected"])
        network.clock.advance(a.transport.backoff_initial_s)
        network.flush()
        self.assertTrue(a.transport.stats()[2]["connected"])

    def test_backed_up_connection_drops_beyond_max_pending_bytes(self):
        """Writes to a paused connection are refused once max_pending_bytes would be exceeded."""
        network, (a, b) = cluster(self, max_pending_bytes=3000, max_pool=1)
        (connection,) = [c for c in network.connections if c.client.owner is a.transport]
        connection.client.pauseProducing()
        connection.client.unflushed_bytes = 0
        for _ in range(5):
            a.transport.send(2, b"m" * 999)
        stats = a.transport.stats()[2]
        self.assertEqual((stats["sent"], stats["dropped"]), (3, 2))

    def test_removed_peer_loses_its_connections_and_is_refused(self):
        """After set_peers drops a node, its connections close and it cannot reconnect."""
        network, (a, b) = cluster(self)
        a.transport.set_peers({})
        network.flush()
        self.assertEqual(a.transport.stats(), {})
        b.transport.send(1, b"still there?")
        network.clock.advance(5)
        network.flush()
        self.assertEqual(a.received, [])
        self.assertFalse(b.transport.stats()[1]["connected"])
        self.assertGreaterEqual(a.transport.rejected_inbound, 1)

    def test_added_peer_is_connected(self):
        """A peer added by set_peers is connected and reachable."""
        network, (a, b) = cluster(self)
        c = Node(network, 3, [1, 2])
        c.start(self)
        a.transport.set_peers({2: address_of(2), 3: address_of(3)})
        network.flush()
        a.transport.send(3, b"welcome aboard")
        network.flush()
        self.assertEqual(c.received, [(1, b"welcome aboard")])

    def test_changed_peer_address_reconnects_there(self):
        """When a peer's address changes, the transport connects to the new address."""
        network, (a, b) = cluster(self)
        moved = FakeServerEndpoint(network, "10.9.9.9:7000")
        b2 = Node(network, 2, [1])
        b2.transport.listen_endpoint = moved
        stopped = b.transport.stop()
        network.flush()
        self.assertIsNone(self.successResultOf(stopped))
        b2.start(self)
        a.transport.set_peers({2: "10.9.9.9:7000"})
        network.flush()
        a.transport.send(2, b"found you")
        network.flush()
        self.assertEqual(b2.received, [(1, b"found you")])

    def test_excess_inbound_connections_from_a_peer_close_the_oldest(self):
        """A peer that opens more than max_pool connections loses its oldest ones."""
        transport, _ = standalone(max_pool=2)
        connections = [server_protocol(transport) for _ in range(3)]
        for protocol, wire in connections:
            client_handshake(protocol, wire)
        self.assertEqual([w.disconnecting for _, w in connections], [True, False, False])

    def test_stop_closes_everything_and_cancels_timers(self):
        """stop() closes the listener and all connections, cancels every timer and fires."""
        network, (a, b, c) = cluster(self, count=3)
        b.transport.send(1, b"x")
        stopping = a.transport.stop()
        network.flush()
        self.assertIsNone(self.successResultOf(stopping))
        self.assertNotIn(address_of(1), network.listeners)
        counts = [s["inbound"] + s["connections"] for s in a.transport.stats().values()]
        self.assertEqual(counts, [0, 0])
        a.transport.send(2, b"after stop")
        self.assertEqual(a.transport.stats()[2]["dropped"], 1)

    def test_stop_cancels_pending_reconnects_and_connects(self):
        """stop() during backoff or a hanging connect leaves no delayed call behind."""
        network = FakeNetwork()
        network.black_holes.add(address_of(3))
        a = Node(network, 1, [2, 3])
        a.start(self)
        self.assertNotEqual(network.clock.getDelayedCalls(), [])
        self.successResultOf(a.transport.stop())
        self.assertEqual(network.clock.getDelayedCalls(), [])
        network.clock.advance(100)
        self.assertEqual(len(network.attempts), 2)


class RealTCPTests(unittest.TestCase):
    """Two transports over real TCP on 127.0.0.1."""

    timeout = 15

    async def test_two_transports_exchange_messages_over_tcp(self):
        """Two nodes on 127.0.0.1 authenticate and exchange small and large messages both ways."""
        from twisted.internet import reactor

        inboxes: dict[int, list[tuple[int, bytes]]] = {1: [], 2: []}
        arrivals: dict[tuple[int, int], Deferred] = {
            (node_id, count): Deferred() for node_id in (1, 2) for count in (1, 2)
        }

        def receiver(node_id):
            def on_message(sender, payload):
                inboxes[node_id].append((sender, payload))
                arrival = arrivals.get((node_id, len(inboxes[node_id])))
                if arrival is not None:
                    arrival.callback(None)

            return on_message

        async def arrived(node_id, count):
            await arrivals[node_id, count].addTimeout(10, reactor)

        transports = {
            node_id: RaftTransport(
                reactor=reactor,
                node_id=node_id,
                secret_key=SECRET,
                listen_endpoint=TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                peers={},
                on_message=receiver(node_id),
                timeout_s=5.0,
                large_frame_threshold=1024,
            )
            for node_id in (1, 2)
        }
        ports = {}
        for node_id, transport in transports.items():
            self.addCleanup(transport.stop)
            ports[node_id] = (await transport.start()).getHost().port
        transports[1].set_peers({2: f"127.0.0.1:{ports[2]}"})
        transports[2].set_peers({1: f"127.0.0.1:{ports[1]}"})
        transports[1].send(2, b"hello from 1")  # queued while connecting
        transports[2].send(1, b"hello from 2")
        await arrived(1, 1)
        await arrived(2, 1)
        snapshot = os.urandom(300_000)  # goes on a bulk connection
        transports[1].send(2, snapshot)
        transports[2].send(1, b"ack")
        await arrived(1, 2)
        await arrived(2, 2)
        self.assertEqual(inboxes[2], [(1, b"hello from 1"), (1, snapshot)])
        self.assertEqual(inboxes[1], [(2, b"hello from 2"), (2, b"ack")])
        self.assertEqual(transports[1].stats()[2]["connections"], 2)
