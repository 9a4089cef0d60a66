"""
The benchmark receiver (bench/receiver.py): its hand-written HTTP/1.1 parser
against byte streams, and against real treq POSTs next to what
L{harness.receiver.CallbackReceiver} records for the same POSTs.
"""

from __future__ import annotations

import io
import json
import os
import tempfile

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH

from bench.receiver import (
    FastHTTP,
    FastHTTPFactory,
    Post,
    ReceiverProcess,
    Recorder,
    parse_posts,
    read_items,
    write_items,
)
from harness.receiver import CallbackReceiver


def item(n: int, scheduled: str = "2026-11-27T04:00:01.000Z", pad: str = "") -> dict:
    return {
        "execution_id": f"exec-{n}",
        "job_uuid": f"job-{n % 3}",
        "project_uuid": "p",
        "name": f"n{n}",
        "spec": "@every 1s",
        "data": pad or None,
        "scheduled_at": scheduled,
        "attempt": 1,
    }


def post_bytes(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


class ParserTests(SynchronousTestCase):
    """The protocol over an in-memory transport."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.recorder = Recorder(self.clock)
        self.protocol = FastHTTP(self.recorder)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_pipelined_posts_in_one_read_are_each_recorded_and_answered(self) -> None:
        """Three requests in one segment give three records and three 200 answers, in order."""
        data = b"".join(post_bytes(f"/cb/{n}", json.dumps([item(n)]).encode()) for n in range(3))
        self.protocol.dataReceived(data)
        self.assertEqual([p.path for p in self.recorder.posts], ["/cb/0", "/cb/1", "/cb/2"])
        self.assertEqual(self.transport.value().count(b"HTTP/1.1 200 OK"), 3)
        self.assertFalse(self.transport.disconnecting)

    def test_a_request_fed_byte_by_byte_is_recorded_once_at_the_time_its_body_completes(
        self,
    ) -> None:
        """Arrival is the clock reading when the last body byte came in, not the first."""
        body = json.dumps([item(7)]).encode()
        data = post_bytes("/cb", body)
        for i, byte in enumerate(data):
            if i == len(data) - 1:
                self.clock.advance(2.5)
            self.protocol.dataReceived(bytes([byte]))
        self.assertEqual(self.recorder.posts, [Post(1002.5, "/cb", body)])

    def test_slow_and_hung_paths_record_at_once_and_answer_late_or_never(self) -> None:
        """/slow/<ms>/ answers after that long, /hang/ never; both are recorded on arrival."""
        self.protocol.dataReceived(post_bytes("/slow/1500/x", b"[]"))
        self.assertEqual([p.at for p in self.recorder.posts], [1000.0])
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(1.499)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.001)
        self.assertIn(b"HTTP/1.1 200 OK", self.transport.value())
        hung = StringTransport()
        other = FastHTTP(self.recorder)
        other.makeConnection(hung)
        other.dataReceived(post_bytes("/hang/x", b"[]"))
        self.clock.advance(3600)
        self.assertEqual((len(self.recorder.posts), hung.value()), (2, b""))

    def test_chunked_body_is_reassembled(self) -> None:
        """A chunked POST (with a chunk extension and a trailer) is recorded as its joined body."""
        body = json.dumps([item(1), item(2)]).encode()
        head = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunks = b"".join(
            b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + 10]), body[i : i + 10])
            for i in range(0, len(body), 10)
        )
        self.protocol.dataReceived(head + chunks + b"0\r\nX-Trailer: y\r\n\r\n")
        self.assertEqual(self.recorder.posts, [Post(1000.0, "/c", body)])
        self.assertIn(b"200 OK", self.transport.value())

    def test_post_without_length_is_answered_411_and_closed(self) -> None:
        """A POST with neither Content-Length nor chunked encoding gets 411 naming what it needs."""
        self.protocol.dataReceived(b"POST /cb HTTP/1.1\r\nHost: x\r\n\r\n{}")
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 411 Length Required"))
        self.assertIn(b"Content-Length", self.transport.value())
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.recorder.posts, [])

    def test_connection_close_is_honoured(self) -> None:
        """With C{Connection: close} the answer says so and the connection is closed after it."""
        self.protocol.dataReceived(post_bytes("/cb", b"[]", "Connection: close\r\n"))
        self.assertIn(b"Connection: close", self.transport.value())
        self.assertTrue(self.transport.disconnecting)

    def test_bad_content_length_is_400_naming_the_header(self) -> None:
        """A non-numeric Content-Length is refused with 400 naming content-length."""
        self.protocol.dataReceived(b"POST /cb HTTP/1.1\r\nContent-Length: ten\r\n\r\n")
        self.assertIn(b"400 Bad Request", self.transport.value())
        self.assertIn(b"content-length", self.transport.value())

    def test_parse_posts_reads_items_and_their_scheduled_instant(self) -> None:
        """Items of array and single-object bodies carry the POST's arrival; bad JSON is skipped."""
        posts = [
            Post(5.0, "/a", json.dumps([item(1), item(2)]).encode()),
            Post(6.0, "/b", json.dumps(item(3, "1970-01-01T00:00:01.250Z")).encode()),
            Post(7.0, "/c", b"not json"),
        ]
        items = parse_posts(posts)
        self.assertEqual(
            [(i.arrival, i.path, i.execution_id) for i in items],
            [(5.0, "/a", "exec-1"), (5.0, "/a", "exec-2"), (6.0, "/b", "exec-3")],
        )
        self.assertEqual(items[2].scheduled_at, 1.25)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "items.tsv")
            write_items(items, path)
            self.assertEqual(read_items(path), items)


