"""
Tests for L{scheduler0.executor.http}: batching per callback URL, chunking,
retries, time-outs, bounded concurrency and queue, and shedding.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

import scheduler0
from scheduler0.delivery import Delivery, DeliveryPolicy, Outcome, job_members_json
from scheduler0.executor.http import (
    ENDPOINT_WAIT_S,
    OVERSIZE_ERROR,
    SWEEP_S,
    HTTPExecutor,
    parse_retry_after,
)
from scheduler0.model import FORBID, REPLACE
from scheduler0.netpolicy import BlockedTarget
from tests.support.executor import FakeHTTPClient, FakeResponse, Harness, delivery


class BatchingTests(SynchronousTestCase):
    def test_same_turn_same_url_one_post(self) -> None:
        """Deliveries for one URL submitted in the same reactor turn go in one POST."""
        h = Harness()
        h.submit(*[delivery(n) for n in range(5)])
        self.assertEqual(h.client.requests, [])
        h.turn()
        self.assertEqual(len(h.client.requests), 1)
        request = h.client.requests[0]
        self.assertEqual(request.url, "http://receiver.test/hook")
        self.assertEqual(request.ids, [f"exec-{n}" for n in range(5)])
        self.assertEqual(
            request.items[2],
            {
                "execution_id": "exec-2",
                "job_uuid": "job-2",
                "project_uuid": "project-1",
                "name": "job number 2",
                "spec": "@every 1s",
                "data": {"n": 2},
                "scheduled_at": "2026-03-01T12:00:00.000Z",
                "attempt": 1,
            },
        )

    def test_separate_post_per_url(self) -> None:
        """Each callback URL gets its own POST."""
        h = Harness()
        h.submit(
            delivery(1, url="http://a.test/"),
            delivery(2, url="http://b.test/"),
            delivery(3, url="http://a.test/"),
        )
        h.turn()
        posts = {r.url: r.ids for r in h.client.requests}
        self.assertEqual(
            posts, {"http://a.test/": ["exec-1", "exec-3"], "http://b.test/": ["exec-2"]}
        )

    def test_sends_without_waiting(self) -> None:
        """A lone delivery to an idle URL is sent in the next reactor turn, with no delay."""
        h = Harness()
        h.clock.advance(100)
        h.submit(delivery(1))
        h.turn()
        self.assertEqual(len(h.client.requests), 1)
        self.assertEqual(h.started, [("exec-1", 100.0)])

    def test_coalesces_while_in_flight(self) -> None:
        """
        With one POST per URL (MaxWorkersPerURL 1), what arrives while it is
        in flight goes together in the next POST.
        """
        h = Harness(max_per_url=1)
        h.submit(delivery(1))
        h.turn()
        h.clock.advance(0.1)
        h.submit(delivery(2))
        h.turn()
        h.clock.advance(0.1)
        h.submit(delivery(3))
        h.turn()
        self.assertEqual(len(h.client.requests), 1)
        self.assertEqual(h.executor.queue_depth(), 2)
        h.client.requests[0].respond(200)
        h.turn()
        self.assertEqual(len(h.client.requests), 2)
        self.assertEqual(h.client.requests[1].ids, ["exec-2", "exec-3"])
        self.assertEqual(h.executor.queue_depth(), 0)

    def test_other_url_not_blocked_by_in_flight(self) -> None:
        """A POST in flight to one URL does not hold back another URL."""
        h = Harness()
        h.submit(delivery(1, url="http://a.test/"))
        h.turn()
        h.submit(delivery(2, url="http://b.test/"))
        h.turn()
        self.assertEqual([r.url for r in h.client.requests], ["http://a.test/", "http://b.test/"])


class ChunkingTests(SynchronousTestCase):
    def _item_size(self) -> int:
        from scheduler0.executor.http import _encode

        return len(_encode(delivery(1), 1))

    def test_chunks_by_size_with_chunk_ids(self) -> None:
        """A queue bigger than the cap is split into bodies within it, numbered 0, 1, 2."""
        size = self._item_size()
        cap = 2 + 2 * size + 1  # exactly two items per body
        h = Harness(payload_max_bytes=cap)
        h.submit(*[delivery(n) for n in range(1, 6)])
        h.turn()
        self.assertEqual(
            [r.ids for r in h.client.requests],
            [["exec-1", "exec-2"], ["exec-3", "exec-4"], ["exec-5"]],
        )
        self.assertEqual(
            [r.headers["x-payload-chunk-id"] for r in h.client.requests], ["0", "1", "2"]
        )
        for r in h.client.requests:
            self.assertLessEqual(len(r.body), cap)

    def test_next_post_does_not_wait_for_one_in_flight(self) -> None:
        """
        What arrives while a POST to the URL is in flight goes at once in a
        POST of its own, numbered after the one in flight.
        """
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.submit(delivery(2), delivery(3))
        h.turn()
        self.assertEqual([r.ids for r in h.client.requests], [["exec-1"], ["exec-2", "exec-3"]])
        self.assertEqual(h.client.requests[1].headers["x-payload-chunk-id"], "1")
        self.assertEqual(h.executor.queue_depth(), 0)

    def test_chunk_ids_restart_per_flush(self) -> None:
        """Chunk ids start again at 0 for the next flush of a URL."""
        size = self._item_size()
        h = Harness(payload_max_bytes=2 + 2 * size + 1)
        h.submit(*[delivery(n) for n in range(1, 4)])
        h.turn()
        for r in h.client.requests:
            r.respond(200)
        h.submit(delivery(9))
        h.turn()
        self.assertEqual(h.client.requests[-1].headers["x-payload-chunk-id"], "0")

    def test_oversize_item_fails_alone(self) -> None:
        """An execution bigger than the cap by itself fails at once; the others are sent."""
        size = self._item_size()
        h = Harness(payload_max_bytes=2 + size + 50)
        h.submit(delivery(1), delivery(2, data="x" * 500), delivery(3))
        self.assertEqual(len(h.outcomes), 1)
        failed = h.outcomes[0]
        self.assertEqual(
            (failed.delivery.execution_id, failed.state, failed.error, failed.attempts),
            ("exec-2", "failed", OVERSIZE_ERROR, 0),
        )
        h.turn()
        self.assertEqual([r.ids for r in h.client.requests], [["exec-1"], ["exec-3"]])

    def test_unserializable_data_fails(self) -> None:
        """Data that is not JSON fails that delivery with an error naming data."""
        h = Harness()
        h.submit(delivery(1, data=float("nan")), delivery(2))
        self.assertEqual(h.outcomes[0].state, "failed")
        self.assertIn("data", h.outcomes[0].error)
        h.turn()
        self.assertEqual(h.client.requests[0].ids, ["exec-2"])


class HeaderTests(SynchronousTestCase):
    def test_headers(self) -> None:
        """Each POST carries JSON content type, chunk id, a fresh delivery uuid and user agent."""
        h = Harness()
        h.submit(delivery(1, url="http://a.test/"), delivery(2, url="http://b.test/"))
        h.turn()
        first, second = h.client.requests
        for r in (first, second):
            self.assertEqual(r.headers["Content-Type"], "application/json")
            self.assertEqual(r.headers["x-payload-chunk-id"], "0")
            self.assertEqual(r.headers["User-Agent"], f"scheduler0/{scheduler0.__version__}")
            self.assertEqual(uuid.UUID(r.headers["X-Scheduler0-Delivery"]).version, 4)
            self.assertFalse(r.kwargs["allow_redirects"])
        self.assertNotEqual(
            first.headers["X-Scheduler0-Delivery"], second.headers["X-Scheduler0-Delivery"]
        )

    def test_node_header_names_the_sending_node(self) -> None:
        """With a node id set, every POST says which node sent it; without, nothing is added."""
        h = Harness()
        h.executor.node_id = 7
        h.submit(delivery(1))
        h.turn()
        self.assertEqual(h.client.requests[0].headers["X-Scheduler0-Node"], "7")
        plain = Harness()
        plain.submit(delivery(1))
        plain.turn()
        self.assertNotIn("X-Scheduler0-Node", plain.client.requests[0].headers)

    def test_sign_hook_adds_headers(self) -> None:
        """The sign hook sees the exact body and deliveries and its headers are sent."""
        seen: list[tuple[bytes, list[str]]] = []

        def sign(body: bytes, deliveries: list[Delivery]) -> dict[str, str]:
            seen.append((body, [d.execution_id for d in deliveries]))
            return {"X-Scheduler0-Signature": "t=1,v1=abc"}

        h = Harness(sign=sign)
        h.submit(delivery(1), delivery(2))
        h.turn()
        request = h.client.requests[0]
        self.assertEqual(request.headers["X-Scheduler0-Signature"], "t=1,v1=abc")
        self.assertEqual(seen, [(request.body, ["exec-1", "exec-2"])])


class OutcomeTests(SynchronousTestCase):
    def test_2xx_succeeds(self) -> None:
        """A 2xx answer marks every delivery in the POST succeeded after one attempt."""
        h = Harness()
        h.clock.advance(10)
        h.submit(delivery(1), delivery(2))
        h.turn()
        h.clock.advance(0.25)
        h.client.requests[0].respond(204)
        self.assertEqual(len(h.outcomes), 2)
        for o in h.outcomes:
            self.assertEqual(
                (o.state, o.attempts, o.status_code, o.error, o.skip_reason),
                ("succeeded", 1, 204, None, None),
            )
            self.assertEqual((o.started_at, o.finished_at), (10.0, 10.25))
        self.assertEqual(h.started, [("exec-1", 10.0), ("exec-2", 10.0)])
        self.assertEqual(h.executor.in_flight(), 0)

    def test_404_fails_at_once(self) -> None:
        """A 4xx other than 429 fails at once, with no retry."""
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.client.requests[0].respond(404)
        h.clock.advance(1000)
        self.assertEqual(len(h.client.requests), 1)
        [o] = h.outcomes
        self.assertEqual(
            (o.state, o.attempts, o.status_code, o.error), ("failed", 1, 404, "HTTP 404")
        )

    def test_redirect_fails(self) -> None:
        """A 3xx is not success and is not retried."""
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.client.requests[0].respond(302)
        h.clock.advance(1000)
        self.assertEqual(len(h.client.requests), 1)
        self.assertEqual(h.outcomes[0].state, "failed")

    def test_blocked_target_fails_at_once(self) -> None:
        """A callback the network policy blocks fails at once, with the policy's reason."""
        h = Harness()
        h.submit(delivery(1, url="http://internal.example/hook"))
        h.turn()
        h.client.requests[0].fail(
            BlockedTarget("internal.example", "10.0.0.5", "is in CallbackDenyNetworks 10.0.0.0/8")
        )
        h.clock.advance(1000)
        self.assertEqual(len(h.client.requests), 1)
        [o] = h.outcomes
        self.assertEqual(
            (o.state, o.attempts, o.status_code, o.error),
            (
                "failed",
                1,
                None,
                "callback_url: 10.0.0.5 (from internal.example) "
                "is in CallbackDenyNetworks 10.0.0.0/8",
            ),
        )
        self.assertEqual(h.executor.retrying(), 0)

    def test_on_outcome_errors_are_contained(self) -> None:
        """An exception in on_outcome is logged and the executor keeps working."""
        clock = Clock()
        client = FakeHTTPClient()
        calls: list[str] = []

        def broken(outcome: Outcome) -> None:
            calls.append(outcome.delivery.execution_id)
            raise RuntimeError("observer bug")

        executor = HTTPExecutor(clock, client, broken)
        executor.submit(delivery(1))
        clock.advance(0)
        client.requests[0].respond(200)
        executor.submit(delivery(2))
        clock.advance(0)
        client.requests[1].respond(200)
        self.assertEqual(calls, ["exec-1", "exec-2"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_request_error_not_retried(self) -> None:
        """A client that rejects the request outright fails the delivery without retry."""

        class Rejecting:
            def post(self, url: str, **kwargs: Any) -> Deferred:
                raise ValueError("unsupported scheme")

        clock = Clock()
        outcomes: list[Outcome] = []
        executor = HTTPExecutor(clock, Rejecting(), outcomes.append)
        executor.submit(delivery(1, url="ftp://nowhere/"))
        clock.advance(0)
        clock.advance(1000)
        [o] = outcomes
        self.assertEqual(o.state, "failed")
        self.assertIn("unsupported scheme", o.error)
        self.assertEqual(executor.in_flight(), 0)


class RetryTests(SynchronousTestCase):
    def test_500_retried_with_doubling_capped_delay(self) -> None:
        """5xx is retried after 1, 2, 4, then the cap, with the attempt counted in the body."""
        h = Harness(retry_delay_s=1.0, retry_delay_cap_s=5.0)
        h.submit(delivery(1, retry_max=5))
        h.turn()
        sent_at = [h.clock.seconds()]
        for expected_delay in (1, 2, 4, 5, 5):
            h.client.requests[-1].respond(500)
            h.turn()
            count = len(h.client.requests)
            h.clock.advance(expected_delay - 0.001)
            self.assertEqual(len(h.client.requests), count)
            h.clock.advance(0.001)
            h.turn()
            self.assertEqual(len(h.client.requests), count + 1)
            sent_at.append(h.clock.seconds())
        self.assertEqual([r.items[0]["attempt"] for r in h.client.requests], [1, 2, 3, 4, 5, 6])
        h.client.requests[-1].respond(500)
        [o] = h.outcomes
        self.assertEqual(
            (o.state, o.attempts, o.status_code, o.error), ("failed", 6, 500, "HTTP 500")
        )
        self.assertEqual(o.started_at, 0.0)

    def test_retry_max_respected(self) -> None:
        """A delivery gets 1 + retry_max attempts, then fails with the last status."""
        h = Harness()
        h.submit(delivery(1, retry_max=2))
        h.turn()
        h.client.requests[0].respond(503)
        h.clock.advance(1)
        h.client.requests[1].respond(502)
        h.clock.advance(2)
        h.client.requests[2].respond(500)
        h.clock.advance(1000)
        self.assertEqual(len(h.client.requests), 3)
        [o] = h.outcomes
        self.assertEqual((o.state, o.attempts, o.status_code), ("failed", 3, 500))

    def test_retry_succeeds(self) -> None:
        """A delivery that succeeds on a retry is succeeded with its attempts counted."""
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.client.requests[0].respond(500)
        h.clock.advance(1)
        h.client.requests[1].respond(200)
        [o] = h.outcomes
        self.assertEqual((o.state, o.attempts, o.status_code, o.error), ("succeeded", 2, 200, None))
        self.assertEqual(h.started, [("exec-1", 0.0)])

    def test_zero_retry_max(self) -> None:
        """With retry_max 0 a transient failure fails after one attempt."""
        h = Harness()
        h.submit(delivery(1, retry_max=0))
        h.turn()
        h.client.requests[0].respond(500)
        h.clock.advance(100)
        self.assertEqual(len(h.client.requests), 1)
        self.assertEqual(h.outcomes[0].state, "failed")

    def test_timeout_retried(self) -> None:
        """A POST with no answer within the timeout is cancelled and retried."""
        h = Harness()
        h.submit(delivery(1, timeout_s=5.0, retry_max=1))
        h.turn()
        h.clock.advance(4.9)
        self.assertFalse(h.client.requests[0].d.called)
        h.clock.advance(0.1)
        self.assertTrue(h.client.requests[0].d.called)
        h.clock.advance(1)
        self.assertEqual(len(h.client.requests), 2)
        h.clock.advance(5)
        [o] = h.outcomes
        self.assertEqual(
            (o.state, o.attempts, o.status_code, o.error), ("failed", 2, None, "timeout after 5s")
        )

    def test_timeout_is_smallest_in_post(self) -> None:
        """A POST times out after the smallest timeout of the deliveries it carries."""
        h = Harness()
        h.submit(delivery(1, timeout_s=30.0), delivery(2, timeout_s=2.0))
        h.turn()
        h.clock.advance(2)
        self.assertTrue(h.client.requests[0].d.called)

    def test_slow_body_after_2xx_counts_as_success(self) -> None:
        """A 2xx whose body never ends is cut at the timeout and still succeeds."""
        h = Harness()
        h.submit(delivery(1, timeout_s=3.0))
        h.turn()
        response = h.client.requests[0].respond(200, stall=True)
        self.assertEqual(h.outcomes, [])
        h.clock.advance(3)
        self.assertEqual(h.outcomes[0].state, "succeeded")
        self.assertEqual(response.transport.producerState, "stopped")

    def test_connection_error_retried(self) -> None:
        """A connection error is retried and reported as the error if it persists."""
        h = Harness()
        h.submit(delivery(1, retry_max=1))
        h.turn()
        h.client.requests[0].fail(ConnectionRefusedError("refused"))
        h.clock.advance(1)
        self.assertEqual(len(h.client.requests), 2)
        h.client.requests[1].fail(ConnectionRefusedError("refused"))
        [o] = h.outcomes
        self.assertEqual((o.state, o.attempts), ("failed", 2))
        self.assertTrue(o.error.startswith("connection error: ConnectionRefusedError"), o.error)

    def test_retry_after_seconds_honoured(self) -> None:
        """A 429 with Retry-After waits that long when it exceeds the computed delay."""
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.client.requests[0].respond(429, headers={"Retry-After": "30"})
        h.clock.advance(29.9)
        self.assertEqual(len(h.client.requests), 1)
        h.clock.advance(0.1)
        self.assertEqual(len(h.client.requests), 2)

    def test_retry_after_shorter_than_delay(self) -> None:
        """The computed delay wins when it is longer than Retry-After."""
        h = Harness(retry_delay_s=10.0)
        h.submit(delivery(1))
        h.turn()
        h.client.requests[0].respond(503, headers={"Retry-After": "2"})
        h.clock.advance(9.9)
        self.assertEqual(len(h.client.requests), 1)
        h.clock.advance(0.1)
        self.assertEqual(len(h.client.requests), 2)

    def test_retry_after_capped(self) -> None:
        """A Retry-After longer than one hour is read as one hour."""
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.client.requests[0].respond(429, headers={"Retry-After": "999999"})
        h.clock.advance(3600)
        self.assertEqual(len(h.client.requests), 2)

    def test_parse_retry_after(self) -> None:
        """Retry-After is read as delta-seconds or an HTTP-date; junk is ignored."""
        now = 1_700_000_000.0
        self.assertEqual(parse_retry_after("120", now), 120.0)
        self.assertEqual(parse_retry_after("Tue, 14 Nov 2023 22:15:00 GMT", now), 100.0)
        self.assertEqual(parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now), 0.0)
        self.assertIsNone(parse_retry_after("soon", now))
        self.assertIsNone(parse_retry_after(None, now))
        self.assertIsNone(parse_retry_after("", now))

    def test_retries_batch_with_new_items(self) -> None:
        """A retried delivery rejoins its URL queue and goes with new deliveries due then."""
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.clock.callLater(1.0, h.executor.submit, delivery(2))
        h.client.requests[0].respond(500)
        h.clock.advance(1)
        self.assertEqual(len(h.client.requests), 2)
        attempts = {i["execution_id"]: i["attempt"] for i in h.client.requests[1].items}
        self.assertEqual(attempts, {"exec-1": 2, "exec-2": 1})

    def test_retrying_not_counted_in_queue(self) -> None:
        """Deliveries waiting for a retry do not count against max_queue."""
        h = Harness(max_queue=1)
        h.submit(delivery(1))
        h.turn()
        h.client.requests[0].respond(500)
        self.assertEqual((h.executor.queue_depth(), h.executor.retrying()), (0, 1))
        h.submit(delivery(2))
        self.assertEqual(h.outcomes, [])


class LoadTests(SynchronousTestCase):
    def test_max_workers_never_exceeded(self) -> None:
        """No more than max_workers POSTs are in flight at once; the rest wait their turn."""
        h = Harness(max_workers=3)
        h.submit(*[delivery(n, url=f"http://host{n}.test/") for n in range(10)])
        h.turn()
        self.assertEqual(h.client.open_count(), 3)
        self.assertEqual(h.executor.in_flight(), 3)
        self.assertEqual(h.executor.queue_depth(), 7)
        while h.client.open():
            h.client.open()[0].respond(200)
            h.turn()
            self.assertLessEqual(h.client.open_count(), 3)
        self.assertEqual(h.client.peak, 3)
        self.assertEqual(sorted(o.state for o in h.outcomes), ["succeeded"] * 10)

    def test_round_robin_over_urls(self) -> None:
        """Free workers go round-robin over URLs, so a big queue does not starve a small one."""
        from scheduler0.executor.http import _encode

        size = len(_encode(delivery(1), 1))
        h = Harness(max_workers=1, payload_max_bytes=2 + size)
        h.submit(*[delivery(n, url="http://big.test/") for n in range(1, 4)])
        h.submit(delivery(9, url="http://small.test/"))
        h.turn()
        for _ in range(3):
            h.client.open()[0].respond(200)
            h.turn()
        self.assertEqual(
            [r.url for r in h.client.requests][:3],
            ["http://big.test/", "http://small.test/", "http://big.test/"],
        )

    def test_max_queue_sheds(self) -> None:
        """
        Beyond max_queue deliveries waiting for a busy worker, a submit is
        skipped at once as queue_full.
        """
        h = Harness(max_queue=2, max_workers=1)
        h.submit(delivery(0, url="http://busy.test/"))
        h.turn()  # the only worker is now busy
        h.submit(delivery(1), delivery(2), delivery(3))
        [o] = h.outcomes
        self.assertEqual(
            (o.delivery.execution_id, o.state, o.skip_reason, o.attempts, o.started_at),
            ("exec-3", "skipped", "queue_full", 0, None),
        )
        h.client.requests[0].respond(200)
        h.turn()
        self.assertEqual(h.client.requests[1].ids, ["exec-1", "exec-2"])
        self.assertEqual(h.executor.stats()["skipped"], 1)

    def test_a_burst_with_free_workers_is_not_shed(self) -> None:
        """
        More deliveries at once than max_queue are all sent when workers are
        free to take them: the bound is on what waits, not on a burst.
        """
        h = Harness(max_queue=3, max_workers=10)
        h.submit(*[delivery(n, url=f"http://host{n}.test/") for n in range(10)])
        h.turn()
        self.assertEqual(h.outcomes, [])
        while h.client.open():
            h.client.open()[0].respond(200)
            h.turn()
        sent = sorted(i for r in h.client.requests for i in r.ids)
        self.assertEqual(sent, sorted(f"exec-{n}" for n in range(10)))
        self.assertEqual([o.state for o in h.outcomes], ["succeeded"] * 10)

    def test_paused_sheds(self) -> None:
        """While the guard pauses the node, new submits are skipped; in-flight work goes on."""
        paused = [False]
        h = Harness(paused=lambda: paused[0])
        h.submit(delivery(1))
        h.turn()
        paused[0] = True
        h.submit(delivery(2))
        h.turn()
        self.assertEqual(len(h.client.requests), 1)
        self.assertEqual(
            [(o.delivery.execution_id, o.skip_reason) for o in h.outcomes],
            [("exec-2", "resource_guard")],
        )
        h.client.requests[0].respond(500)
        h.clock.advance(1)
        self.assertEqual(len(h.client.requests), 2)
        h.client.requests[1].respond(200)
        self.assertEqual(h.by_id()["exec-1"].state, "succeeded")


class StopTests(SynchronousTestCase):
    def test_stop_waits_for_in_flight(self) -> None:
        """stop() fires only after the POSTs in flight have answered."""
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        stopped = h.executor.stop()
        self.assertNoResult(stopped)
        h.client.requests[0].respond(200)
        self.successResultOf(stopped)
        self.assertEqual(h.outcomes[0].state, "succeeded")

    def test_stop_is_bounded(self) -> None:
        """stop() cancels POSTs still in flight after the grace period."""
        h = Harness()
        h.submit(delivery(1, timeout_s=100.0))
        h.turn()
        stopped = h.executor.stop(grace_s=5.0)
        h.clock.advance(4.9)
        self.assertNoResult(stopped)
        h.clock.advance(0.1)
        self.successResultOf(stopped)
        [o] = h.outcomes
        self.assertEqual(o.state, "failed")
        self.assertIn("node stopping", o.error)

    def test_stop_with_nothing_in_flight(self) -> None:
        """stop() on an idle executor fires at once."""
        h = Harness()
        self.successResultOf(h.executor.stop())

    def test_stop_reports_retrying_and_leaves_unsent_owed(self) -> None:
        """
        At stop, retrying deliveries are reported skipped; never-attempted ones
        are not reported (their slots are still owed); no timer is left.
        """
        h = Harness(max_workers=1)
        h.submit(delivery(1, url="http://a.test/"))
        h.turn()
        h.client.requests[0].respond(500)
        h.submit(delivery(2, url="http://b.test/"))
        self.successResultOf(h.executor.stop())
        self.assertEqual(
            sorted((o.delivery.execution_id, o.state, o.skip_reason) for o in h.outcomes),
            [("exec-1", "skipped", "node_stopping")],
        )
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.submit(delivery(3))
        self.assertEqual(h.outcomes[-1].skip_reason, "node_stopping")
        h.clock.advance(100)
        self.assertEqual(len(h.client.requests), 1)


class ReceiverResource(Resource):
    """A receiver that records each POST and answers with C{status}."""

    isLeaf = True

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.posts: list[tuple[dict[str, str], list[dict[str, Any]]]] = []

    def render_POST(self, request: Any) -> bytes:
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.posts.append((headers, json.loads(request.content.read())))
        request.setResponseCode(self.status)
        return b"x" * 10000


class TreqTests(SynchronousTestCase):
    """The executor works with treq's real HTTPClient (over an in-memory receiver)."""

    def _deliver_pair(self, status: int) -> tuple[ReceiverResource, list[Outcome]]:
        receiver = ReceiverResource(status)
        stub = StubTreq(receiver)
        clock = Clock()
        outcomes: list[Outcome] = []
        executor = HTTPExecutor(clock, stub, outcomes.append)
        executor.submit(delivery(1, url="http://receiver.test/hook"))
        executor.submit(delivery(2, url="http://receiver.test/hook"))
        clock.advance(0)
        stub.flush()
        return receiver, outcomes

    def test_delivers_through_treq(self) -> None:
        """A batch reaches the receiver as one JSON array with the headers, and succeeds."""
        receiver, outcomes = self._deliver_pair(200)
        [(headers, items)] = receiver.posts
        self.assertEqual([i["execution_id"] for i in items], ["exec-1", "exec-2"])
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["x-payload-chunk-id"], "0")
        self.assertIn("x-scheduler0-delivery", headers)
        self.assertEqual(
            [(o.state, o.status_code) for o in outcomes], [("succeeded", 200), ("succeeded", 200)]
        )

    def test_retry_status_through_treq(self) -> None:
        """A 500 from a real treq response is seen as a retryable failure."""
        receiver, outcomes = self._deliver_pair(500)
        self.assertEqual(len(receiver.posts), 1)
        self.assertEqual(outcomes, [])


