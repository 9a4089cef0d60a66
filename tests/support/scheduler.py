"""
Fakes around L{SchedulerService}: the state store, the proposer, the execution
store and the executor, and a job as the state store returns it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from scheduler0.store.commands import Command, Result
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
    def __init__(self) -> None:
        self.observers: list[Any] = []

    def subscribe(self, fn: Any) -> None:
        self.observers.append(fn)

    def applied(self, op: str, value: Any) -> None:
        for fn in self.observers:
            fn(Command(op, {}), Result.success(value))


class FakeExecutions:
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
        return succeed({u: self._last_slots[u] for u in job_uuids if u in self._last_slots})


class FakeExecutor:
    def __init__(self) -> None:
        self.submitted: list[Any] = []
        self.cancelled: list[tuple[str, str]] = []
        self.turns: list[float] = []
        self.clock: Clock | None = None

    def submit(self, delivery: Any) -> None:
        self.submitted.append(delivery)
        if self.clock is not None:
            self.turns.append(self.clock.seconds())

    def stop(self) -> Deferred:
        return succeed(None)

    def cancel_job(self, job_uuid: str, reason: str) -> int:
        self.cancelled.append((job_uuid, reason))
        return 0

    def congested(self, before: float) -> set[str]:
        # Nothing waits here: a submitted delivery counts as begun.
        return set()
