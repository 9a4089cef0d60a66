"""
Handover: in a cluster, follows who owns which job and drives this node's
scheduler accordingly -- what it takes up (from where the cluster got, or
from a handover instant on), what it gives up (at once, or at the instant),
and whether the old owner left slots unfired before such an instant.

The scheduler keeps the heap and the timers; this keeps the ownership
bookkeeping and tells the scheduler, through L{Firing}, which jobs to hold
and from when. On a single node there is no handover and the scheduler
owns every job.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from scheduler0.cluster.ownership import OwnershipView, TakenUp
from scheduler0.store.commands import Command, Op, Result
from scheduler0.timeutil import format_instant, parse_instant, utc_from_timestamp

log = Logger()

# Applied changes that, in a cluster, depend on which node owns a job.
_OWNERSHIP_EVENTS = frozenset(
    (
        Op.CREATE_JOBS,
        Op.ASSIGN_JOBS,
        Op.UPDATE_JOB,
        Op.DELETE_JOB,
        Op.DELETE_PROJECT,
        Op.UPDATE_PROJECT,
    )
)
# How many of a resumed project's jobs are read at a time.
_RESUME_PAGE = 1000
# Of those, the ones whose handling reads the state (in order, one at a time).
_READ_OWNERSHIP = frozenset((Op.CREATE_JOBS, Op.ASSIGN_JOBS))


class Firing(Protocol):
    """
    What the handover needs of the scheduler
    (L{scheduler0.scheduler.service.SchedulerService}).
    """

    @property
    def applied_index(self) -> Callable[[], int] | None: ...

    def following(self) -> bool: ...

    def holds(self, job_uuid: str) -> bool: ...

    def add(self, job: dict, since: datetime) -> None: ...

    def remove(self, job_uuid: str, reason: str | None = None) -> None: ...

    def fires_until(self, job_uuid: str) -> datetime | None: ...

    def fire_until(self, job_uuid: str, until: datetime) -> None: ...

    def taken_over(self, job_uuid: str) -> None: ...

    def apply_change(self, command: Command, result: Result) -> None: ...

    def arm(self) -> None: ...

    def project_paused(self, project_uuid: str) -> bool: ...

    def catch_up_start(self, job: dict, last_slot: str | None) -> datetime: ...

    def fire_missed(
        self, job: dict, last_slot: str | None, until: datetime, now: datetime
    ) -> int: ...


@attrs.define(eq=False)
class Handover:
    """
    This node's share of the jobs as ownership changes are applied: takes
    up the jobs moved here, gives up those moved away, and fills the gap an
    old owner that failed before its handover instant left.
    """

    clock: IReactorTime
    # This node's share of the jobs (see scheduler0.cluster.ownership).
    ownership: OwnershipView
    node_id: int
    # How long after a handover instant this node checks that the old
    # owner's slots before it reached the cluster (None: never).
    gap_check_s: float | None = None
    _scheduler: Firing = attrs.field(init=False)
    _owned: set[str] = attrs.field(factory=set)
    # Ownership changes waiting to be read, with the log index of each.
    _events: list[tuple[Command, Result, int]] = attrs.field(factory=list)
    _events_running: bool = False
    # The log index of the change being read.
    _event_index: int = 0
    # Jobs moved off this node while a take-over was being read: job uuid ->
    # (move number, handover instant or None); see _take_up.
    _moved_off: dict[str, tuple[int, datetime | None]] = attrs.field(factory=dict)
    _move_seq: int = 0
    # Jobs handed to this node at an instant still to come: no slot before it.
    _not_before: dict[str, datetime] = attrs.field(factory=dict)

    def attach(self, scheduler: Firing) -> None:
        """Drive C{scheduler} (called once, as the scheduler is built)."""
        self._scheduler = scheduler

    # -- what the scheduler asks -----------------------------------------------

    def sources(self) -> tuple[Callable[..., Deferred], Callable[..., Deferred]]:
        """Where this node's jobs and their last fired slots come from."""
        return self.ownership.jobs_page, self.ownership.last_slots_of

    def loaded(self, job: dict, since: datetime) -> datetime:
        """C{job} was loaded as this node's: the instant after which it fires here."""
        self._owned.add(job["uuid"])
        return self.after_handover(job, since)

    def reloaded(self, kept: set[str]) -> None:
        """The jobs of a restored state are the ones this node owns now."""
        self._owned = kept

    def owned_count(self) -> int:
        """How many jobs are assigned to this node."""
        return len(self._owned)

    def unread_before(self) -> int | None:
        """
        The log index just before the first ownership change not yet taken
        in (None: every one is): how far the scheduler's view is as of.
        """
        if self._events_running:
            return self._event_index - 1
        if self._events:
            return self._events[0][2] - 1
        return None

    def after_handover(self, job: dict, since: datetime) -> datetime:
        """
        A job handed over at an instant fires here from that instant on; the
        instant is kept, so a change made before it does not bring the start
        forward (the old owner still fires the slots before it).
        """
        handover = job.get("handover_at")
        if not handover:
            return since
        floor = parse_instant(handover) - timedelta(microseconds=1)
        if floor > utc_from_timestamp(self.clock.seconds()):
            self._not_before[job["uuid"]] = floor
        return max(since, floor)

    def not_before(self, job_uuid: str, since: datetime) -> datetime:
        """Where C{job_uuid}, held from C{since}, starts: never before its handover instant."""
        if self._not_before:
            floor = self._not_before.get(job_uuid)
            if floor is not None:
                if floor < utc_from_timestamp(self.clock.seconds()):
                    del self._not_before[job_uuid]
                elif since < floor:
                    since = floor
        return since

    # -- following the state machine ---------------------------------------

    def follow(self, command: Command, result: Result, index: int) -> bool:
        """
        Follow one applied change (made at log C{index}) that depends on who
        owns a job; False for any other change, which is the scheduler's alone.
        """
        if command.op not in _OWNERSHIP_EVENTS:
            return False
        if command.op == Op.UPDATE_PROJECT:
            return self._project_changed(command, result, index)
        if command.op == Op.ASSIGN_JOBS:
            # Jobs moved off this node stop here at once: the node may
            # fire again as soon as it has applied this entry, before
            # the take-over of jobs moved to it has been read.
            self._given_up(command.args)
        if command.op in _READ_OWNERSHIP:
            # In order, one at a time: these read who owns what now.
            self._events.append((command, result, index))
            if not self._events_running:
                Deferred.fromCoroutine(self._drain_events()).addErrback(
                    lambda f: log.failure("following a job change failed", f)
                )
            return True
        # A pause or delete takes effect at once, even while a take-over
        # is being read: the take-over reads the state as it is then, so
        # it cannot bring back what this removed. A change to a job not
        # held yet waits its turn, in case a take-over read it before.
        job_uuid = (result.value or {}).get("uuid")
        if (
            command.op == Op.UPDATE_JOB
            and job_uuid not in self._owned
            and not (job_uuid is not None and self._scheduler.holds(job_uuid))
            and (self._events or self._events_running)
        ):
            self._events.append((command, result, index))
            return True
        self._cluster_change(command, result)
        return True

    def _project_changed(self, command: Command, result: Result, index: int) -> bool:
        """
        A project changed. A pause stops its jobs here at once (the
        scheduler drops them); a resume takes up again, in turn with the
        other ownership changes, the project's active jobs this node owns.
        """
        project = result.value if isinstance(result.value, dict) else {}
        project_uuid = project.get("uuid")
        was_paused = project_uuid is not None and self._scheduler.project_paused(project_uuid)
        self._scheduler.apply_change(command, result)
        if was_paused and not project.get("paused"):
            self._events.append((command, result, index))
            if not self._events_running:
                Deferred.fromCoroutine(self._drain_events()).addErrback(
                    lambda f: log.failure("following a job change failed", f)
                )
        return True

    async def _resumed(self, project_uuid: str) -> None:
        """Take up again the active jobs of a resumed project that this node owns."""
        scheduler = self._scheduler
        started = self._move_seq
        after: tuple[str, str] | None = None
        while True:
            page = await self.ownership.project_jobs_page(project_uuid, after, _RESUME_PAGE)
            if scheduler.project_paused(project_uuid):
                return  # paused again meanwhile
            for job in page:
                job_uuid = job["uuid"]
                if scheduler.holds(job_uuid):
                    continue
                moved = self._moved_off.get(job_uuid)
                if moved is not None and moved[0] > started:
                    continue
                self._owned.add(job_uuid)
                scheduler.add(
                    job, since=self.after_handover(job, scheduler.catch_up_start(job, None))
                )
            scheduler.arm()
            if len(page) < _RESUME_PAGE:
                return
            after = (page[-1]["created_at"], page[-1]["uuid"])

    async def _drain_events(self) -> None:
        self._events_running = True
        try:
            while self._events and self._scheduler.following():
                command, result, self._event_index = self._events.pop(0)
                try:
                    await self._cluster_event(command, result)
                except Exception:
                    log.failure("following {op} failed", op=command.op)
        finally:
            self._events_running = False
            self._moved_off.clear()

    async def _cluster_event(self, command: Command, result: Result) -> None:
        op = command.op
        value: Any = result.value
        scheduler = self._scheduler
        if op == Op.CREATE_JOBS:
            uuids = [job["uuid"] for job in value or ()]
            started = self._move_seq
            for job in await self.ownership.owned_jobs(uuids):
                if scheduler.holds(job["uuid"]):
                    self._owned.add(job["uuid"])
                else:
                    self._take_up(job, scheduler.catch_up_start(job, None), started)
            scheduler.arm()
        elif op == Op.ASSIGN_JOBS:
            await self._assigned(command.args)
        elif op == Op.UPDATE_PROJECT:
            await self._resumed(value["uuid"])
        else:
            self._cluster_change(command, result)

    def _cluster_change(self, command: Command, result: Result) -> None:
        """A change to one of the jobs (update, delete), for the jobs this node owns."""
        op = command.op
        value: Any = result.value
        owned = self._owned
        scheduler = self._scheduler
        if op == Op.UPDATE_JOB:
            job_uuid = value["uuid"]
            if job_uuid in owned:
                if not value.get("paused") and not scheduler.holds(job_uuid):
                    # Resumed: a handover instant still to come no longer
                    # applies, since the old owner dropped the job when it
                    # was paused; this node fires it from now on.
                    self._not_before.pop(job_uuid, None)
                scheduler.apply_change(command, result)
                return
            until = scheduler.fires_until(job_uuid)
            if until is not None:
                # Moved to another node but still fired here until the
                # handover instant: a pause or change applies here too.
                scheduler.apply_change(command, result)
                scheduler.fire_until(job_uuid, until)
            return
        if op == Op.DELETE_JOB:
            deleted_uuid = value["uuid"]
            owned.discard(deleted_uuid)
            self._gone_during_take_over([deleted_uuid])
        elif op == Op.DELETE_PROJECT:
            deleted = list(value.get("deleted_jobs", ()))
            owned.difference_update(deleted)
            self._gone_during_take_over(deleted)
        scheduler.apply_change(command, result)

    def _gone_during_take_over(self, job_uuids: list[str]) -> None:
        """
        Jobs deleted while a take-over is being read: one that read them as
        this node's before the delete must not start them after it (the
        delete found nothing here to stop). Marked as moved away for good.
        """
        if not self._events_running:
            return
        for job_uuid in job_uuids:
            self._move_seq += 1
            self._moved_off[job_uuid] = (self._move_seq, None)

    def _given_up(self, args: Any) -> None:
        """Stop the jobs an assign_jobs moved off this node (at once, or at the handover)."""
        me = self.node_id
        handover = args.get("handover_at")
        until = parse_instant(handover) if handover else None
        given_up = 0
        for job_uuid, node in args.get("moves") or ():
            if node == me:
                continue
            if self._events_running:
                # A take-over in progress may have read this job as ours
                # just before: it checks this before taking the job up.
                self._move_seq += 1
                self._moved_off[job_uuid] = (self._move_seq, until)
            if job_uuid not in self._owned:
                continue
            self._owned.discard(job_uuid)
            given_up += 1
            if not self._scheduler.holds(job_uuid):
                continue
            if until is not None:
                # Planned: keep firing until the new owner starts.
                self._scheduler.fire_until(job_uuid, until)
            else:
                # The leader judged this node gone: its lease has lapsed.
                self._scheduler.remove(job_uuid, "job_moved")
        if given_up:
            log.info(
                "gave up {count} jobs to other nodes ({how})",
                count=given_up,
                how=f"firing them until {handover}" if handover else "at once",
            )

    async def _assigned(self, args: Any) -> None:
        """Take up the jobs moved to this node (those moved away were given up on apply)."""
        me = self.node_id
        scheduler = self._scheduler
        handover = args.get("handover_at")
        until = parse_instant(handover) if handover else None
        mine = [job_uuid for job_uuid, node in args.get("moves") or () if node == me]
        assigned_at = self._event_index if scheduler.applied_index is not None else None
        if mine:
            started = self._move_seq
            jobs = await self.ownership.owned_jobs(mine)
            last_slots = await self.ownership.last_slots_of([job["uuid"] for job in jobs])
            for job in jobs:
                if job["uuid"] in self._owned and scheduler.holds(job["uuid"]):
                    continue
                scheduler.remove(job["uuid"])
                since = scheduler.catch_up_start(job, last_slots.get(job["uuid"]))
                self._take_up(job, since, started)
            log.info(
                "took up {count} jobs ({how})",
                count=len(jobs),
                how=f"from {handover} on" if handover else "from their last committed run",
            )
            if until is not None and self.gap_check_s is not None:
                # Should the old owner fail before the instant, the slots it
                # owed would fall between the two: look once its records had
                # time to reach the cluster, and fire what is missing. What
                # was known of the old owner now is kept for the look: the
                # job may move on meanwhile, and what is committed for it
                # then speaks only for slots after the instant.
                self.clock.callLater(
                    max(0.0, until.timestamp() - self.clock.seconds()) + self.gap_check_s,
                    self._check_handover_gap,
                    [TakenUp.of(job, last_slots.get(job["uuid"]), assigned_at) for job in jobs],
                    until,
                )
        scheduler.arm()

    def _take_up(self, job: dict, since: datetime, started: int) -> None:
        """
        Start firing C{job}, read as ours by a take-over begun at move
        C{started} -- unless a move applied since took it away again.
        """
        job_uuid = job["uuid"]
        scheduler = self._scheduler
        moved = self._moved_off.get(job_uuid)
        if moved is not None and moved[0] > started:
            if moved[1] is None:
                return
            # Handed on at an instant meanwhile: fire only until then.
            scheduler.add(job, since=self.after_handover(job, since))
            scheduler.fire_until(job_uuid, moved[1])
            return
        self._owned.add(job_uuid)
        scheduler.add(job, since=self.after_handover(job, since))
        scheduler.taken_over(job_uuid)

    # -- slots an old owner left ------------------------------------------------

    def _check_handover_gap(self, taken_up: list[TakenUp], until: datetime) -> None:
        if not self._scheduler.following():
            return
        Deferred.fromCoroutine(self._fill_handover_gap(taken_up, until)).addErrback(
            lambda f: log.failure("checking a handover for missed slots failed", f)
        )

    async def _fill_handover_gap(self, taken_up: list[TakenUp], until: datetime) -> None:
        """Fire the slots before a handover instant that their old owner did not report done."""
        last_slots = await self.ownership.last_slots_before(taken_up)
        # Whoever owns the job now: the slots before the instant were this
        # node's to take over, even if the job has moved on since.
        job_uuids = [job.uuid for job in taken_up]
        jobs = {job["uuid"]: job for job in await self.ownership.jobs(job_uuids)}
        now = utc_from_timestamp(self.clock.seconds())
        filled = 0
        for job_uuid in job_uuids:
            job = jobs.get(job_uuid)
            if job is None:
                continue
            filled += self._scheduler.fire_missed(job, last_slots.get(job_uuid), until, now)
        if filled:
            log.warn(
                "fired {count} slots before a handover at {until} that their old owner"
                " did not report",
                count=filled,
                until=format_instant(until),
            )