class CancelTests(SynchronousTestCase):
    def test_cancel_drops_waiting_deliveries_of_the_job(self) -> None:
        """Waiting deliveries of a cancelled job are never sent and end skipped with the reason."""
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.submit(delivery(2), delivery(3, job_uuid="job-1", execution_id="exec-1b"))
        self.assertEqual(h.executor.cancel_job("job-1", "job_deleted"), 1)
        self.assertEqual(h.executor.queue_depth(), 1)
        h.client.requests[0].respond(200)
        h.turn()
        self.assertEqual(h.client.requests[1].ids, ["exec-2"])
        skipped = h.by_id()["exec-1b"]
        self.assertEqual((skipped.state, skipped.skip_reason), ("skipped", "job_deleted"))

    def test_cancel_drops_pending_retries(self) -> None:
        """A delivery waiting to retry is not retried after its job is cancelled."""
        h = Harness()
        h.submit(delivery(1), delivery(2))
        h.turn()
        h.client.requests[0].respond(500)
        h.turn()
        self.assertEqual(h.executor.retrying(), 2)
        self.assertEqual(h.executor.cancel_job("job-1", "job_paused"), 1)
        h.clock.advance(1)
        h.turn()
        self.assertEqual(h.client.requests[1].ids, ["exec-2"])
        self.assertEqual(h.by_id()["exec-1"].skip_reason, "job_paused")

    def test_cancel_of_an_unknown_job_changes_nothing(self) -> None:
        """Cancelling a job with nothing queued drops nothing."""
        h = Harness()
        h.submit(delivery(1))
        self.assertEqual(h.executor.cancel_job("job-9", "job_deleted"), 0)
        h.turn()
        self.assertEqual(h.client.requests[0].ids, ["exec-1"])


