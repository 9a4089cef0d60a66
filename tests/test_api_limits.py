"""
Tests for the HTTP API's limits: the JSON depth scan, the per-credential
rate limiter, and the site's per-request deadline and idle timeout (driven
over in-memory transports on a fake clock, plus one real socket).
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from scheduler0.api.limits import RateLimiter, json_depth_problem
from scheduler0.api.site import APISite, DeadlineHTTPChannel, api_site

# -- JSON depth -------------------------------------------------------------


def nested(depth: int) -> bytes:
    """A JSON document of C{depth} nested arrays around a number."""
    return b"[" * depth + b"1" + b"]" * depth


def depth_of(value: object) -> int:
    """How many arrays and objects deep a decoded JSON value nests."""
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


# Strings full of the characters the scanner must see past.
_tricky_text = st.text(alphabet='[]{}"\\ab\n', max_size=8)
_json_values = st.recursive(
    st.none() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
    max_leaves=25,
)


class JSONDepthTests(SynchronousTestCase):
    def test_shallow_bodies_pass(self) -> None:
        """Scalars, flat and shallow documents have no depth problem."""
        for raw in (b"1", b'"x"', b"[]", b"{}", b'{"a": [1, {"b": 2}]}', b""):
            self.assertIsNone(json_depth_problem(raw, 3), raw)

    def test_exactly_at_the_limit_passes(self) -> None:
        """A body nested exactly max_depth levels deep is allowed."""
        self.assertIsNone(json_depth_problem(nested(32), 32))
        self.assertIsNone(json_depth_problem(b'{"a": {"b": {"c": []}}}', 4))

    def test_one_level_over_the_limit_is_refused(self) -> None:
        """One level more than max_depth is refused with a message naming body and the limit."""
        self.assertEqual(json_depth_problem(nested(33), 32), "body: nested deeper than 32 levels")
        self.assertEqual(
            json_depth_problem(b'{"a": {"b": {"c": [{}]}}}', 4),
            "body: nested deeper than 4 levels",
        )

    def test_depth_is_the_deepest_point_not_the_bracket_count(self) -> None:
        """Many sibling containers at a shallow depth are allowed."""
        raw = json.dumps([[{"a": [1]}] for _ in range(1000)]).encode()
        self.assertIsNone(json_depth_problem(raw, 4))
        self.assertIsNotNone(json_depth_problem(raw, 3))

    def test_brackets_inside_strings_do_not_count(self) -> None:
        """Brackets in string values and keys are text, not nesting."""
        raw = json.dumps({"[[[[{{{{": "[[[[[[[[[[{{{{{{{{", "b": ["]]]]"]}).encode()
        self.assertIsNone(json_depth_problem(raw, 2))

    def test_escaped_quote_does_not_end_a_string(self) -> None:
        """An escaped quote keeps the string open, so the brackets after it are still text."""
        raw = b'["a\\"[[[[[[", "\\"{{{{{"]'
        self.assertIsNone(json_depth_problem(raw, 1))

    def test_escaped_backslash_before_a_quote_ends_the_string(self) -> None:
        """After an escaped backslash the next quote closes the string; later brackets count."""
        raw = b'["a\\\\", [[[1]]]]'
        self.assertEqual(json.loads(raw), ["a\\", [[[1]]]])
        self.assertIsNone(json_depth_problem(raw, 4))
        self.assertEqual(json_depth_problem(raw, 3), "body: nested deeper than 3 levels")

    def test_a_body_a_million_levels_deep_is_refused_quickly(self) -> None:
        """A body nested a million deep is refused in well under a second, without recursion."""
        raw = nested(1_000_000)
        started = time.perf_counter()
        problem = json_depth_problem(raw, 32)
        elapsed = time.perf_counter() - started
        self.assertEqual(problem, "body: nested deeper than 32 levels")
        self.assertLess(elapsed, 2.0)

    def test_a_large_flat_body_is_scanned_quickly(self) -> None:
        """A 4 MiB body of shallow arrays is scanned in linear time and allowed."""
        raw = b"[" + b"[1]," * (1024 * 1024 - 1) + b"[1]]"
        started = time.perf_counter()
        self.assertIsNone(json_depth_problem(raw, 2))
        self.assertLess(time.perf_counter() - started, 2.0)

    @settings(max_examples=300, deadline=None)
    @given(value=_json_values, max_depth=st.integers(min_value=0, max_value=6))
    def test_agrees_with_the_parser(self, value: object, max_depth: int) -> None:
        """For any JSON document the scan refuses exactly those deeper than the limit."""
        raw = json.dumps(value).encode()
        expected = depth_of(value) > max_depth
        self.assertEqual(json_depth_problem(raw, max_depth) is not None, expected, raw)


# -- rate limiting ----------------------------------------------------------


class RateLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def test_a_burst_is_allowed_then_refused(self) -> None:
        """A new key may make burst requests at once; the next is refused."""
        limiter = RateLimiter(self.clock, rate=1, burst=3)
        self.assertEqual([limiter.take("k") for _ in range(3)], [None, None, None])
        self.assertEqual(limiter.take("k"), 1.0)

    def test_tokens_refill_at_the_rate(self) -> None:
        """Tokens come back at rate per second, up to burst."""
        limiter = RateLimiter(self.clock, rate=2, burst=2)
        limiter.take("k")
        limiter.take("k")
        self.assertIsNotNone(limiter.take("k"))
        self.clock.advance(0.5)
        self.assertIsNone(limiter.take("k"))
        self.assertIsNotNone(limiter.take("k"))
        self.clock.advance(100)
        self.assertEqual([limiter.take("k") for _ in range(3)][2], 1.0)

    def test_retry_after_is_the_wait_rounded_up(self) -> None:
        """The answer is the seconds until the next token, rounded up to a whole second."""
        limiter = RateLimiter(self.clock, rate=0.25, burst=1)
        self.assertIsNone(limiter.take("k"))
        self.assertEqual(limiter.take("k"), 4.0)
        self.clock.advance(1.5)
        self.assertEqual(limiter.take("k"), 3.0)
        self.clock.advance(2.5)
        self.assertIsNone(limiter.take("k"))

    def test_retry_after_of_a_whole_second_is_not_rounded_up(self) -> None:
        """A wait of exactly two seconds is answered 2, not 3."""
        limiter = RateLimiter(self.clock, rate=0.5, burst=1)
        limiter.take("k")
        self.assertEqual(limiter.take("k"), 2.0)
        # A third of a token a second: 2 s after a second's wait, whatever the float error.
        limiter = RateLimiter(self.clock, rate=1 / 3, burst=1)
        limiter.take("k")
        self.clock.advance(1)
        self.assertEqual(limiter.take("k"), 2.0)

    def test_retry_after_is_at_least_one_second(self) -> None:
        """A wait shorter than a second is answered 1."""
        limiter = RateLimiter(self.clock, rate=1000, burst=1)
        limiter.take("k")
        self.assertEqual(limiter.take("k"), 1.0)

    def test_refused_requests_do_not_drain_the_bucket(self) -> None:
        """Requests refused while over the limit cost nothing: the wait does not grow."""
        limiter = RateLimiter(self.clock, rate=0.5, burst=1)
        limiter.take("k")
        for _ in range(10):
            self.assertEqual(limiter.take("k"), 2.0)
        self.clock.advance(2)
        self.assertIsNone(limiter.take("k"))

    def test_keys_have_separate_buckets(self) -> None:
        """One key spending its burst does not limit another."""
        limiter = RateLimiter(self.clock, rate=1, burst=2)
        limiter.take("a")
        limiter.take("a")
        self.assertIsNotNone(limiter.take("a"))
        self.assertEqual([limiter.take("b"), limiter.take("b")], [None, None])
        self.assertIsNotNone(limiter.take("b"))

    def test_rate_zero_allows_everything_and_keeps_nothing(self) -> None:
        """A rate of 0 turns the limit off."""
        limiter = RateLimiter(self.clock, rate=0, burst=1)
        self.assertEqual({limiter.take("k") for _ in range(10_000)}, {None})
        self.assertEqual(len(limiter), 0)

    def test_full_buckets_are_dropped(self) -> None:
        """Buckets idle long enough to refill are forgotten, so memory follows recent keys."""
        limiter = RateLimiter(self.clock, rate=10, burst=20)
        for i in range(1000):
            limiter.take(f"key-{i}")
        self.assertEqual(len(limiter), 1000)
        self.clock.advance(2)
        limiter.take("fresh")
        self.assertEqual(len(limiter), 1)

    def test_buckets_still_refilling_are_kept(self) -> None:
        """A key that spent its tokens stays limited until its bucket has refilled."""
        limiter = RateLimiter(self.clock, rate=1, burst=4)
        for _ in range(4):
            limiter.take("spent")
        limiter.take("old")
        self.clock.advance(3)
        limiter.take("other")
        self.assertEqual(len(limiter), 3)
        # Three tokens back: three requests, then refused.
        self.assertEqual([limiter.take("spent") for _ in range(4)], [None, None, None, 1.0])

    def test_a_clock_stepping_back_gives_no_tokens(self) -> None:
        """Time running backwards neither refills nor breaks a bucket."""
        limiter = RateLimiter(self.clock, rate=1, burst=1)
        limiter.take("k")
        self.clock.rightNow -= 50
        self.assertEqual(limiter.take("k"), 1.0)

    def test_bad_settings_are_refused_by_name(self) -> None:
        """A negative rate or a burst under 1 is an error naming the setting."""
        with self.assertRaisesRegex(ValueError, "^rate:"):
            RateLimiter(self.clock, rate=-1, burst=1)
        with self.assertRaisesRegex(ValueError, "^burst:"):
            RateLimiter(self.clock, rate=1, burst=0)


# -- the site: deadlines and idle connections ---------------------------------


class Answers(Resource):
    """
    A leaf resource: C{GET /} answers at once, C{GET /slow} after
    C{slow_s} seconds on the clock, C{POST} echoes the body's length.
    """

    isLeaf = True

    def __init__(self, clock: Clock, slow_s: float) -> None:
        super().__init__()
        self.clock = clock
        self.slow_s = slow_s

    def render_GET(self, request):
        if request.path == b"/slow":
            self.clock.callLater(self.slow_s, self._finish, request)
            return NOT_DONE_YET
        return b"ok"

    def render_POST(self, request):
        return b"got %d" % len(request.content.read())

    @staticmethod
    def _finish(request) -> None:
        request.write(b"slow ok")
        request.finish()


class ClosingTransport(StringTransport):
    """A StringTransport whose protocol sees the connection close when it is closed."""

    protocol: Any = None

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.protocol.connectionLost(Failure(ConnectionDone()))


REQUEST_TIMEOUT = 10.0
IDLE_TIMEOUT = 5.0


def request(path: bytes = b"/", method: bytes = b"GET", body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request."""
    head = method + b" " + path + b" HTTP/1.1\r\nHost: node\r\n"
    if body or method == b"POST":
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


class SiteDeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.site = self.make_site(REQUEST_TIMEOUT, IDLE_TIMEOUT)

    def make_site(self, request_timeout_s: float, idle_timeout_s: float) -> APISite:
        return api_site(
            Answers(self.clock, slow_s=3 * REQUEST_TIMEOUT),
            clock=self.clock,
            max_body_bytes=1000,
            request_timeout_s=request_timeout_s,
            idle_timeout_s=idle_timeout_s,
        )

    def connect(self, site: APISite | None = None) -> ClosingTransport:
        site = site or self.site
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = ClosingTransport()
        transport.protocol = channel
        channel.makeConnection(transport)
        return transport

    def responses(self, transport: StringTransport) -> list[tuple[int, bytes]]:
        """The status and body of every response written so far."""
        data = transport.value()
        found = []
        while data:
            head, _, data = data.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            headers = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
            )
            if b"content-length" in headers:
                length = int(headers[b"content-length"])
                body, data = data[:length], data[length:]
            else:
                self.assertEqual(headers.get(b"transfer-encoding"), b"chunked", head)
                body = b""
                while True:
                    size, _, data = data.partition(b"\r\n")
                    chunk, data = data[: int(size, 16)], data[int(size, 16) + 2 :]
                    body += chunk
                    if not chunk:
                        break
            found.append((status, body))
        return found

    def trickle(self, transport, raw: bytes, every_s: float) -> None:
        """Send C{raw} a byte at a time, C{every_s} apart, until the connection closes."""
        for i in range(len(raw)):
            if transport.disconnecting:
                return
            transport.protocol.dataReceived(raw[i : i + 1])
            self.clock.advance(every_s)

    def test_the_site_uses_the_deadline_channel_and_body_limit(self) -> None:
        """api_site builds the deadline channel with its settings and the body-limited request."""
        channel = self.site.buildProtocol(None)
        self.assertIsInstance(channel, DeadlineHTTPChannel)
        self.assertEqual(channel.request_timeout_s, REQUEST_TIMEOUT)
        self.assertEqual(channel.timeOut, IDLE_TIMEOUT)
        self.assertEqual(self.site.requestFactory.max_body_bytes, 1000)
        self.assertFalse(self.site.noisy)

    def test_starting_the_site_leaves_no_timers(self) -> None:
        """With no access log, starting the site schedules nothing on the clock."""
        self.site.doStart()
        self.addCleanup(self.site.doStop)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_request_line_sent_byte_by_byte_is_cut_at_the_deadline(self) -> None:
        """
        A client trickling its request line a byte every 2 s never goes idle
        (idle timeout 5 s) but is answered 408 and closed at the 10 s deadline.
        """
        transport = self.connect()
        raw = request()
        transport.protocol.dataReceived(raw[:1])
        for _ in range(4):
            self.clock.advance(2)
            self.assertFalse(transport.disconnecting)
            transport.protocol.dataReceived(raw[:1])
        self.assertEqual(transport.value(), b"")
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        [(status, body)] = self.responses(transport)
        answer = json.loads(body)
        self.assertEqual(status, 408)
        self.assertEqual(answer["error"]["code"], "request_timeout")
        self.assertEqual(list(answer["error"]["fields"]), ["request"])
        self.assertIn(b"connection: close", transport.value().lower())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_body_sent_slowly_is_cut_at_the_deadline(self) -> None:
        """Headers sent at once do not stop the clock: the body must arrive in time too."""
        transport = self.connect()
        raw = request(method=b"POST", body=b"x" * 100)
        self.trickle(transport, raw[:-100], 0)
        self.trickle(transport, raw[-100:], 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([s for s, _ in self.responses(transport)], [408])
        self.assertEqual(self.clock.seconds(), REQUEST_TIMEOUT)

    def test_a_request_arriving_in_time_is_answered(self) -> None:
        """A request that arrives within the deadline, even slowly, is answered normally."""
        transport = self.connect()
        self.trickle(transport, request(method=b"POST", body=b"abc"), 0.1)
        self.assertEqual(self.responses(transport), [(200, b"got 3")])
        self.assertFalse(transport.disconnecting)

    def test_each_request_on_a_connection_gets_its_own_deadline(self) -> None:
        """Keep-alive requests each get the full time; earlier ones do not use it up."""
        transport = self.connect()
        for _ in range(5):
            self.trickle(transport, request(), 0.3)
        self.assertGreater(self.clock.seconds(), REQUEST_TIMEOUT)
        self.assertEqual(self.responses(transport), [(200, b"ok")] * 5)
        self.assertFalse(transport.disconnecting)

    def test_time_spent_answering_does_not_count(self) -> None:
        """A handler slower than the request deadline still answers: its clock stops at the body."""
        transport = self.connect()
        transport.protocol.dataReceived(request(b"/slow"))
        self.clock.advance(3 * REQUEST_TIMEOUT - 0.1)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(self.responses(transport), [(200, b"slow ok")])
        self.assertFalse(transport.disconnecting)

    def test_a_pipelined_request_waits_without_its_deadline_running(self) -> None:
        """A request queued behind a slow one gets its deadline only once it is read."""
        transport = self.connect()
        transport.protocol.dataReceived(request(b"/slow") + request())
        self.clock.advance(1)
        transport.protocol.dataReceived(request())
        self.clock.advance(3 * REQUEST_TIMEOUT)
        self.assertEqual(self.responses(transport), [(200, b"slow ok"), (200, b"ok"), (200, b"ok")])
        self.assertFalse(transport.disconnecting)

    def test_an_idle_keep_alive_connection_is_closed(self) -> None:
        """After its answer a connection left idle for the idle timeout is closed, with no 408."""
        transport = self.connect()
        transport.protocol.dataReceived(request())
        self.clock.advance(IDLE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.responses(transport), [(200, b"ok")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_connection_that_sends_nothing_is_closed_when_idle(self) -> None:
        """A connection opened and never used is closed after the idle timeout, with no answer."""
        transport = self.connect()
        self.clock.advance(IDLE_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_going_idle_half_way_through_a_request_is_answered_408(self) -> None:
        """When the idle timeout is the shorter, a request stalled half-way is answered 408."""
        transport = self.connect(self.make_site(request_timeout_s=30, idle_timeout_s=5))
        transport.protocol.dataReceived(b"GET / HTTP/1.1\r\nHo")
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([s for s, _ in self.responses(transport)], [408])

    def test_a_client_that_will_not_close_is_aborted(self) -> None:
        """If the connection does not close after the 408, it is aborted."""
        channel = self.site.buildProtocol(None)
        # A plain StringTransport never reports the connection closed.
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET")
        self.clock.advance(REQUEST_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.clock.advance(channel.abortTimeout)
        self.assertTrue(transport.disconnected)

    def test_bodies_over_the_limit_are_still_413(self) -> None:
        """The site keeps the body limit: an oversized body is answered 413 and cut."""
        transport = self.connect()
        transport.protocol.dataReceived(request(method=b"POST", body=b"x" * 1001))
        [(status, body)] = self.responses(transport)
        self.assertEqual((status, json.loads(body)["error"]["code"]), (413, "too_large"))

    def test_a_malformed_request_is_not_also_answered_408(self) -> None:
        """A request Twisted refuses as malformed gets its 400 and no later 408."""
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"NOT A REQUEST LINE AT ALL\r\n")
        self.clock.advance(REQUEST_TIMEOUT)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))
        self.assertNotIn(b"408", transport.value())

    def test_a_closed_connection_leaves_no_timers(self) -> None:
        """A client that goes away half-way through a request leaves nothing scheduled."""
        transport = self.connect()
        transport.protocol.dataReceived(b"GET / HT")
        transport.loseConnection()
        self.assertEqual(self.clock.getDelayedCalls(), [])


# -- one real socket ----------------------------------------------------------


class _Collect(protocol.Protocol):
    """Sends C{greeting} on connect, keeps what comes back, fires C{done} on close."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.done.callback(self.received)


class RealSocketTests(TestCase):
    timeout = 10

    async def test_a_stalled_request_over_tcp_is_answered_408_and_closed(self) -> None:
        """Over real TCP a request that stalls is answered 408 and closed at its deadline."""
        from twisted.internet import reactor

        site = api_site(
            Answers(Clock(), slow_s=0),
            clock=reactor,
            max_body_bytes=1000,
            request_timeout_s=0.2,
            idle_timeout_s=5,
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        client = _Collect(request()[:10])
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(lambda: client)
        )
        started = time.monotonic()
        received = await client.done
        self.assertTrue(received.startswith(b"HTTP/1.1 408 "), received)
        self.assertLess(time.monotonic() - started, 4)