class RealPostTests(TestCase):
    """Real treq POSTs over TCP, to this receiver and to CallbackReceiver side by side."""

    async def _listen(self) -> tuple[Recorder, int, CallbackReceiver, int]:
        recorder = Recorder(reactor)
        port = reactor.listenTCP(0, FastHTTPFactory(recorder), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        reference = CallbackReceiver(reactor)
        reference_port = await reference.listen(reactor)
        self.addCleanup(reference.stop)
        return recorder, port.getHost().port, reference, reference_port

    def _client(self, persistent: bool = True) -> HTTPClient:
        # CallbackReceiver.stop cannot abort a kept-alive HTTP channel, so it
        # gets a client that closes each connection.
        pool = HTTPConnectionPool(reactor, persistent=persistent)
        pool.maxPersistentPerHost = 1
        self.addCleanup(pool.closeCachedConnections)
        return HTTPClient(Agent(reactor, pool=pool))

    async def test_keep_alive_posts_match_what_the_reference_receiver_records(self) -> None:
        """
        Several POSTs on one kept-alive connection, one of them 2 MB, arrive
        with the same items and paths as CallbackReceiver records, and each
        arrival lies between sending the POST and reading its answer.
        """
        recorder, port, reference, reference_port = await self._listen()
        clients = {port: self._client(), reference_port: self._client(persistent=False)}
        bodies = [
            [item(1), item(2)],
            [item(3, pad="x" * (2 * 1024 * 1024))],
            [item(4), item(5), item(6)],
        ]
        windows = []
        for n, body in enumerate(bodies):
            for target in (port, reference_port):
                before = reactor.seconds()
                response = await clients[target].post(
                    f"http://127.0.0.1:{target}/cb/{n}",
                    data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                )
                self.assertEqual(response.code, 200)
                await response.content()
                if target == port:
                    windows.append((before, reactor.seconds()))
        self.assertEqual(recorder.connections, 1)
        items = parse_posts(recorder.posts)
        expected = [
            (a.path, a.item["execution_id"], a.item["scheduled_at"]) for a in reference.arrivals
        ]
        self.assertEqual(
            [(i.path, i.execution_id, "2026-11-27T04:00:01.000Z") for i in items], expected
        )
        self.assertEqual(len(recorder.posts[1].body), len(reference.arrivals[2].body))
        for post, (before, after) in zip(recorder.posts, windows, strict=True):
            self.assertTrue(before <= post.at <= after, (before, post.at, after))

    async def test_chunked_treq_post_is_recorded(self) -> None:
        """A POST whose body length is unknown to the client (sent chunked) is recorded whole."""
        recorder, port, reference, reference_port = await self._listen()
        clients = {port: self._client(), reference_port: self._client(persistent=False)}
        body = json.dumps([item(n) for n in range(50)]).encode()
        for target in (port, reference_port):
            producer = FileBodyProducer(io.BytesIO(body))
            producer.length = UNKNOWN_LENGTH
            response = await clients[target].post(
                f"http://127.0.0.1:{target}/chunked", data=producer
            )
            self.assertEqual(response.code, 200)
            await response.content()
        self.assertEqual([p.body for p in recorder.posts], [body])
        self.assertEqual(
            [i.execution_id for i in parse_posts(recorder.posts)],
            [a.item["execution_id"] for a in reference.arrivals],
        )


class ProcessTests(TestCase):
    """The receiver as its own process, driven the way the benchmarks drive it."""

    async def test_dump_returns_the_items_and_the_receivers_own_cpu_use(self) -> None:
        """After POSTs, C{dump} gives every item and CPU seconds; a second dump starts empty."""
        receiver = ReceiverProcess(reactor)
        port = await receiver.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(receiver.stop()))
        await receiver.reset()
        for n in range(3):
            response = await treq.post(
                f"http://127.0.0.1:{port}/cb", data=json.dumps([item(n)]).encode(), persistent=False
            )
            self.assertEqual(response.code, 200)
            await response.content()
        with tempfile.TemporaryDirectory() as folder:
            stats, items = await receiver.dump(os.path.join(folder, "a.tsv"))
            self.assertEqual([i.execution_id for i in items], ["exec-0", "exec-1", "exec-2"])
            self.assertEqual((stats["posts"], stats["items"]), (3, 3))
            self.assertGreaterEqual(stats["cpu_user_s"] + stats["cpu_sys_s"], 0.0)
            self.assertIn("cpu_percent_of_one_core", stats)
            stats, items = await receiver.dump(os.path.join(folder, "b.tsv"))
            self.assertEqual((stats["posts"], items), (0, []))
