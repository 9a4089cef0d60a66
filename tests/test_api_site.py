"""
Tests for the body-limited request class the HTTP site uses, driven over an
in-memory transport so the limit is checked as bytes arrive.
"""

from __future__ import annotations

import json

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from scheduler0.api.site import body_limited_request
from tests.support.api import Harness


class BodyLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The site's limit is below the API's own, so only the request class can refuse.
        self.h = Harness()
        # No idle timeout: it would leave timers on the global reactor.
        self.site = Site(
            self.h.api.resource(), requestFactory=body_limited_request(1000), timeout=None
        )

    def exchange(self, raw: bytes) -> tuple[int, dict]:
        """Feed C{raw} to a fresh connection; return the status and decoded body."""
        protocol = self.site.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"chunked" in head.lower():
            size, _, rest = body.partition(b"\r\n")
            body = rest[: int(size, 16)]
        return status, json.loads(body)

    def post(self, body: bytes, *, chunked: bool = False) -> tuple[int, dict]:
        headers = (
            b"POST /projects HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            + b"x-api-key: "
            + self.h.key.encode()
            + b"\r\n"
            + b"x-secret-key: "
            + self.h.secret.encode()
            + b"\r\n"
        )
        if chunked:
            framed = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100])
                for i in range(0, len(body), 100)
            )
            return self.exchange(
                headers + b"Transfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
            )
        return self.exchange(headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def test_declared_length_over_limit_is_413(self) -> None:
        """A Content-Length over the limit is answered 413 naming body; nothing is stored."""
        before = self.h.dump()
        body = json.dumps({"name": "x" * 2000}).encode()
        status, answer = self.post(body)
        self.assertEqual((status, list(answer["error"]["fields"])), (413, ["body"]))
        self.assertEqual(self.h.dump(), before)

    def test_chunked_body_over_limit_is_413(self) -> None:
        """A chunked body is cut off once it passes the limit and answered 413."""
        before = self.h.dump()
        status, answer = self.post(json.dumps({"name": "x" * 2000}).encode(), chunked=True)
        self.assertEqual((status, answer["error"]["code"]), (413, "too_large"))
        self.assertEqual(self.h.dump(), before)

    def test_bodies_within_limit_pass(self) -> None:
        """Bodies within the limit, plain or chunked, reach the API."""
        status, answer = self.post(json.dumps({"name": "a"}).encode())
        self.assertEqual((status, answer["data"]["name"]), (201, "a"))
        status, answer = self.post(json.dumps({"name": "b" * 200}).encode(), chunked=True)
        self.assertEqual(status, 201, answer)


class RequestFactoryTests(SynchronousTestCase):
    def test_api_request_factory_uses_its_limit(self) -> None:
        """SchedulerAPI.request_factory limits bodies to the API's max_body_bytes."""
        h = Harness(max_body_bytes=1234)
        self.assertEqual(h.api.request_factory.max_body_bytes, 1234)


class PeerBodyLimitTests(SynchronousTestCase):
    def test_peer_paths_take_the_larger_limit(self) -> None:
        """
        A body over the API's limit reaches a /peer/ route (a forwarded write
        carries the client's body and more), while the same body on an API
        route is 413; over the peer limit, a peer route is 413 too.
        """
        seen = []

        class Recorder:
            isLeaf = True

            def render(self, request: object) -> bytes:
                seen.append(len(request.content.read()))  # type: ignore[attr-defined]
                return b"{}"

        request_class = body_limited_request(1000)
        site = Site(Recorder(), requestFactory=request_class, timeout=None)  # type: ignore[arg-type]

        def status(path: bytes, size: int) -> int:
            protocol = site.buildProtocol(None)
            transport = StringTransport()
            protocol.makeConnection(transport)
            protocol.dataReceived(
                b"POST %s HTTP/1.1\r\nHost: n\r\nContent-Length: %d\r\n\r\n%s"
                % (path, size, b"x" * size)
            )
            return int(transport.value().split(b" ", 2)[1])

        self.assertEqual(status(b"/peer/propose", 5000), 200)
        self.assertEqual(seen, [5000])
        self.assertEqual(status(b"/projects", 5000), 413)
        over = request_class.peer_max_body_bytes + 1
        self.assertEqual(status(b"/peer/propose", over), 413)
        self.assertEqual(seen, [5000])
