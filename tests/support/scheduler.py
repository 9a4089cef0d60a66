"""
Fakes around L{SchedulerService}: the state store, the proposer, the execution
store and the executor, and a job as the state store returns it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from scheduler0.delivery import SKIP_NODE_STOPPING, Delivery, Outcome
from scheduler0.store.commands import Command, Result, Subscriber, Subscribers
from scheduler0.store.executions import EXECUTION_COLUMNS, _row
from scheduler0.timeutil import format_instant

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_job(
    uuid: str = "job-1", spec: str = "@every 1s", at: datetime = START, **changes: Any
) -> dict:
    job = {
        "uuid": uuid,
        "project_uuid": "project-1",
        "name": f"name of {uuid}",
        "spec": spec,
        "callback_url": "http://127.0.0.1:9/callback",
        "data": {"n": 1},
        "timezone": "UTC",
        "execution_type": "http",
        "paused": False,
        "catch_up_window_s": 60.0,
        "timeout_s": 30.0,
        "retry_max": 3,
        "created_at": format_instant(at),
        "updated_at": format_instant(at),
        "anchor_at": format_instant(at.replace(microsecond=0)),
    }
    job.update(changes)
    return job


class FakeState:
    def __init__(self, jobs: list[dict]) -> None:
        self.jobs = jobs
        self.loading: Deferred | None = None
        self.pages: list[tuple[tuple[str, str] | None, int]] = []
        #: The paused projects (the test says which).
        self.paused: set[str] = set()

    def paused_projects(self) -> Deferred:
        return succeed(set(self.paused))

    def project_jobs_page(
        self,
        project_uuid: str,
        node_id: int | None,
        after: tuple[str, str] | None = None,
        limit: int = 1000,
    ) -> Deferred:
        """Like StateStore.project_jobs_page, over every job (no owners here)."""
        ordered = sorted(self.jobs, key=lambda job: (job["created_at"], job["uuid"]))
        page = [
            j
            for j in ordered
            if j["project_uuid"] == project_uuid
            and not j.get("paused")
            and (after is None or (j["created_at"], j["uuid"]) > after)
        ]
        return succeed(page[:limit])

    def jobs_page(self, after: tuple[str, str] | None, limit: int) -> Deferred:
        """Like StateStore.jobs_page; C{loading}, when set, stands for the read."""
        self.pages.append((after, limit))
        ordered = sorted(self.jobs, key=lambda job: (job["created_at"], job["uuid"]))
        page = [j for j in ordered if after is None or (j["created_at"], j["uuid"]) > after]
        if self.loading is not None:
            loading, self.loading = self.loading, None
            return loading.addCallback(lambda _: page[:limit])
        return succeed(page[:limit])


class FakeProposer:
    """
    Tells subscribers of commands the test says were applied (C{applied}),
    as a proposer does: each hears only the ops it named.
    """

    def __init__(self) -> None:
        #: Every subscriber, in the order subscribed.
        self.observers: list[Subscriber] = []
        self._subscribers = Subscribers()

    def subscribe(self, fn: Subscriber, ops: Collection[str] | None = None) -> None:
        self.observers.append(fn)
        self._subscribers.add(fn, ops)

    def applied(self, op: str, value: Any) -> None:
        self._subscribers.tell(Command(op, {}), Result.success(value))


class FakeExecutions:
    """
    The records the scheduler makes, kept in memory; C{last_slots} are slots
    taken as recorded before the test began.
    """

    def __init__(self, last_slots: dict[str, str] | None = None) -> None:
        self.records: dict[str, dict] = {}
        self.writes: list[dict] = []
        self._last_slots = last_slots or {}

    def record(self, execution: dict, *, trusted: bool = False) -> None:
        if trusted:
            # The real store writes a trusted record's columns unchecked:
            # the scheduler must give every column in its canonical form.
            assert tuple(execution) == EXECUTION_COLUMNS, sorted(execution)
            _row(execution)
        self.writes.append(execution)
        self.records[execution["execution_id"]] = execution

    def last_slots_of(self, job_uuids: list[str]) -> Deferred:
        """Like ExecutionStore.last_slots_of: the latest slot that got past C{scheduled}."""
        latest = dict(self._last_slots)
        for record in self.records.values():
            job_uuid, slot = record["job_uuid"], record["scheduled_at"]
            if record["state"] != "scheduled" and slot > latest.get(job_uuid, ""):
                latest[job_uuid] = slot
        return succeed({u: latest[u] for u in job_uuids if u in latest})


class FakeExecutor:
    """
    Takes deliveries and holds them: C{finish} reports one started and then
    its outcome, as the receiver's answer would, to the callbacks given.
    After C{stop}, a submitted delivery is reported skipped at once.
    """

    def __init__(
        self,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_started: Callable[[Delivery, float], None] | None = None,
    ) -> None:
        self.submitted: list[Any] = []
        self.cancelled: list[tuple[str, str]] = []
        self.turns: list[float] = []
        self.clock: Clock | None = None
        self.on_outcome = on_outcome
        self.on_started = on_started
        self.stopped = False
        self._unfinished: list[Delivery] = []

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else 0.0

    def submit(self, delivery: Delivery) -> None:
        self.submitted.append(delivery)
        if self.clock is not None:
            self.turns.append(self.clock.seconds())
        if self.stopped:
            now = self._now()
            self._report(Outcome(delivery, "skipped", 0, None, None, SKIP_NODE_STOPPING, None, now))
        else:
            self._unfinished.append(delivery)

    def finish(self, status_code: int) -> None:
        """The oldest delivery not yet finished got C{status_code} from its receiver."""
        delivery = self._unfinished.pop(0)
        now = self._now()
        if self.on_started is not None:
            self.on_started(delivery, now)
        state = "succeeded" if 200 <= status_code < 300 else "failed"
        error = None if state == "succeeded" else f"HTTP {status_code}"
        self._report(Outcome(delivery, state, 1, status_code, error, None, now, now))

    def _report(self, outcome: Outcome) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def stop(self, grace_s: float = 0) -> Deferred[None]:
        self.stopped = True
        return succeed(None)

    def cancel_job(self, job_uuid: str, reason: str) -> int:
        self.cancelled.append((job_uuid, reason))
        return 0

    def congested(self, before: float) -> set[str]:
        # Nothing waits here: a submitted delivery counts as begun.
        return set()