class PreEncodedJobTests(SynchronousTestCase):
    def test_job_json_gives_the_same_item(self) -> None:
        """A delivery carrying its job's pre-encoded members posts the same item as one without."""
        plain = delivery(1, data={"nested": ["é", 1.5, None]})
        ready = delivery(
            1,
            data={"nested": ["é", 1.5, None]},
            job_json=job_members_json(
                "job-1", "project-1", "job number 1", "@every 1s", {"nested": ["é", 1.5, None]}
            ),
        )
        items = []
        for d in (plain, ready):
            h = Harness()
            h.submit(d)
            h.turn()
            items.append(h.client.requests[0].items[0])
        self.assertEqual(items[0], items[1])


class _Client:
    """An HTTP client whose every post returns what C{answer()} gives."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def post(self, *args: Any, **kwargs: Any) -> Deferred:
        return self.answer()


class StartedReportTests(SynchronousTestCase):
    def test_started_is_reported_after_the_post_is_issued(self) -> None:
        """on_started comes in the turn after the POST went out, with the send time."""
        h = Harness()
        order: list[str] = []
        h.executor.http_client = _Client(lambda: order.append("post") or Deferred())
        h.executor.on_started = lambda d, at: order.append(f"started {d.execution_id} {at}")
        h.clock.advance(5)
        h.submit(delivery(1), delivery(2))
        h.turn()
        self.assertEqual(order, ["post", "started exec-1 5.0", "started exec-2 5.0"])

    def test_no_started_after_a_finished_delivery(self) -> None:
        """A delivery whose outcome came back at once is not reported as started afterwards."""
        h = Harness()
        events: list[str] = []
        h.executor.http_client = _Client(lambda: succeed(FakeResponse(200)))
        h.executor.on_started = lambda d, at: events.append("started")
        h.executor.on_outcome = lambda o: events.append(o.state)
        h.submit(delivery(1))
        h.turn()
        self.assertEqual(events, ["succeeded"])


class AnyMethodRecorder(Resource):
    """Record the method of every request, whatever it is."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[bytes] = []

    def render(self, request: Any) -> bytes:
        self.hits.append(request.method)
        return b""


