"""
The scheduler: keeps every active job's next slot in one heap and fires each
slot at its instant on Twisted timers.

There is no polling interval. One timer wakes a little before the earliest
slot (the lead) and prepares every slot due by then: the delivery is built
and the next slot computed ahead of time. A second timer, set for the slot's
exact instant, hands what was prepared to the executor in one reactor turn
(so slots due together batch together) with nothing left to compute. A slot
whose instant has already passed (catch-up) is handed over at once.
Each slot's C{execution_id} is a pure function of the job and the instant, so
a slot fired late after a restart carries the id it would have had on time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from scheduler0.executor.http import Delivery, Outcome, job_members_json
from scheduler0.scheduler.spec import SpecError, execution_id, make_schedule
from scheduler0.store.commands import Command
from scheduler0.timeutil import format_instant, parse_instant, utc_from_timestamp

log = Logger()

# When a job missed more slots than history keeps, only that many get a
# `skipped` record each; the rest are counted in one log event.
SKIPPED_RECORDS_PER_JOB_LIMIT = 100

# How long before a slot its delivery is prepared: three times what the last
# preparation took (so a big batch starts earlier), within these bounds.
PREPARE_LEAD_MIN_S = 0.02
PREPARE_LEAD_MAX_S = 1.0


@attrs.define(eq=False)
class _Entry:
    """One active job as the scheduler holds it."""

    job: dict[str, Any]
    schedule: Any
    generation: int
    next_slot: datetime | None = None
    job_json: str | None = None
    # Slots already prepared and waiting for their instant.
    prepared: list[datetime] = attrs.field(factory=list)


def _slot_seconds(slot: datetime) -> float:
    return slot.timestamp()


@attrs.define(eq=False)
class SchedulerService(Service):
    """
    Fire every active job's slots on time, catch up after a restart, and
    follow job changes as the state machine applies them.
    """

    clock: IReactorTime
    state: Any
    proposer: Any
    executions: Any
    executor: Any
    node_id: int
    history_per_job: int = SKIPPED_RECORDS_PER_JOB_LIMIT
    _entries: dict[str, _Entry] = attrs.field(factory=dict)
    _heap: list[tuple[float, int, str, int]] = attrs.field(factory=list)
    _sequence: int = 0
    _generation: int = 0
    _timer: IDelayedCall | None = None
    # Prepared deliveries by due time, and the timer that releases them.
    _batches: dict[float, list[tuple[str, int, datetime, Delivery]]] = attrs.field(factory=dict)
    _release_timer: IDelayedCall | None = None
    _lead: float = PREPARE_LEAD_MIN_S
    _running: bool = False
    _pending: list[tuple[Command, dict]] | None = None
    _last_formatted: tuple[datetime | None, str] = (None, "")
    _last_clock_formatted: tuple[float | None, str] = (None, "")
    ready: Deferred | None = None

    # -- service lifecycle -------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        # Changes applied while the jobs load are kept and replayed after.
        self._pending = []
        self.proposer.subscribe(self._on_applied)
        self.ready = Deferred.fromCoroutine(self._load())

    def stopService(self) -> Deferred:
        Service.stopService(self)
        self._running = False
        self._cancel_timer()
        if self._release_timer is not None and self._release_timer.active():
            self._release_timer.cancel()
        self._release_timer = None
        # Prepared but unsent slots stay owed: a restart fires them.
        self._batches.clear()
        return self.executor.stop()

    async def _load(self) -> None:
        """Load every job, work out missed slots, and arm the timer."""
        jobs = await self.state.all_jobs()
        last_slots = await self.executions.last_slots()
        self._running = True
        for job in jobs:
            last = last_slots.get(job["uuid"])
            self._add(job, since=self._catch_up_start(job, last))
        pending, self._pending = self._pending or [], None
        for command, result in pending:
            self._on_applied(command, result)
        log.info(
            "scheduler loaded {count} jobs ({active} active)",
            count=len(jobs),
            active=len(self._entries),
        )
        self._fire_due()

    # -- following the state machine ---------------------------------------

    def _on_applied(self, command: Command, result: dict) -> None:
        if self._pending is not None:
            self._pending.append((command, result))
            return
        if not result.get("ok") or not self._running:
            return
        op = command.op
        value = result.get("value")
        now = utc_from_timestamp(self.clock.seconds())
        if op == "create_jobs":
            for job in value or ():
                self._add(job, since=now)
        elif op == "update_job":
            # A slot already due but not yet fired (the timer runs a hair
            # late) still fires, under the job as changed.
            previous = self._entries.pop(value["uuid"], None)
            if value.get("paused"):
                self.executor.cancel_job(value["uuid"], "job_paused")
            since = now
            if previous is not None:
                # Prepared slots of the old entry are dropped at release (its
                # generation is gone) and planned again under the change.
                owed = [*previous.prepared, previous.next_slot]
                earliest = min((slot for slot in owed if slot is not None), default=None)
                if earliest is not None:
                    since = min(now, earliest - timedelta(microseconds=1))
            self._add(value, since=since)
        elif op == "delete_job":
            self._remove(value["uuid"])
            self.executor.cancel_job(value["uuid"], "job_deleted")
        elif op == "delete_project":
            for job_uuid in value.get("deleted_jobs", ()):
                self._remove(job_uuid)
                self.executor.cancel_job(job_uuid, "job_deleted")
        elif op == "state_restored":
            # The whole state was replaced (a Raft snapshot): start over from it.
            Deferred.fromCoroutine(self._reload()).addErrback(
                lambda f: log.failure("reloading jobs after a restore failed", f)
            )
            return
        else:
            return
        self._arm()

    async def _reload(self) -> None:
        """Replace every entry with the jobs the restored state holds."""
        self._pending = []
        try:
            jobs = await self.state.all_jobs()
        finally:
            pending, self._pending = self._pending, None
        now = utc_from_timestamp(self.clock.seconds())
        kept = {job["uuid"] for job in jobs}
        for job_uuid in list(self._entries):
            if job_uuid not in kept:
                self._remove(job_uuid)
                self.executor.cancel_job(job_uuid, "job_deleted")
        for job in jobs:
            previous = self._entries.get(job["uuid"])
            if previous is not None and previous.job == job:
                continue
            self._entries.pop(job["uuid"], None)
            self._add(job, since=now)
        for command, result in pending or ():
            self._on_applied(command, result)
        self._arm()

    # -- the heap ------------------------------------------------------------

    def _catch_up_start(self, job: dict, last_slot: str | None) -> datetime:
        """
        The instant after which slots are still owed: the last slot this node
        fired, but never earlier than the job's creation or last change.
        """
        candidates = [parse_instant(job["created_at"]), parse_instant(job["updated_at"])]
        if last_slot is not None:
            candidates.append(parse_instant(last_slot))
        return max(candidates)

    def _add(self, job: dict, since: datetime) -> None:
        if job.get("paused"):
            return
        try:
            schedule = make_schedule(
                job["spec"], job.get("timezone") or "UTC", parse_instant(job["anchor_at"])
            )
        except SpecError as e:
            log.error(
                "job {job_uuid} has an unusable spec: {error}", job_uuid=job["uuid"], error=str(e)
            )
            return
        self._generation += 1
        entry = _Entry(
            job=job,
            schedule=schedule,
            generation=self._generation,
            job_json=job_members_json(
                job["uuid"], job["project_uuid"], job["name"], job["spec"], job.get("data")
            ),
        )
        self._entries[job["uuid"]] = entry
        self._push(entry, schedule.next_after(since))

    def _remove(self, job_uuid: str) -> None:
        # Heap items of a removed entry are recognised by their generation
        # and dropped when they surface.
        self._entries.pop(job_uuid, None)

    def _push(self, entry: _Entry, slot: datetime | None) -> None:
        entry.next_slot = slot
        if slot is None:
            return
        self._sequence += 1
        heapq.heappush(
            self._heap, (_slot_seconds(slot), self._sequence, entry.job["uuid"], entry.generation)
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _arm(self) -> None:
        """Set the one timer for the earliest live slot."""
        if not self._running:
            return
        while self._heap:
            at, _, job_uuid, generation = self._heap[0]
            entry = self._entries.get(job_uuid)
            if entry is None or entry.generation != generation:
                heapq.heappop(self._heap)
                continue
            break
        else:
            self._cancel_timer()
            return
        wake = at - self._lead
        delay = max(0.0, wake - self.clock.seconds())
        if self._timer is not None and self._timer.active():
            if abs(self._timer.getTime() - wake) < 1e-9:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._fire_due)

    def _fire_due(self) -> None:
        """
        Prepare every slot due within the lead (handing over at once those
        whose instant has passed), then re-arm.
        """
        self._timer = None
        started = self.clock.seconds()
        horizon = started + self._lead
        now = utc_from_timestamp(started)
        while self._heap and self._heap[0][0] <= horizon:
            _, _, job_uuid, generation = heapq.heappop(self._heap)
            entry = self._entries.get(job_uuid)
            if entry is None or entry.generation != generation or entry.next_slot is None:
                continue
            try:
                following = self._fire_slot(entry, entry.next_slot, now)
            except Exception:
                log.failure("firing job {job_uuid} failed", job_uuid=job_uuid)
                following = entry.schedule.next_after(entry.next_slot)
            self._push(entry, following)
        took = self.clock.seconds() - started
        self._lead = min(PREPARE_LEAD_MAX_S, max(PREPARE_LEAD_MIN_S, 3 * took))
        self._arm_release()
        self._arm()

    def _prepare(self, entry: _Entry, slot: datetime, delivery: Delivery) -> None:
        """Hold C{delivery} until C{slot}'s instant."""
        entry.prepared.append(slot)
        due = _slot_seconds(slot)
        batch = self._batches.get(due)
        if batch is None:
            batch = self._batches[due] = []
        batch.append((entry.job["uuid"], entry.generation, slot, delivery))

    def _arm_release(self) -> None:
        if not self._batches or not self._running:
            return
        due = min(self._batches)
        if self._release_timer is not None and self._release_timer.active():
            if self._release_timer.getTime() <= due:
                return
            self._release_timer.cancel()
        self._release_timer = self.clock.callLater(
            max(0.0, due - self.clock.seconds()), self._release
        )

    def _release(self) -> None:
        """Hand every prepared delivery whose instant has come to the executor."""
        self._release_timer = None
        now = self.clock.seconds()
        for due in sorted(d for d in self._batches if d <= now):
            for job_uuid, generation, slot, delivery in self._batches.pop(due):
                entry = self._entries.get(job_uuid)
                if entry is None or entry.generation != generation:
                    continue  # deleted, paused or changed since it was prepared
                entry.prepared.remove(slot)
                try:
                    self.executor.submit(delivery)
                except Exception:
                    log.failure("submitting job {job_uuid} failed", job_uuid=job_uuid)
        self._arm_release()

    def _fire_slot(self, entry: _Entry, slot: datetime, now: datetime) -> datetime | None:
        """
        Deliver C{slot}, or, when it is older than the job's catch-up window,
        record it and every other overdue slot before the window as skipped.
        Return the slot to fire next.
        """
        job = entry.job
        window_start = now - timedelta(seconds=float(job["catch_up_window_s"]))
        if slot > now:
            self._prepare(entry, slot, self._delivery(job, slot, entry.job_json))
            return entry.schedule.next_after(slot)
        if slot >= window_start:
            self._deliver(job, slot, entry.job_json)
            return entry.schedule.next_after(slot)
        count = 0
        current: datetime | None = slot
        while current is not None and current < window_start and count < self.history_per_job:
            self._record(job, current, state="skipped", skip_reason="outside_catch_up_window")
            count += 1
            current = entry.schedule.next_after(current)
        if current is not None and current < window_start:
            # Too many to record one by one: jump to the first slot inside
            # the window and say how the gap was handled.
            current = entry.schedule.next_after(window_start - timedelta(microseconds=1))
            log.warn(
                "job {job_uuid}: more than {count} slots fell outside the catch-up"
                " window before {window_start}; the first {count} are recorded as"
                " skipped, the rest only in this message",
                job_uuid=job["uuid"],
                count=count,
                window_start=format_instant(window_start),
            )
        return current

    def _format_slot(self, slot: datetime) -> str:
        # Slots due together share their instant: format it once.
        if self._last_formatted[0] != slot:
            self._last_formatted = (slot, format_instant(slot))
        return self._last_formatted[1]

    def _record(
        self, job: dict, slot: datetime, state: str, write: bool = True, **fields: Any
    ) -> dict:
        record = {
            "execution_id": execution_id(job["uuid"], slot),
            "job_uuid": job["uuid"],
            "project_uuid": job["project_uuid"],
            "scheduled_at": self._format_slot(slot),
            "state": state,
            "attempts": 0,
            "node_id": self.node_id,
            "started_at": None,
            "finished_at": None,
            "status_code": None,
            "error": None,
            "skip_reason": None,
        }
        record.update(fields)
        if write:
            self.executions.record(record)
        return record

    def _deliver(self, job: dict, slot: datetime, job_json: str | None = None) -> dict:
        # No record yet: the executor's on_started writes the first one when
        # the POST goes out. Until then the slot is owed (a restart fires it
        # again), and writing it here would cost a record per slot on the
        # path between the slot's instant and its POST.
        record = self._record(job, slot, state="scheduled", write=False)
        self.executor.submit(self._delivery(job, slot, job_json, record))
        return record

    def _delivery(
        self, job: dict, slot: datetime, job_json: str | None, record: dict | None = None
    ) -> Delivery:
        return Delivery(
            execution_id=record["execution_id"] if record else execution_id(job["uuid"], slot),
            job_uuid=job["uuid"],
            project_uuid=job["project_uuid"],
            name=job["name"],
            spec=job["spec"],
            data=job.get("data"),
            scheduled_at=record["scheduled_at"] if record else self._format_slot(slot),
            callback_url=job["callback_url"],
            timeout_s=float(job["timeout_s"]),
            retry_max=int(job["retry_max"]),
            job_json=job_json,
        )

    # -- executor results ----------------------------------------------------

    def on_started(self, delivery: Delivery, at: float) -> None:
        """The first attempt of C{delivery} began: record it as running."""
        self.executions.record(self._outcome_record(delivery, "running", attempts=1, started_at=at))

    def on_outcome(self, outcome: Outcome) -> None:
        """Record the final state of one delivery."""
        self.executions.record(
            self._outcome_record(
                outcome.delivery,
                outcome.state,
                attempts=outcome.attempts,
                started_at=outcome.started_at,
                finished_at=outcome.finished_at,
                status_code=outcome.status_code,
                error=outcome.error,
                skip_reason=outcome.skip_reason,
            )
        )

    def _outcome_record(
        self,
        delivery: Delivery,
        state: str,
        attempts: int,
        started_at: float | None = None,
        finished_at: float | None = None,
        status_code: int | None = None,
        error: str | None = None,
        skip_reason: str | None = None,
    ) -> dict:
        def instant(seconds: float | None) -> str | None:
            if seconds is None:
                return None
            # Deliveries sent or finished together share the instant.
            if self._last_clock_formatted[0] != seconds:
                self._last_clock_formatted = (seconds, format_instant(utc_from_timestamp(seconds)))
            return self._last_clock_formatted[1]

        return {
            "execution_id": delivery.execution_id,
            "job_uuid": delivery.job_uuid,
            "project_uuid": delivery.project_uuid,
            "scheduled_at": delivery.scheduled_at,
            "state": state,
            "attempts": attempts,
            "node_id": self.node_id,
            "started_at": instant(started_at),
            "finished_at": instant(finished_at),
            "status_code": status_code,
            "error": error,
            "skip_reason": skip_reason,
        }

    # -- what the API asks -----------------------------------------------------

    def run_now(self, job: dict) -> Deferred:
        """Fire one extra execution of C{job} at this instant."""
        now = utc_from_timestamp(self.clock.seconds())
        # Millisecond instants keep the id of a run-now equal to what the
        # record shows as scheduled_at.
        now = now.replace(microsecond=(now.microsecond // 1000) * 1000)
        return succeed(self._deliver(job, now))

    def next_run_at(self, job: dict) -> str | None:
        """The next slot of C{job} this node will fire, as text."""
        entry = self._entries.get(job["uuid"])
        if entry is not None and entry.prepared:
            return format_instant(min(entry.prepared))
        if entry is not None and entry.next_slot is not None:
            return format_instant(entry.next_slot)
        if job.get("paused"):
            return None
        try:
            schedule = make_schedule(
                job["spec"], job.get("timezone") or "UTC", parse_instant(job["anchor_at"])
            )
        except SpecError:
            return None
        slot = schedule.next_after(utc_from_timestamp(self.clock.seconds()))
        return None if slot is None else format_instant(slot)

    def active_jobs(self) -> int:
        return len(self._entries)

    def pending_slots(self) -> Iterable[tuple[str, datetime | None]]:
        return ((u, e.next_slot) for u, e in self._entries.items())
