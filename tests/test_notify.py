"""
Tests for L{scheduler0.notify}: a failed execution of a project with a
C{notify_url} gives one signed, batched notification, retried a few times
only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.delivery import Delivery, Outcome
from scheduler0.notify import EVENT, RETRY_MAX, FailureNotifier, notification_executor
from scheduler0.store.commands import Command, Result
from tests.support.executor import FakeHTTPClient, delivery


def outcome(n: int, state: str = "failed", project: str = "p1", **changes: Any) -> Outcome:
    values: dict[str, Any] = {
        "delivery": delivery(n, project_uuid=project),
        "state": state,
        "attempts": 4,
        "status_code": 500,
        "error": "HTTP 500",
        "skip_reason": None,
        "started_at": 1_767_225_600.0,
        "finished_at": 1_767_225_615.0,
        "response_body": "database is down",
    }
    values.update(changes)
    return Outcome(**values)


class Harness:
    def __init__(self, projects: dict[str, dict | None]) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.client = FakeHTTPClient()
        self.projects = projects
        self.reads: list[str] = []
        self.signed: list[list[Delivery]] = []
        self.undelivered: list[Outcome] = []

        def sign(body: bytes, deliveries: list[Delivery]) -> dict[str, str]:
            self.signed.append(deliveries)
            return {"x-scheduler0-signature": "t=1,v1=abc"}

        self.notifier = FailureNotifier(
            self.project,
            notification_executor(self.clock, self.client, sign, 2, self.notified),
            node_id=2,
        )

    def project(self, uuid: str) -> Deferred:
        self.reads.append(uuid)
        found = self.projects.get(uuid, KeyError)
        if found is KeyError:
            return fail(RuntimeError("store unavailable"))
        return succeed(found)

    def notified(self, result: Outcome) -> None:
        self.notifier.notified(result)
        if result.state != "succeeded":
            self.undelivered.append(result)


class NotifierTests(SynchronousTestCase):
    def test_a_failed_execution_is_notified_once_signed(self) -> None:
        h = Harness({"p1": {"uuid": "p1", "notify_url": "http://ops.test/alerts"}})
        h.notifier.on_outcome(outcome(1))
        h.clock.advance(0)
        [request] = h.client.requests
        self.assertEqual(request.url, "http://ops.test/alerts")
        self.assertEqual(request.headers["X-Scheduler0-Event"], EVENT)
        self.assertEqual(request.headers["x-scheduler0-signature"], "t=1,v1=abc")
        self.assertEqual(h.signed[0][0].project_uuid, "p1")
        self.assertEqual(
            request.items,
            [
                {
                    "execution_id": "exec-1",
                    "event": "execution.failed",
                    "job_uuid": "job-1",
                    "project_uuid": "p1",
                    "name": "job number 1",
                    "spec": "@every 1s",
                    "attempts": 4,
                    "status_code": 500,
                    "error": "HTTP 500",
                    "response_body": "database is down",
                    "finished_at": "2026-01-01T00:00:15.000Z",
                    "node_id": 2,
                    "scheduled_at": "2026-03-01T12:00:00.000Z",
                    "attempt": 1,
                }
            ],
        )
        request.respond(204)
        self.assertEqual(h.undelivered, [])

    def test_only_failures_are_notified(self) -> None:
        h = Harness({"p1": {"notify_url": "http://ops.test/alerts"}})
        h.notifier.on_outcome(outcome(1, state="succeeded"))
        h.notifier.on_outcome(outcome(2, state="skipped", skip_reason="still_running"))
        h.clock.advance(0)
        self.assertEqual((h.client.requests, h.reads), ([], []))

    def test_a_project_without_notify_url_gets_nothing_and_is_read_once(self) -> None:
        h = Harness({"p1": {"notify_url": None}})
        for n in range(3):
            h.notifier.on_outcome(outcome(n))
        h.clock.advance(0)
        h.notifier.on_outcome(outcome(9))
        h.clock.advance(0)
        self.assertEqual((h.client.requests, h.reads), ([], ["p1"]))

    def test_failures_of_one_turn_go_in_one_post(self) -> None:
        h = Harness({"p1": {"notify_url": "http://ops.test/alerts"}})
        for n in range(5):
            h.notifier.on_outcome(outcome(n))
        h.clock.advance(0)
        self.assertEqual([len(r.items) for r in h.client.requests], [5])

    def test_a_notification_is_retried_a_few_times_then_dropped(self) -> None:
        h = Harness({"p1": {"notify_url": "http://ops.test/alerts"}})
        h.notifier.on_outcome(outcome(1))
        for _ in range(RETRY_MAX + 1):
            h.clock.advance(0)
            h.client.open()[0].respond(503)
            h.clock.advance(60)
        self.assertEqual(len(h.client.requests), RETRY_MAX + 1)
        [lost] = h.undelivered
        self.assertEqual((lost.state, lost.attempts), ("failed", RETRY_MAX + 1))
        h.clock.advance(3600)
        self.assertEqual(len(h.client.requests), RETRY_MAX + 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_a_changed_project_is_read_again(self) -> None:
        h = Harness({"p1": {"notify_url": None}})
        h.notifier.on_outcome(outcome(1))
        h.projects["p1"] = {"notify_url": "http://ops.test/new"}
        h.notifier.on_applied(Command("update_project", {}), Result.success(None))
        h.notifier.on_outcome(outcome(2))
        h.clock.advance(0)
        self.assertEqual([r.url for r in h.client.requests], ["http://ops.test/new"])
        self.assertEqual(h.reads, ["p1", "p1"])

    def test_an_unreadable_project_drops_its_notifications(self) -> None:
        h = Harness({})
        h.notifier.on_outcome(outcome(1, project="gone"))
        self.assertEqual((h.notifier.dropped, h.client.requests), (1, []))
        # Read again next time (nothing was cached).
        h.notifier.on_outcome(outcome(2, project="gone"))
        self.assertEqual(h.reads, ["gone", "gone"])