class RedirectingHook(Resource):
    """Answer every POST with a redirect (C{code}) to C{location}."""

    isLeaf = True

    def __init__(self, code: int, location: bytes) -> None:
        super().__init__()
        self.code = code
        self.location = location
        self.posts = 0

    def render_POST(self, request: Any) -> bytes:
        self.posts += 1
        request.setResponseCode(self.code)
        request.setHeader(b"location", self.location)
        return b""


class RedirectTests(TestCase):
    def test_302_is_not_followed(self) -> Deferred[None]:
        """A 302 to another URL fails the delivery; the other URL receives nothing."""
        return Deferred.fromCoroutine(self.check_not_followed(302))

    def test_303_is_not_followed(self) -> Deferred[None]:
        """A 303 See Other (which a client would follow with a GET) is not followed either."""
        return Deferred.fromCoroutine(self.check_not_followed(303))

    async def check_not_followed(self, code: int) -> None:
        import treq.client
        from twisted.internet import reactor
        from twisted.web.client import Agent, HTTPConnectionPool

        elsewhere = AnyMethodRecorder()
        other = reactor.listenTCP(0, Site(elsewhere), interface="127.0.0.1")
        self.addCleanup(other.stopListening)
        hook = RedirectingHook(code, f"http://127.0.0.1:{other.getHost().port}/elsewhere".encode())
        port = reactor.listenTCP(0, Site(hook), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        done: Deferred[Outcome] = Deferred()
        executor = HTTPExecutor(
            reactor, treq.client.HTTPClient(Agent(reactor, pool=pool)), done.callback
        )
        executor.submit(delivery(1, url=f"http://127.0.0.1:{port.getHost().port}/hook"))
        outcome = await done
        self.assertEqual(
            (outcome.state, outcome.status_code, outcome.error),
            ("failed", code, f"HTTP {code}"),
        )
        self.assertEqual((hook.posts, elsewhere.hits), (1, []))
        self.assertEqual(executor.retrying(), 0)


class StreamingResponse:
    """A 2xx answer whose body the test feeds piece by piece."""

    def __init__(self, code: int = 200) -> None:
        self.code = code
        self.headers = Headers()
        self.transport = StringTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def feed(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def end(self) -> None:
        self.protocol.connectionLost(Failure(ResponseDone()))


class ResponseLimitTests(SynchronousTestCase):
    def start(self, limit: int) -> tuple[Harness, StreamingResponse]:
        h = Harness(max_response_bytes=limit)
        h.submit(delivery(1))
        h.turn()
        response = StreamingResponse()
        h.client.requests[0].d.callback(response)
        return h, response

    def test_huge_body_is_cut_off_after_the_limit(self) -> None:
        """Past max_response_bytes the connection is dropped and the 2xx counts at once."""
        h, response = self.start(100)
        response.feed(b"x" * 60)
        self.assertEqual(h.outcomes, [])
        response.feed(b"x" * 60)
        self.assertEqual(response.transport.producerState, "stopped")
        self.assertEqual([(o.state, o.status_code) for o in h.outcomes], [("succeeded", 200)])
        # The rest of a huge body is ignored.
        for _ in range(100):
            response.feed(b"x" * 65536)
        response.end()
        self.assertEqual(len(h.outcomes), 1)
        self.assertEqual(h.executor.in_flight(), 0)

    def test_body_within_the_limit_is_read_to_its_end(self) -> None:
        """A body of exactly max_response_bytes is read whole, keeping the connection."""
        h, response = self.start(100)
        response.feed(b"x" * 100)
        self.assertEqual(h.outcomes, [])
        response.end()
        self.assertEqual(response.transport.producerState, "producing")
        self.assertEqual([o.state for o in h.outcomes], ["succeeded"])

    def test_zero_limit_drops_any_body(self) -> None:
        """With a limit of 0 the first body byte ends the reading."""
        h, response = self.start(0)
        response.feed(b"x")
        self.assertEqual(response.transport.producerState, "stopped")
        self.assertEqual([o.state for o in h.outcomes], ["succeeded"])

    def test_negative_limit_is_refused(self) -> None:
        """A negative max_response_bytes is a configuration error naming the field."""
        with self.assertRaises(ValueError) as caught:
            HTTPExecutor(Clock(), FakeHTTPClient(), lambda o: None, max_response_bytes=-1)
        self.assertIn("max_response_bytes", str(caught.exception))


class EndlessBody(Resource):
    """Answer 200 and then stream body data until the client goes away."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.gone: Deferred[None] = Deferred()

    def render_POST(self, request: Any) -> Any:
        from twisted.internet import reactor

        chunk = b"y" * 16384
        finished = request.notifyFinish()
        finished.addBoth(lambda _: self.gone.callback(None) if not self.gone.called else None)

        def more() -> None:
            if self.gone.called:
                return
            request.write(chunk)
            self.sent += len(chunk)
            reactor.callLater(0, more)

        more()
        return NOT_DONE_YET


class RealResponseLimitTests(TestCase):
    async def test_endless_body_is_cut_off(self) -> None:
        """Over a real socket, an endless answer ends in success and the connection is dropped."""
        import treq.client
        from twisted.internet import reactor
        from twisted.web.client import Agent, HTTPConnectionPool

        receiver = EndlessBody()
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        done: Deferred[Outcome] = Deferred()
        executor = HTTPExecutor(
            reactor,
            treq.client.HTTPClient(Agent(reactor, pool=pool)),
            done.callback,
            max_response_bytes=65536,
        )
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        executor.submit(delivery(1, url=url, timeout_s=5.0, retry_max=0))
        outcome = await done
        self.assertEqual((outcome.state, outcome.status_code), ("succeeded", 200))
        await receiver.gone
        self.assertLess(receiver.sent, 64 * 1024 * 1024)


class WholeBodyTests(SynchronousTestCase):
    def test_bytes_are_written_at_once(self) -> None:
        """whole_body writes the whole body to the consumer when the request starts."""
        from scheduler0.executor.http import whole_body

        consumer = []

        class Consumer:
            def write(self, data: bytes) -> None:
                consumer.append(data)

        body = b"[" + b"x" * 300_000 + b"]"
        producer = whole_body(body)
        self.assertEqual(producer.length, len(body))
        self.successResultOf(producer.startProducing(Consumer()))
        self.assertEqual(consumer, [body])

    def test_other_data_is_left_to_treq(self) -> None:
        """Anything but bytes is adapted as treq would (a file becomes a FileBodyProducer)."""
        import io

        from twisted.web.client import FileBodyProducer

        from scheduler0.executor.http import whole_body

        self.assertIsInstance(whole_body(io.BytesIO(b"abc")), FileBodyProducer)


class EndpointBoundTests(SynchronousTestCase):
    """Bounded concurrency per callback URL and per host (slow endpoints make nothing late)."""

    def test_a_slow_url_gets_up_to_its_bound_in_flight(self) -> None:
        """Each new slot to a URL whose POSTs are all still open starts at once, up to the bound."""
        h = Harness(max_per_url=3)
        for n in range(1, 5):
            h.submit(delivery(n))
            h.turn()
            h.clock.advance(0.1)
        self.assertEqual([r.ids for r in h.client.requests], [["exec-1"], ["exec-2"], ["exec-3"]])
        self.assertEqual([at for _, at in h.started], [0.0, 0.1, 0.2])
        self.assertEqual(h.executor.queue_depth(), 1)

    def test_a_slot_that_waits_too_long_at_the_bound_is_skipped(self) -> None:
        """At its URL's bound a first attempt waits ENDPOINT_WAIT_S, then is skipped."""
        h = Harness(max_per_url=1)
        h.submit(delivery(1))
        h.turn()
        h.submit(delivery(2))
        h.turn()
        h.clock.advance(ENDPOINT_WAIT_S - SWEEP_S / 2)
        self.assertEqual(h.outcomes, [])
        h.clock.pump([SWEEP_S] * 4)
        [outcome] = h.outcomes
        self.assertEqual(
            (outcome.delivery.execution_id, outcome.state, outcome.skip_reason, outcome.attempts),
            ("exec-2", "skipped", "endpoint_busy", 0),
        )
        self.assertIn("MaxWorkersPerURL", outcome.error)
        self.assertEqual(h.executor.queue_depth(), 0)
        self.assertEqual(len(h.client.requests), 1)

    def test_a_slot_goes_when_the_url_frees_in_time(self) -> None:
        """A slot waiting at the bound is sent as soon as a POST to its URL ends."""
        h = Harness(max_per_url=1)
        h.submit(delivery(1))
        h.turn()
        h.submit(delivery(2))
        h.turn()
        h.clock.advance(ENDPOINT_WAIT_S / 2)
        h.client.requests[0].respond(200)
        h.turn()
        self.assertEqual([r.ids for r in h.client.requests], [["exec-1"], ["exec-2"]])
        h.clock.pump([SWEEP_S] * 8)
        self.assertEqual([o.state for o in h.outcomes], ["succeeded"])

    def test_the_host_bound_holds_across_its_urls(self) -> None:
        """URLs of one host share its bound; another host is not held back by it."""
        h = Harness(max_per_url=5, max_per_host=2)
        for n, url in enumerate(
            ["http://a.test/1", "http://a.test/2", "http://A.test/3", "http://b.test/1"], 1
        ):
            h.submit(delivery(n, url=url))
        h.turn()
        self.assertEqual(
            sorted(r.url for r in h.client.requests),
            ["http://a.test/1", "http://a.test/2", "http://b.test/1"],
        )
        h.client.requests[0].respond(200)
        h.turn()
        self.assertEqual(h.client.requests[-1].url, "http://A.test/3")

    def test_a_hung_url_does_not_hold_back_another(self) -> None:
        """A URL whose POSTs never answer costs only its own bound, not other URLs' slots."""
        h = Harness(max_per_url=2, max_workers=4)
        for second in range(10):
            h.submit(delivery(100 + second, url="http://hung.test/"))
            h.submit(delivery(200 + second, url="http://fast.test/"))
            h.turn()
            for request in h.client.open():
                if request.url == "http://fast.test/":
                    request.respond(200)
            h.clock.advance(1)
        by_url: dict[str, list[str]] = {}
        for o in h.outcomes:
            by_url.setdefault(o.delivery.callback_url, []).append(o.skip_reason or o.state)
        self.assertEqual(by_url["http://fast.test/"], ["succeeded"] * 10)
        self.assertEqual(set(by_url["http://hung.test/"]), {"endpoint_busy"})
        self.assertEqual(sum(1 for r in h.client.requests if r.url == "http://hung.test/"), 2)

    def test_first_attempts_go_before_retries(self) -> None:
        """When the URL frees, a waiting first attempt goes before a waiting retry."""
        from scheduler0.executor.http import _encode

        size = len(_encode(delivery(1), 1))
        h = Harness(max_per_url=1, payload_max_bytes=2 + size + 1, retry_delay_s=0.1)
        h.submit(delivery(1))
        h.turn()
        h.submit(delivery(2))
        h.turn()
        h.client.requests[0].respond(500)  # exec-1 will retry in 0.1 s
        h.turn()
        self.assertEqual(h.client.requests[1].ids, ["exec-2"])
        h.clock.advance(0.1)  # exec-1's retry waits: exec-2 is in flight
        h.submit(delivery(3))
        h.turn()
        h.client.requests[1].respond(200)
        h.turn()
        self.assertEqual([r.ids for r in h.client.requests[2:]], [["exec-3"]])
        h.client.requests[2].respond(200)
        h.turn()
        self.assertEqual(h.client.requests[3].ids, ["exec-1"])
        self.assertEqual(h.client.requests[3].items[0]["attempt"], 2)

    def test_a_retry_that_cannot_start_waits_for_its_next_retry(self) -> None:
        """
        A retry held at the bound for ENDPOINT_WAIT_S goes back to wait (its
        retries run out sooner) and never holds up new slots.
        """
        h = Harness(max_per_url=1, retry_delay_s=1.0)
        h.submit(delivery(1, retry_max=1))
        h.turn()
        h.client.requests[0].respond(503)
        h.submit(delivery(2))
        h.turn()  # exec-2 in flight, exec-1 retrying in 1 s
        h.clock.advance(1.0)  # exec-1 queued, the URL is busy
        h.clock.pump([SWEEP_S] * 6)
        [outcome] = h.outcomes
        self.assertEqual((outcome.delivery.execution_id, outcome.state), ("exec-1", "failed"))
        self.assertEqual(outcome.attempts, 1)
        self.assertIn("HTTP 503; no retry:", outcome.error)
        self.assertEqual(h.executor.queue_depth(), 0)


def exclusive(n: int, policy: str, **changes: Any) -> Delivery:
    """A delivery of job-1 (slot n) under a concurrency policy."""
    return delivery(
        n,
        job_uuid="job-1",
        scheduled_at=f"2026-03-01T12:00:{n:02d}.000Z",
        policy=DeliveryPolicy(concurrency=policy),
        **changes,
    )


class ConcurrencyPolicyTests(SynchronousTestCase):
    def test_forbid_skips_a_slot_while_the_previous_runs(self) -> None:
        """forbid: a slot due while the job's previous execution is in flight is still_running."""
        h = Harness()
        h.submit(exclusive(1, FORBID))
        h.turn()
        self.assertTrue(h.executor.running("job-1"))
        h.submit(exclusive(2, FORBID))
        [skipped] = h.outcomes
        self.assertEqual(
            (skipped.delivery.execution_id, skipped.state, skipped.skip_reason),
            ("exec-2", "skipped", "still_running"),
        )
        self.assertIn("2026-03-01T12:00:01.000Z", skipped.error)
        h.client.requests[0].respond(200)
        self.assertFalse(h.executor.running("job-1"))
        h.submit(exclusive(3, FORBID))
        h.turn()
        self.assertEqual([r.ids for r in h.client.requests], [["exec-1"], ["exec-3"]])

    def test_forbid_counts_a_retrying_execution_as_running(self) -> None:
        h = Harness()
        h.submit(exclusive(1, FORBID))
        h.turn()
        h.client.requests[0].respond(500)
        self.assertEqual(h.executor.retrying(), 1)
        h.submit(exclusive(2, FORBID))
        self.assertEqual([o.skip_reason for o in h.outcomes], ["still_running"])

    def test_allow_overlaps(self) -> None:
        """allow (the default): runs of one job overlap."""
        h = Harness()
        h.submit(exclusive(1, "allow"))
        h.turn()
        h.submit(exclusive(2, "allow"))
        h.turn()
        self.assertEqual(len(h.client.open()), 2)
        self.assertFalse(h.executor.running("job-1"))

    def test_replace_abandons_the_running_post(self) -> None:
        """replace: the running attempt is abandoned (recorded as such) and the new slot sent."""
        h = Harness()
        h.submit(exclusive(1, REPLACE))
        h.turn()
        first = h.client.requests[0]
        h.submit(exclusive(2, REPLACE))
        h.turn()
        [abandoned] = h.outcomes
        self.assertEqual(
            (abandoned.delivery.execution_id, abandoned.state, abandoned.skip_reason),
            ("exec-1", "skipped", "replaced"),
        )
        self.assertEqual(abandoned.attempts, 1)
        self.assertIn("abandoned after 1 attempt (one in flight)", abandoned.error)
        self.assertIn("2026-03-01T12:00:02.000Z", abandoned.error)
        self.assertTrue(first.d.called)  # cancelled: it carried nothing else
        self.assertEqual(h.client.requests[1].ids, ["exec-2"])
        h.client.requests[1].respond(200)
        self.assertEqual([o.state for o in h.outcomes], ["skipped", "succeeded"])
        self.assertEqual(h.executor.in_flight(), 0)

    def test_replace_keeps_a_shared_post_for_the_others(self) -> None:
        """An abandoned delivery's POST goes on for the other jobs in it; it is reported once."""
        h = Harness()
        h.submit(exclusive(1, REPLACE), delivery(9))
        h.turn()
        shared = h.client.requests[0]
        h.submit(exclusive(2, REPLACE))
        h.turn()
        self.assertFalse(shared.d.called)
        shared.respond(200)
        states = {o.delivery.execution_id: (o.state, o.skip_reason) for o in h.outcomes}
        self.assertEqual(states, {"exec-1": ("skipped", "replaced"), "exec-9": ("succeeded", None)})
        self.assertEqual(len(h.outcomes), 2)

    def test_replace_cancels_a_pending_retry(self) -> None:
        h = Harness()
        h.submit(exclusive(1, REPLACE))
        h.turn()
        h.client.requests[0].respond(500)
        h.submit(exclusive(2, REPLACE))
        h.turn()
        self.assertEqual(h.executor.retrying(), 0)
        h.clock.advance(120)
        self.assertEqual([r.ids for r in h.client.requests], [["exec-1"], ["exec-2"]])
        self.assertEqual(h.outcomes[0].skip_reason, "replaced")

    def test_replace_of_a_waiting_delivery(self) -> None:
        """A replaced delivery still waiting for its URL is dropped before it is sent."""
        h = Harness(max_per_url=1)
        h.submit(delivery(9))
        h.turn()
        h.submit(exclusive(1, REPLACE))
        h.turn()
        h.submit(exclusive(2, REPLACE))
        self.assertEqual(h.executor.queue_depth(), 1)
        self.assertEqual((h.outcomes[0].skip_reason, h.outcomes[0].attempts), ("replaced", 0))
        h.client.requests[0].respond(200)
        h.turn()
        self.assertEqual(h.client.requests[1].ids, ["exec-2"])


class PolicyRetryDelayTests(SynchronousTestCase):
    def test_a_job_sets_its_own_retry_delays(self) -> None:
        """retry_delay_s and retry_max_delay_s of a job replace the executor's."""
        h = Harness(retry_delay_s=1.0, retry_delay_cap_s=60.0)
        policy = DeliveryPolicy(retry_delay_s=5.0, retry_max_delay_s=12.0)
        mine = delivery(1, policy=policy)
        self.assertEqual([h.executor.retry_delay(n, None, mine) for n in (1, 2, 3)], [5, 10, 12])
        self.assertEqual([h.executor.retry_delay(n) for n in (1, 2, 3)], [1, 2, 4])
        h.submit(delivery(1, policy=policy, retry_max=5))
        h.turn()
        h.client.requests[0].respond(500)
        h.clock.advance(4.9)
        self.assertEqual(len(h.client.requests), 1)
        h.clock.advance(0.1)
        self.assertEqual(len(h.client.requests), 2)


class ResponseExcerptTests(SynchronousTestCase):
    def test_a_failed_answer_keeps_its_first_bytes(self) -> None:
        h = Harness(response_excerpt_bytes=10)
        h.submit(delivery(1, retry_max=0))
        h.turn()
        h.client.requests[0].respond(422, body="caf\u00e9 is closed today".encode())
        [outcome] = h.outcomes
        self.assertEqual((outcome.state, outcome.status_code), ("failed", 422))
        self.assertEqual(outcome.response_body, "caf\u00e9 is c")  # 10 bytes: \u00e9 takes two

    def test_a_success_keeps_nothing(self) -> None:
        h = Harness()
        h.submit(delivery(1))
        h.turn()
        h.client.requests[0].respond(200, body=b"fine")
        self.assertIsNone(h.outcomes[0].response_body)

    def test_the_last_attempt_decides(self) -> None:
        """After a 500 with a body, a timeout leaves no body: the record shows the last attempt."""
        h = Harness(retry_delay_s=1.0)
        h.submit(delivery(1, retry_max=1, timeout_s=5.0))
        h.turn()
        h.client.requests[0].respond(500, body=b"oops")
        h.clock.advance(1.0)
        h.clock.advance(5.0)
        [outcome] = h.outcomes
        self.assertEqual((outcome.state, outcome.response_body), ("failed", None))
        self.assertIn("timeout", outcome.error)
