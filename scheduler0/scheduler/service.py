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
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from scheduler0.clockwatch import SKIP_CLOCK_STEPPED, ClockStep
from scheduler0.delivery import (
    DEFAULT_POLICY,
    SKIP_COALESCED,
    SKIP_OVERLOADED,
    Delivery,
    DeliveryPolicy,
    Outcome,
    job_members_json,
)
from scheduler0.errors import RecordsHeld
from scheduler0.model import ALLOW
from scheduler0.scheduler.admission import GATE_S, LATE_S, Admission
from scheduler0.scheduler.ports import (
    AppliedCommands,
    ExecutionRecords,
    Handover,
    JobReader,
    Sender,
)
from scheduler0.scheduler.spec import SpecError, execution_id_at, make_schedule, slot_milliseconds
from scheduler0.store.commands import Command, Op, Result
from scheduler0.timeutil import format_instant, parse_instant, utc_from_timestamp

log = Logger()

# How far each released batch's starting point moves (a prime, so over
# successive batches every position comes first in turn).
_ROTATION_STEP = 7919

# When a job missed more slots than history keeps, only that many get a
# `skipped` record each; the rest are counted in one log event.
SKIPPED_RECORDS_PER_JOB_LIMIT = 100

# How long before a slot its delivery is prepared: three times what the last
# preparation took (so a big batch starts earlier), within these bounds.
PREPARE_LEAD_MIN_S = 0.02
# How soon a node without a valid lease looks again whether it may fire.
LEASE_RETRY_S = 0.05
PREPARE_LEAD_MAX_S = 1.0

# The longest the scheduler works through due slots in one reactor turn
# before it lets the reactor serve everything else (Raft heartbeats, leases,
# the API, callback answers) and goes on in the next.
SLICE_S = 0.02
# Slots worked through between two looks at the clock.
_SLICE_CHECK = 256
# The gaps in firing (see SchedulerService._ready) kept: at most this many,
# none that ended longer ago than this.
_GAPS_KEPT = 32
_GAPS_SPAN_S = 3600.0
# The spans of wall time forward steps of the clock jumped over that are
# kept (the oldest is forgotten first; its slots are long since handled).
_JUMPS_KEPT = 8

# Jobs are read from the state this many at a time at start-up, so a million
# of them never sit in memory as whole rows at once, and the first pages fire
# while later ones load.
LOAD_PAGE_SIZE = 5000

# A job whose slots come at most this far apart keeps its callback members
# encoded between slots; sparser jobs encode them per slot instead of holding
# the text in memory for hours.
KEEP_ENCODED_PERIOD = timedelta(seconds=60)
# A run-now that falls on one of its job's slots is moved this much later.
RUN_NOW_NUDGE = timedelta(milliseconds=1)
# A run-now this close after (or at) the job's last one comes after it.
RUN_NOW_CLOSE = timedelta(milliseconds=10)
# Jobs whose last run-now instant is remembered at most (see run_now).
RUN_NOW_REMEMBERED = 10_000

# Bounds of the tables that let many jobs share one object (a kind, a slot
# instant, a parsed time, a first slot); past its bound a table starts over.
SHARED_LIMIT = 100_000
MEMO_LIMIT = 10_000

# What jobs of one L{_Kind} share, in the order of its fields (L{_Kind.key}).
_KindKey: TypeAlias = tuple[
    str, str, str, float, int, float, str, str, str, bool, float | None, float | None
]


@attrs.frozen
class _Kind:
    """
    What many jobs have in common (a project, a spec, a URL, limits, a
    schedule): one object for all of them, so each job holds one reference.
    """

    project_uuid: str
    spec: str
    callback_url: str
    timeout_s: float
    retry_max: int
    catch_up_window_s: float
    timezone: str
    anchor_at: str
    concurrency_policy: str
    coalesce: bool
    retry_delay_s: float | None
    retry_max_delay_s: float | None
    schedule: Any = attrs.field(eq=False)
    # How the executor sends its deliveries (made from the fields above).
    policy: DeliveryPolicy = attrs.field(eq=False, init=False)

    @policy.default
    def _policy(self) -> DeliveryPolicy:
        if (
            self.concurrency_policy == ALLOW
            and self.retry_delay_s is None
            and self.retry_max_delay_s is None
        ):
            return DEFAULT_POLICY
        return DeliveryPolicy(self.concurrency_policy, self.retry_delay_s, self.retry_max_delay_s)

    @staticmethod
    def key(job: dict) -> _KindKey:
        retry_delay = job.get("retry_delay_s")
        retry_max_delay = job.get("retry_max_delay_s")
        return (
            job["project_uuid"],
            job["spec"],
            job["callback_url"],
            float(job["timeout_s"]),
            int(job["retry_max"]),
            float(job["catch_up_window_s"]),
            job.get("timezone") or "UTC",
            job["anchor_at"],
            job.get("concurrency_policy") or ALLOW,
            bool(job.get("coalesce")),
            None if retry_delay is None else float(retry_delay),
            None if retry_max_delay is None else float(retry_max_delay),
        )

    def as_key(self) -> _KindKey:
        """What L{key} gives for the jobs of this kind."""
        return (
            self.project_uuid,
            self.spec,
            self.callback_url,
            self.timeout_s,
            self.retry_max,
            self.catch_up_window_s,
            self.timezone,
            self.anchor_at,
            self.concurrency_policy,
            self.coalesce,
            self.retry_delay_s,
            self.retry_max_delay_s,
        )


@attrs.define(eq=False)
class _Entry:
    """
    One active job as the scheduler holds it: only what firing needs, the
    part many jobs have in common shared in a L{_Kind} (a million of these
    must fit in memory).
    """

    uuid: str
    name: str
    data: Any
    kind: _Kind
    next_slot: datetime | None = None
    job_json: str | None = None
    # Slots already prepared and waiting for their instant (None: none).
    prepared: list[datetime] | None = None
    # In a cluster, when the job is handed to another node: this node fires
    # its slots before this instant only.
    until: datetime | None = None
    # When this node took the job over (POSIX seconds; 0: it did not): the
    # slots it owes from before are late for the move, not for load.
    ready_from: float = 0.0

    @property
    def project_uuid(self) -> str:
        return self.kind.project_uuid

    @property
    def spec(self) -> str:
        return self.kind.spec

    @property
    def callback_url(self) -> str:
        return self.kind.callback_url

    @property
    def timeout_s(self) -> float:
        return self.kind.timeout_s

    @property
    def retry_max(self) -> int:
        return self.kind.retry_max

    @property
    def catch_up_window_s(self) -> float:
        return self.kind.catch_up_window_s

    @property
    def schedule(self) -> Any:
        return self.kind.schedule

    def same_job(self, job: dict) -> bool:
        """Whether C{job} fires exactly as this entry does."""
        return (
            not job.get("paused")
            and self.name == job["name"]
            and self.data == job.get("data")
            and _Kind.key(job) == self.kind.as_key()
        )


def _slot_seconds(slot: datetime) -> float:
    return slot.timestamp()


@attrs.define(eq=False)
class SchedulerService(Service):
    """
    Fire every active job's slots on time, catch up after a restart, and
    follow job changes as the state machine applies them.

    Observers (metrics, structured logs) hang on two lists:

      - C{execution_observers}: each is called once with every FINAL
        execution record this node makes -- an outcome (C{succeeded},
        C{failed}, C{skipped} by the executor) and every slot the scheduler
        skips itself -- as the very dict given to C{executions.record}
        (keys execution_id, job_uuid, project_uuid, scheduled_at, state,
        attempts, node_id, started_at, finished_at, status_code, error,
        skip_reason; instants as text). It must not change the dict.
      - C{started_observers}: each is called with the L{Delivery} and the
        instant (POSIX seconds) its first attempt began; the delivery's
        C{scheduled_s} is its slot in POSIX seconds, so lateness is a
        subtraction.

    An observer that raises is logged (once per observer) and firing goes on.
    """

    clock: IReactorTime
    state: JobReader
    proposer: AppliedCommands
    executions: ExecutionRecords
    executor: Sender
    node_id: int
    history_per_job: int = SKIPPED_RECORDS_PER_JOB_LIMIT
    _entries: dict[str, _Entry] = attrs.field(factory=dict)
    # (slot seconds, sequence, entry); an item whose entry is no longer the
    # one in _entries (deleted, paused, changed) is dropped when it surfaces.
    _heap: list[tuple[float, int, _Entry]] = attrs.field(factory=list)
    _sequence: int = 0
    _timer: IDelayedCall | None = None
    # Prepared deliveries by due time, and the timer that releases them.
    _batches: dict[float, list[tuple[_Entry, datetime, Delivery]]] = attrs.field(factory=dict)
    # Objects many jobs share: kinds, slots, parsed instants, first slots.
    _kinds: dict[_KindKey, _Kind] = attrs.field(factory=dict)
    _slots: dict[datetime, tuple[datetime, float]] = attrs.field(factory=dict)
    _instants: dict[str, datetime] = attrs.field(factory=dict)
    _first_slots: dict[tuple[int, datetime], tuple[Any, datetime | None]] = attrs.field(
        factory=dict
    )
    _release_timer: IDelayedCall | None = None
    _lead: float = PREPARE_LEAD_MIN_S
    _running: bool = False
    _pending: list[tuple[Command, Result, int]] | None = None
    _last_formatted: tuple[datetime | None, str] = (None, "")
    _last_milliseconds: tuple[datetime | None, int] = (None, 0)
    _clock_texts: dict[float, str] = attrs.field(factory=dict)
    # job_uuid -> the instant of its last run-now (so two in one millisecond differ).
    _last_runs: dict[str, datetime] = attrs.field(factory=dict)
    _rotation: int = 0
    # In a cluster: may this node fire now (it holds a valid lease)? Slots
    # due while it may not wait, and fire late once it may again (or go to
    # another node with the job).
    may_fire: Callable[[], bool] | None = None
    # In a cluster: what follows which jobs this node owns and tells this
    # scheduler what to take up and give up (see scheduler0.cluster.handover);
    # None on a single node, which owns all.
    handover: Handover | None = None
    # Why a run-now must not be sent now (None: it may): its record could
    # not be written (see ExecutionStore.run_refusal).
    run_refusal: Callable[[], str | None] | None = None
    # In a cluster: the log index being applied now (None on a single node).
    # With it the scheduler reports how far it got (L{progress_mark}).
    applied_index: Callable[[], int] | None = None
    # The log index when this run's jobs were loaded (or last reloaded), and
    # the highest index seen applied.
    _loaded_at: int | None = None
    _seen_index: int = 0
    # Slots handed to the executor whose first attempt has not begun:
    # execution_id -> slot (POSIX seconds).
    _unstarted: dict[str, float] = attrs.field(factory=dict)
    ready: Deferred[None] | None = None
    execution_observers: list[Callable[[dict], None]] = attrs.field(factory=list)
    started_observers: list[Callable[[Delivery, float], None]] = attrs.field(factory=list)
    _failed_observers: set[Any] = attrs.field(factory=set)
    # Whether the node sheds now (past its capacity), and what it shed.
    admission: Admission = attrs.field(factory=Admission)
    # While it may: the callback URLs whose queue is behind (see Admission).
    _congested: set[str] | None = None
    # Since when this node could fire what falls due: its jobs loaded (a
    # slot older than that is late for the restart, not for load; see
    # Admission), and the recent gaps in which it could not (no lease, a
    # stall): (began, ended) in POSIX seconds, oldest first.
    _open_since: float = 0.0
    _gaps: list[tuple[float, float]] = attrs.field(factory=list)
    # Since when the node may not fire (None: it may).
    _blocked_since: float | None = None
    # When the firing timer is due (None: set otherwise, e.g. to wait for a lease).
    _timer_due: float | None = None
    # Preparation time spent on the slots of the current lead (over slices).
    _prep_spent: float = 0.0
    # Slots a crash left in flight (sent, no outcome; see
    # ExecutionStore.in_doubt) of jobs loaded, to send again, with the same
    # execution_id, once this node may fire: (entry, slot).
    _in_doubt: list[tuple[_Entry, datetime]] = attrs.field(factory=list)
    # Wall time forward steps of the clock jumped over: (before, after) in
    # POSIX seconds, oldest first (see clock_stepped).
    _jumps: list[tuple[float, float]] = attrs.field(factory=list)
    # The wall instant the node had reached before the clock last stepped
    # back (POSIX seconds): slots up to it may have been sent already.
    _reached: float = 0.0
    # Issue 19: the paused projects, none of whose jobs is held; and, for
    # each project being resumed on a single node while its jobs are read,
    # the jobs changed meanwhile (their own change added them as they are).
    _paused_projects: set[str] = attrs.field(factory=set)
    _resuming: dict[str, set[str]] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.handover is not None:
            self.handover.attach(self)

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
        """
        Load every job a page at a time, work out missed slots, and fire
        what is due after each page (the first jobs need not wait for the
        last to load).
        """
        self._running = True
        self._loaded_at = None
        loading_at = self._index_now()
        count = 0
        pager, slots_of = self._sources()
        self._paused_projects = set(await self.state.paused_projects())
        page = await pager(None, LOAD_PAGE_SIZE)
        while True:
            if not self._running:
                return  # stopped while loading
            # The next page is read (in the store's thread) while this one
            # is worked through.
            following = None
            if len(page) == LOAD_PAGE_SIZE:
                last_job = page[-1]
                following = pager((last_job["created_at"], last_job["uuid"]), LOAD_PAGE_SIZE)
            last_slots = await slots_of([job["uuid"] for job in page])
            if not self._running:
                return
            entries = self._entries
            for job in page:
                last = last_slots.get(job["uuid"])
                if job["uuid"] in entries:
                    # Added by a change replayed below after an earlier page:
                    # that entry is as new as this row, and any later change
                    # is still to be replayed.
                    continue
                since = self.catch_up_start(job, last)
                if self.handover is not None:
                    since = self.handover.loaded(job, since)
                self.add(job, since=since)
            self._owe_in_doubt(page)
            count += len(page)
            # Changes applied while this page loaded: replayed after it, so a
            # change to a job on it comes after the job.
            pending, self._pending = self._pending or [], None
            for command, result, index in pending:
                self._follow(command, result, index)
            # Slots of the jobs just loaded are late for the restart, not for load.
            self._reopen(self.clock.seconds())
            self._fire_due()
            if following is None:
                break
            self._pending = []
            page = await following
        self._pending = None
        self._loaded_at = loading_at
        self._reopen(self.clock.seconds())
        log.info(
            "scheduler loaded {count} jobs ({active} active)",
            count=count,
            active=len(self._entries),
        )

    def _owe_in_doubt(self, page: list[dict]) -> None:
        """Owe again the slots of C{page}'s held jobs that a crash left in flight."""
        in_doubt = getattr(self.executions, "in_doubt", None)
        if not in_doubt:
            return
        for job in page:
            slots = in_doubt.pop(job["uuid"], None)
            entry = self._entries.get(job["uuid"])
            if slots and entry is not None:
                self._in_doubt.extend((entry, parse_instant(slot)) for slot in slots)

    def _send_in_doubt(self, now: datetime) -> None:
        """
        Send again, under the same execution_id, each slot a crash left in
        flight that is still inside its job's catch-up window (receivers
        deduplicate on the id); older ones stay recorded as failed, saying
        they may have been delivered.
        """
        owed, self._in_doubt = self._in_doubt, []
        entries = self._entries
        for entry, slot in owed:
            if entries.get(entry.uuid) is not entry or (
                entry.until is not None and slot >= entry.until
            ):
                continue  # changed, paused, deleted or handed over since
            if slot >= now - timedelta(seconds=entry.catch_up_window_s):
                self._deliver(entry, slot)

    # -- following the state machine ---------------------------------------

    def _sources(self) -> tuple[Callable[..., Deferred], Callable[..., Deferred]]:
        """Where jobs and their last fired slots come from: all of them, or this node's."""
        if self.handover is not None:
            return self.handover.sources()
        return self.state.jobs_page, self.executions.last_slots_of

    def _index_now(self) -> int:
        return self.applied_index() if self.applied_index is not None else 0

    def _on_applied(self, command: Command, result: Result) -> None:
        self._follow(command, result, self._index_now())

    def _follow(self, command: Command, result: Result, index: int) -> None:
        """Follow one applied change, made at log C{index} (0 on a single node)."""
        if self._pending is not None:
            self._pending.append((command, result, index))
            return
        if index > self._seen_index:
            self._seen_index = index
        if not result.ok or not self._running:
            return
        if self.handover is not None and self.handover.follow(command, result, index):
            return
        self.apply_change(command, result)

    def apply_change(self, command: Command, result: Result) -> None:
        """Follow one applied change to the jobs, as the scheduler of every job it holds."""
        op = command.op
        value: Any = result.value
        now = utc_from_timestamp(self.clock.seconds())
        if self._resuming and op in (Op.UPDATE_JOB, Op.DELETE_JOB):
            for touched in self._resuming.values():
                touched.add(value["uuid"])
        if op == Op.CREATE_JOBS:
            for job in value or ():
                self.add(job, since=now)
        elif op == Op.UPDATE_JOB:
            # A slot already due but not yet fired (the timer runs a hair
            # late) still fires, under the job as changed.
            previous = self._entries.pop(value["uuid"], None)
            if value.get("paused"):
                self.executor.cancel_job(value["uuid"], "job_paused")
            since = now
            earliest = None
            if previous is not None:
                # Prepared slots of the old entry are dropped at release (it
                # is no longer the job's entry) and planned again under the change.
                owed = [*(previous.prepared or ()), previous.next_slot]
                earliest = min((slot for slot in owed if slot is not None), default=None)
                if earliest is not None:
                    since = min(now, earliest - timedelta(microseconds=1))
            self.add(value, since=self._not_again(since, earliest))
        elif op == Op.DELETE_JOB:
            self._remove(value["uuid"])
            self.executor.cancel_job(value["uuid"], "job_deleted")
        elif op == Op.DELETE_PROJECT:
            self._paused_projects.discard(value.get("uuid"))
            self._resuming.pop(value.get("uuid"), None)
            for job_uuid in value.get("deleted_jobs", ()):
                self._remove(job_uuid)
                self.executor.cancel_job(job_uuid, "job_deleted")
        elif op in (Op.CREATE_PROJECT, Op.UPDATE_PROJECT):
            self._project_changed(command, value)
        elif op == Op.STATE_RESTORED:
            # The whole state was replaced (a Raft snapshot): start over from it.
            Deferred.fromCoroutine(self._reload()).addErrback(
                lambda f: log.failure("reloading jobs after a restore failed", f)
            )
            return
        else:
            return
        self._arm()

    def _project_changed(self, command: Command, project: dict) -> None:
        """
        A project was created or changed: when it was paused, stop its jobs
        (each keeps its own paused flag); when resumed, fire again those
        that are not paused themselves, from now (the state machine made
        now their C{active_since}: no slot of the pause is owed).
        """
        project_uuid = project.get("uuid") if isinstance(project, dict) else None
        if project_uuid is None:
            return
        if not project.get("paused"):
            if project_uuid not in self._paused_projects:
                return
            self._paused_projects.discard(project_uuid)
            if self.handover is None:
                # In a cluster the handover takes up the jobs this node owns.
                self._resuming[project_uuid] = set()
                Deferred.fromCoroutine(self._resume_project(project_uuid)).addErrback(
                    lambda f: log.failure("resuming the jobs of a project failed", f)
                )
            return
        if project_uuid in self._paused_projects:
            return
        self._paused_projects.add(project_uuid)
        self._resuming.pop(project_uuid, None)
        if command.op == Op.CREATE_PROJECT:
            return
        stopped = [u for u, entry in self._entries.items() if entry.project_uuid == project_uuid]
        for job_uuid in stopped:
            self._remove(job_uuid)
            self.executor.cancel_job(job_uuid, "job_paused")
        log.info(
            "project {project_uuid} paused: stopped {count} of its jobs",
            project_uuid=project_uuid,
            count=len(stopped),
        )

    def _paused(self, job: dict) -> bool:
        """Whether C{job} fires nothing now: it is paused, or its project is."""
        return bool(job.get("paused")) or job.get("project_uuid") in self._paused_projects

    def project_paused(self, project_uuid: str) -> bool:
        """Whether the project C{project_uuid} is paused (its jobs are not held)."""
        return project_uuid in self._paused_projects

    async def _resume_project(self, project_uuid: str) -> None:
        """
        On a single node: hold again the active jobs of the resumed project,
        read a page at a time -- unless the project was paused or deleted
        meanwhile; a job changed meanwhile was added by its own change.
        """
        after: tuple[str, str] | None = None
        count = 0
        try:
            while True:
                page = await self.state.project_jobs_page(project_uuid, None, after, LOAD_PAGE_SIZE)
                touched = self._resuming.get(project_uuid)
                if touched is None or not self._running:
                    return
                for job in page:
                    if job["uuid"] in touched or job["uuid"] in self._entries:
                        continue
                    self.add(job, since=self.catch_up_start(job, None))
                    count += 1
                self._arm()
                if len(page) < LOAD_PAGE_SIZE:
                    break
                after = (page[-1]["created_at"], page[-1]["uuid"])
        finally:
            self._resuming.pop(project_uuid, None)
        log.info(
            "project {project_uuid} resumed: {count} of its jobs fire again",
            project_uuid=project_uuid,
            count=count,
        )

    async def _reload(self) -> None:
        """Replace every entry with the jobs the restored state holds (read a page at a time)."""
        self._pending = []
        self._loaded_at = None
        reloading_at = 0
        kept: set[str] = set()
        pager, slots_of = self._sources()
        try:
            self._paused_projects = set(await self.state.paused_projects())
            page = await pager(None, LOAD_PAGE_SIZE)
            # Read once the restored state is in place (the restore's own
            # index is set after its subscribers are told): a later index
            # only makes this run's reports claim less.
            reloading_at = self._index_now()
            while True:
                now = utc_from_timestamp(self.clock.seconds())
                new = [
                    job
                    for job in page
                    if not (
                        (previous := self._entries.get(job["uuid"])) is not None
                        and previous.same_job(job)
                        and job["project_uuid"] not in self._paused_projects
                    )
                ]
                kept.update(job["uuid"] for job in page)
                # In a cluster a restored node may own jobs it never held:
                # they are owed from where the cluster got, like after a
                # restart. On one node a restore cannot happen.
                last_slots = (
                    await slots_of([job["uuid"] for job in new])
                    if self.handover is not None and new
                    else {}
                )
                # Slots owed by the jobs reloaded are late for the restore, not for load.
                self._reopen(self.clock.seconds())
                for job in new:
                    self._entries.pop(job["uuid"], None)
                    if self.handover is None:
                        self.add(job, since=now)
                        continue
                    since = self.catch_up_start(job, last_slots.get(job["uuid"]))
                    self.add(job, since=self.handover.after_handover(job, since))
                if len(page) < LOAD_PAGE_SIZE:
                    break
                last_job = page[-1]
                page = await pager((last_job["created_at"], last_job["uuid"]), LOAD_PAGE_SIZE)
        finally:
            pending, self._pending = self._pending, None
            self._loaded_at = reloading_at
        if self.handover is not None:
            self.handover.reloaded(kept)
        for job_uuid in list(self._entries):
            if job_uuid not in kept:
                self._remove(job_uuid)
                self.executor.cancel_job(job_uuid, "job_deleted")
        for command, result, index in pending or ():
            self._follow(command, result, index)
        self._arm()

    # -- the heap ------------------------------------------------------------

    def _not_again(self, since: datetime, owed: datetime | None) -> datetime:
        """
        C{since}, moved past the instants the node reached before the clock
        stepped back (their slots may have been sent, and a slot is never
        sent twice) -- but not past the slot C{owed}, which was not.
        """
        if self._reached <= since.timestamp():
            return since
        floor = utc_from_timestamp(self._reached)
        if owed is not None and owed - timedelta(microseconds=1) < floor:
            floor = owed - timedelta(microseconds=1)
        return since if since >= floor else floor

    # -- clock steps -----------------------------------------------------------

    def clock_stepped(self, step: ClockStep) -> None:
        """
        The wall clock stepped (L{scheduler0.clockwatch.ClockWatch} has moved
        the timers so they keep their elapsed time). Slots are instants of
        the wall clock, each sent at most once:

          - back: the slots already sent are not sent again; every job waits
            for the clock to reach its next slot, which is the one L{next_run_at}
            and C{GET /jobs/{uuid}/next} show;
          - forward: the wall time jumped over did not pass, so it is no
            outage. Of the slots due in it, each job sends its first at once
            and records the others C{skipped} (C{clock_stepped}); the
            catch-up window is counted without it.
        """
        size = step.size_s
        if self._timer_due is not None:
            self._timer_due += size
        if self._blocked_since is not None:
            self._blocked_since += size
        if size < 0:
            if step.before > self._reached:
                self._reached = step.before
            return
        jumps = self._jumps
        jumps.append((step.before, step.after))
        if len(jumps) > _JUMPS_KEPT:
            jumps.pop(0)
        # What was due in it became ready when the clock landed.
        self._gap(step.before, step.after)

    def _jump_over(self, slot_s: float) -> float | None:
        """The end of the span a forward step jumped over that holds C{slot_s}, if one does."""
        for before, after in self._jumps:
            if before <= slot_s < after:
                return after
        return None

    def _jumped(self, since_s: float, now_s: float) -> float:
        """Seconds of wall time between C{since_s} and C{now_s} that forward steps jumped over."""
        jumped = 0.0
        for before, after in self._jumps:
            start = before if before > since_s else since_s
            end = after if after < now_s else now_s
            if end > start:
                jumped += end - start
        return jumped

    def _fire_jumped(self, entry: _Entry, slot: datetime, end: float) -> datetime | None:
        """
        C{slot} is the first slot of C{entry} in wall time a forward step
        jumped over (up to C{end}): send it, unless one of the job's slots is
        prepared already, and record the job's other slots in that time as
        skipped; return the slot to fire next.
        """
        current: datetime | None = slot
        if not entry.prepared:
            self._deliver(entry, slot)
            current = self._following(entry, slot)
        count = 0
        until = entry.until
        while (
            current is not None
            and _slot_seconds(current) < end
            and (until is None or current < until)
            and count < self.history_per_job
        ):
            record = self._record(entry, current, state="skipped", skip_reason=SKIP_CLOCK_STEPPED)
            if self.execution_observers:
                self._observe(self.execution_observers, record)
            count += 1
            current = entry.schedule.next_after(current)
        if current is not None and _slot_seconds(current) < end:
            current = entry.schedule.next_after(utc_from_timestamp(end) - timedelta(microseconds=1))
            # The step itself was logged (at warn); this is per job.
            log.debug(
                "job {job_uuid}: more than {count} slots fell in wall time the clock jumped"
                " over before {end}; the first {count} are recorded as skipped, the rest"
                " only in this message",
                job_uuid=entry.uuid,
                count=count,
                end=format_instant(utc_from_timestamp(end)),
            )
        return current

    def catch_up_start(self, job: dict, last_slot: str | None) -> datetime:
        """
        The instant after which slots are still owed: the last slot this node
        fired, but never earlier than the job's creation or last change.
        """
        # Stored instants all have the one fixed-width form, in which text
        # order is time order; anything else is compared as instants.
        created = job["created_at"]
        # A job that is owned (in a cluster) says when it last began to fire
        # as it is now; a change to anything else (its data, its name) must
        # not cancel the slots still owed. On one node the floor stays the
        # last change: its catch-up happens before any change can be made.
        updated = job.get("active_since") or (
            created if "active_since" in job else job["updated_at"]
        )
        latest = updated if updated > created else created
        if last_slot is not None and last_slot > latest:
            latest = last_slot
        if (
            len(created) == len(updated) == 24
            and created[-1] == updated[-1] == "Z"
            and (last_slot is None or (len(last_slot) == 24 and last_slot[-1] == "Z"))
        ):
            return self._instant(latest)
        texts = [created, updated] if last_slot is None else [created, updated, last_slot]
        return max(parse_instant(text) for text in texts)

    def _instant(self, text: str) -> datetime:
        """C{parse_instant(text)}, shared by the many jobs stamped alike."""
        instant = self._instants.get(text)
        if instant is None:
            if len(self._instants) >= MEMO_LIMIT:
                self._instants.clear()
            instant = self._instants[text] = parse_instant(text)
        return instant

    def _kind(self, job: dict) -> _Kind:
        """The shared L{_Kind} of C{job}; L{SpecError} for an unusable spec."""
        key = _Kind.key(job)
        kind = self._kinds.get(key)
        if kind is None:
            schedule = make_schedule(key[1], key[6], self._instant(key[7]))
            if len(self._kinds) >= SHARED_LIMIT:
                self._kinds.clear()
            kind = self._kinds[key] = _Kind(*key, schedule=schedule)
        return kind

    def _next_after(self, schedule: Any, since: datetime) -> datetime | None:
        # Jobs created together load with the same schedule and start:
        # work their first slot out once.
        key = (id(schedule), since)
        known = self._first_slots.get(key)
        if known is not None and known[0] is schedule:
            return known[1]
        slot = schedule.next_after(since)
        if len(self._first_slots) >= MEMO_LIMIT:
            self._first_slots.clear()
        self._first_slots[key] = (schedule, slot)
        return slot

    def add(self, job: dict, since: datetime) -> None:
        """Hold C{job} (unless it or its project is paused) and fire its slots after C{since}."""
        if self._paused(job):
            return
        if self.handover is not None:
            since = self.handover.not_before(job["uuid"], since)
        try:
            kind = self._kind(job)
        except SpecError as e:
            log.error(
                "job {job_uuid} has an unusable spec: {error}", job_uuid=job["uuid"], error=str(e)
            )
            return
        entry = _Entry(job["uuid"], job["name"], job.get("data"), kind)
        self._entries[entry.uuid] = entry
        self._push(entry, self._next_after(kind.schedule, since))

    def _remove(self, job_uuid: str) -> None:
        # Heap items of a removed entry are recognised (their entry is no
        # longer the job's) and dropped when they surface.
        self._entries.pop(job_uuid, None)

    def remove(self, job_uuid: str, reason: str | None = None) -> None:
        """Stop holding C{job_uuid}; with a C{reason}, cancel what the executor has of it."""
        self._remove(job_uuid)
        if reason is not None:
            self.executor.cancel_job(job_uuid, reason)

    def holds(self, job_uuid: str) -> bool:
        """Whether C{job_uuid} is held (its slots fire here)."""
        return job_uuid in self._entries

    def fires_until(self, job_uuid: str) -> datetime | None:
        """The handover instant before which a held job fires here (None: no end)."""
        entry = self._entries.get(job_uuid)
        return None if entry is None else entry.until

    def fire_until(self, job_uuid: str, until: datetime) -> None:
        """Fire C{job_uuid}, if held, only before C{until} (it was handed to another node)."""
        entry = self._entries.get(job_uuid)
        if entry is not None:
            entry.until = until

    def taken_over(self, job_uuid: str) -> None:
        """C{job_uuid} was taken over now: the slots it owes from before are late for the move."""
        entry = self._entries.get(job_uuid)
        if entry is not None:
            entry.ready_from = self.clock.seconds()

    def following(self) -> bool:
        """Whether the scheduler is started and follows applied changes."""
        return self._running

    def _push(self, entry: _Entry, slot: datetime | None) -> None:
        if slot is None:
            entry.next_slot = None
            return
        # Jobs due together hold one datetime and one float for the instant.
        shared = self._slots.get(slot)
        if shared is None:
            if len(self._slots) >= MEMO_LIMIT:
                self._slots.clear()
            shared = self._slots[slot] = (slot, _slot_seconds(slot))
        entry.next_slot = shared[0]
        self._sequence += 1
        heapq.heappush(self._heap, (shared[1], self._sequence, entry))

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_due = None

    def arm(self) -> None:
        """Set the one timer for the earliest live slot (after jobs were added or removed)."""
        self._arm()

    def _arm(self) -> None:
        """Set the one timer for the earliest live slot."""
        if not self._running:
            return
        entries = self._entries
        while self._heap:
            at, _, entry = self._heap[0]
            if entries.get(entry.uuid) is not entry:
                heapq.heappop(self._heap)
                continue
            break
        else:
            self._cancel_timer()
            return
        wake = at - self._lead
        now = self.clock.seconds()
        delay = max(0.0, wake - now)
        if self._timer is not None and self._timer.active():
            if abs(self._timer.getTime() - wake) < 1e-9:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._fire_due)
        self._timer_due = now + delay

    def _fire_due(self) -> None:
        """
        Prepare every slot due within the lead (handing over at once those
        whose instant has passed), then re-arm.
        """
        self._timer = None
        if not self._may_fire():
            self._timer = self.clock.callLater(LEASE_RETRY_S, self._fire_due)
            return
        clock = self.clock
        started = clock.seconds()
        if self._in_doubt:
            self._send_in_doubt(utc_from_timestamp(started))
        admission = self.admission
        if self._timer_due is not None:
            # How late the reactor ran this timer: the node's own lag.
            if admission.timer_ran(self._timer_due, started):
                self._gap(self._timer_due, started)
            self._timer_due = None
        self._steer(started)
        horizon = started + self._lead
        now = utc_from_timestamp(started)
        entries = self._entries
        worked = 0
        sliced = False
        while self._heap and self._heap[0][0] <= horizon:
            _, _, entry = heapq.heappop(self._heap)
            if entries.get(entry.uuid) is not entry or entry.next_slot is None:
                continue
            try:
                following = self._fire_slot(entry, entry.next_slot, now, started)
            except Exception:
                log.failure("firing job {job_uuid} failed", job_uuid=entry.uuid)
                following = entry.schedule.next_after(entry.next_slot)
            self._push(entry, following)
            worked += 1
            if worked % _SLICE_CHECK == 0 and clock.seconds() - started > SLICE_S:
                # The rest in the next turn (_arm finds them due at once).
                sliced = True
                break
        took = clock.seconds() - started
        self._prep_spent += took
        if not sliced:
            # What preparing one lead's slots took, over all its slices.
            took, self._prep_spent = self._prep_spent, 0.0
            self._lead = min(PREPARE_LEAD_MAX_S, max(PREPARE_LEAD_MIN_S, 3 * took))
        self._arm_release()
        self._arm()

    def _prepare(self, entry: _Entry, slot: datetime, delivery: Delivery) -> None:
        """Hold C{delivery} until C{slot}'s instant."""
        if entry.prepared is None:
            entry.prepared = []
        entry.prepared.append(slot)
        due = delivery.scheduled_s
        if due is None:
            due = _slot_seconds(slot)
        batch = self._batches.get(due)
        if batch is None:
            batch = self._batches[due] = []
        batch.append((entry, slot, delivery))

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

    def _may_fire(self) -> bool:
        """May this node fire now? (Notes the gaps in which it could not.)"""
        if self.may_fire is None or self.may_fire():
            blocked = self._blocked_since
            if blocked is not None:
                self._blocked_since = None
                self._gap(blocked, self.clock.seconds())
            return True
        if self._blocked_since is None:
            self._blocked_since = self.clock.seconds()
        return False

    def _gap(self, began: float, ended: float) -> None:
        """The node could not fire from C{began} to C{ended} (no lease, or stalled)."""
        gaps = self._gaps
        gaps.append((began, ended))
        # Older gaps no longer matter: slots that old are outside any
        # catch-up window a node keeps up with, or long since fired.
        while len(gaps) > _GAPS_KEPT or gaps[0][1] < ended - _GAPS_SPAN_S:
            gaps.pop(0)

    def _ready(self, slot_s: float, taken_over: float = 0.0) -> float:
        """
        When a slot due at C{slot_s} became this node's to send: its instant
        moved on by the time since lost to a restart, to gaps (no lease, a
        stall) and to a take-over -- so that what is left of its lateness is
        the node's own work.
        """
        ready = slot_s if slot_s > self._open_since else self._open_since
        for began, ended in self._gaps:
            if ready < began:
                ready += ended - began
            elif ready < ended:
                ready = ended
        return ready if ready > taken_over else taken_over

    def _steer(self, now: float) -> None:
        """Is the node busy, and (if so) which callback URLs are behind?"""
        admission = self.admission
        admission.steer(now, getattr(self.executions, "backlogged", None))
        self._congested = self.executor.congested(now - GATE_S) if admission.busy else None

    def _reopen(self, now: float) -> None:
        """Jobs (re)loaded: what was owed before C{now} is late for the restart, not for load."""
        self._open_since = now

    def _release(self, rotated: bool = False) -> None:
        """
        Hand every prepared delivery whose instant has come to the executor
        (or, past the node's capacity, record it as overloaded), for at
        most SLICE_S; the rest in the next reactor turn.
        """
        self._release_timer = None
        if not self._may_fire():
            self._release_timer = self.clock.callLater(LEASE_RETRY_S, self._release)
            return
        clock = self.clock
        now = clock.seconds()
        admission = self.admission
        self._steer(now)
        entries = self._entries
        worked = 0
        for due in sorted(d for d in self._batches if d <= now):
            # How late the node gets to it is the reactor's backlog (the
            # rest of a burst handed over in slices waited for the slices
            # before it).
            ready = self._ready(due)
            if not rotated and admission.timer_ran(ready, now):
                self._gap(ready, now)
                ready = now
            batch = self._batches.pop(due)
            if not rotated:
                # Start each batch at another place: when an overloaded node
                # sheds the tail of a burst, the loss is spread over every
                # job instead of always falling on the last ones created.
                self._rotation = (self._rotation + _ROTATION_STEP) % max(len(batch), 1)
                batch = batch[self._rotation :] + batch[: self._rotation]
            rotated = False
            for position, (entry, slot, delivery) in enumerate(batch):
                if entries.get(entry.uuid) is not entry:
                    continue  # deleted, paused or changed since it was prepared
                prepared = entry.prepared
                if prepared is not None:
                    prepared.remove(slot)
                    if not prepared:
                        entry.prepared = None
                        if entry.until is not None and entry.next_slot is None:
                            # Handed over, and this was its last slot here.
                            self._remove(entry.uuid)
                congested = self._congested
                if congested and delivery.callback_url in congested:
                    self._shed(delivery)
                else:
                    taken_over = entry.ready_from
                    delivery.ready_s = ready if ready >= taken_over else taken_over
                    self._submit(delivery)
                worked += 1
                if worked % _SLICE_CHECK == 0 and clock.seconds() - now > SLICE_S:
                    rest = batch[position + 1 :]
                    if rest:
                        # Already rotated: the next turn goes on from here.
                        self._batches[due] = rest
                        self._release_timer = clock.callLater(0, self._release, True)
                    else:
                        self._arm_release()
                    return
        self._arm_release()

    def _fire_slot(
        self, entry: _Entry, slot: datetime, now: datetime, now_s: float
    ) -> datetime | None:
        """
        Deliver C{slot}, or, when it is older than the job's catch-up window,
        record it and every other overdue slot before the window as skipped.
        Return the slot to fire next.
        """
        if entry.until is not None and slot >= entry.until:
            # Handed over: the new owner fires this slot and the rest. A
            # slot before the instant that is prepared but not yet sent (a
            # lapsed lease held it up) still goes: the job ends here once
            # it is released (see _release).
            if self._entries.get(entry.uuid) is entry and not entry.prepared:
                self._remove(entry.uuid)
            return None
        if slot > now:
            self._prepare(entry, slot, self._delivery(entry, slot))
            return self._following(entry, slot)
        window_start = now - timedelta(seconds=entry.catch_up_window_s)
        if self._jumps:
            jumped_end = self._jump_over(_slot_seconds(slot))
            if jumped_end is not None:
                return self._fire_jumped(entry, slot, jumped_end)
            # Wall time a forward step jumped over did not pass: it does not
            # make an owed slot older.
            jumped = self._jumped(_slot_seconds(slot), now_s)
            if jumped:
                window_start -= timedelta(seconds=jumped)
        if slot >= window_start:
            if entry.kind.coalesce:
                following = entry.schedule.next_after(slot)
                if (
                    following is not None
                    and following <= now
                    and (entry.until is None or following < entry.until)
                ):
                    # A later slot is due too (the node was down, paused
                    # or behind): only the latest one is delivered.
                    self._coalesced(entry, slot)
                    return following
            # Reached this long after it became ready: the timer heap is
            # behind; shed it before building anything for it.
            if now_s - self._ready(_slot_seconds(slot), entry.ready_from) > LATE_S:
                self._shed_slot(entry, slot)
                return self._following(entry, slot)
            self._deliver(entry, slot)
            return self._following(entry, slot)
        count = 0
        current: datetime | None = slot
        while current is not None and current < window_start and count < self.history_per_job:
            record = self._record(
                entry, current, state="skipped", skip_reason="outside_catch_up_window"
            )
            if self.execution_observers:
                self._observe(self.execution_observers, record)
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
                job_uuid=entry.uuid,
                count=count,
                window_start=format_instant(window_start),
            )
        return current

    def fire_missed(self, job: dict, last_slot: str | None, until: datetime, now: datetime) -> int:
        """
        Fire the slots of C{job} after C{last_slot} (what is known done) and
        before C{until} that are still within its catch-up window at C{now}
        (a coalescing job only the last, the others recorded as coalesced);
        how many were sent.
        """
        if self._paused(job):
            return 0
        try:
            entry = _Entry(job["uuid"], job["name"], job.get("data"), self._kind(job))
        except SpecError:
            return 0
        filled = 0
        slot = entry.schedule.next_after(self.catch_up_start(job, last_slot))
        window_start = now - timedelta(seconds=entry.catch_up_window_s)
        while slot is not None and slot < until:
            following = entry.schedule.next_after(slot)
            if slot >= window_start:
                if entry.kind.coalesce and following is not None and following < until:
                    self._coalesced(entry, slot)
                else:
                    self._deliver(entry, slot)
                    filled += 1
            slot = following
        return filled

    def _format_slot(self, slot: datetime) -> str:
        # Slots due together share their instant: format it once.
        if self._last_formatted[0] != slot:
            self._last_formatted = (slot, format_instant(slot))
        return self._last_formatted[1]

    def _execution_id(self, entry: _Entry, slot: datetime) -> str:
        # Slots due together share their instant: convert it once.
        if self._last_milliseconds[0] != slot:
            self._last_milliseconds = (slot, slot_milliseconds(slot))
        return execution_id_at(entry.uuid, self._last_milliseconds[1])

    def _following(self, entry: _Entry, slot: datetime) -> datetime | None:
        """The slot after C{slot}; a frequent job keeps its members encoded."""
        following = entry.schedule.next_after(slot)
        if (
            entry.job_json is None
            and following is not None
            and following - slot <= KEEP_ENCODED_PERIOD
        ):
            entry.job_json = job_members_json(
                entry.uuid, entry.project_uuid, entry.name, entry.spec, entry.data
            )
        return following

    def _record(
        self, entry: _Entry, slot: datetime, state: str, write: bool = True, **fields: Any
    ) -> dict:
        record = {
            "execution_id": self._execution_id(entry, slot),
            "job_uuid": entry.uuid,
            "project_uuid": entry.project_uuid,
            "scheduled_at": self._format_slot(slot),
            "state": state,
            "attempts": 0,
            "node_id": self.node_id,
            "started_at": None,
            "finished_at": None,
            "status_code": None,
            "error": None,
            "skip_reason": None,
            "response_body": None,
        }
        record.update(fields)
        if write:
            self.executions.record(record, trusted=True)
        return record

    def _deliver(self, entry: _Entry, slot: datetime, always: bool = False) -> dict:
        # No record yet: the executor's on_started writes the first one when
        # the POST goes out. Until then the slot is owed (a restart fires it
        # again), and writing it here would cost a record per slot on the
        # path between the slot's instant and its POST.
        record = self._record(entry, slot, state="scheduled", write=False)
        delivery = self._delivery(entry, slot, record)
        congested = self._congested
        if not always and congested and delivery.callback_url in congested:
            self._shed(delivery)
            return record
        delivery.ready_s = self._ready(delivery.scheduled_s or 0.0, entry.ready_from)
        self._submit(delivery)
        return record

    def _coalesced(self, entry: _Entry, slot: datetime) -> None:
        """Record C{slot} of a C{coalesce} job as folded into a later one."""
        record = self._record(entry, slot, state="skipped", skip_reason=SKIP_COALESCED)
        if self.execution_observers:
            self._observe(self.execution_observers, record)

    def _shed_slot(self, entry: _Entry, slot: datetime) -> None:
        """Record C{slot} of C{entry} as skipped: the node is past its capacity."""
        self.admission.shed += 1
        record = self._record(entry, slot, state="skipped", skip_reason=SKIP_OVERLOADED)
        if self.execution_observers:
            self._observe(self.execution_observers, record)

    def _shed(self, delivery: Delivery) -> None:
        """Record C{delivery}'s slot as skipped: the node is past its capacity."""
        self.admission.shed += 1
        record = self._outcome_record(delivery, "skipped", attempts=0, skip_reason=SKIP_OVERLOADED)
        self.executions.record(record, trusted=True)
        if self.execution_observers:
            self._observe(self.execution_observers, record)

    def _submit(self, delivery: Delivery) -> None:
        """Hand C{delivery} to the executor; it is owed until its first attempt begins."""
        unstarted = self._unstarted
        unstarted[delivery.execution_id] = delivery.scheduled_s or 0.0
        try:
            self.executor.submit(delivery)
        except Exception:
            unstarted.pop(delivery.execution_id, None)
            log.failure("submitting job {job_uuid} failed", job_uuid=delivery.job_uuid)

    def _delivery(self, entry: _Entry, slot: datetime, record: dict | None = None) -> Delivery:
        return Delivery(
            execution_id=record["execution_id"] if record else self._execution_id(entry, slot),
            job_uuid=entry.uuid,
            project_uuid=entry.project_uuid,
            name=entry.name,
            spec=entry.spec,
            data=entry.data,
            scheduled_at=record["scheduled_at"] if record else self._format_slot(slot),
            callback_url=entry.callback_url,
            timeout_s=entry.timeout_s,
            retry_max=entry.retry_max,
            job_json=entry.job_json,
            scheduled_s=_slot_seconds(slot),
            policy=entry.kind.policy,
        )

    # -- executor results ----------------------------------------------------

    def on_started(self, delivery: Delivery, at: float) -> None:
        """The first attempt of C{delivery} began: record it as running."""
        self._unstarted.pop(delivery.execution_id, None)
        self.executions.record(
            self._outcome_record(delivery, "running", attempts=1, started_at=at), trusted=True
        )
        if self.started_observers:
            self._observe(self.started_observers, delivery, at)

    def on_outcome(self, outcome: Outcome) -> None:
        """Record the final state of one delivery."""
        self._unstarted.pop(outcome.delivery.execution_id, None)
        record = self._outcome_record(
            outcome.delivery,
            outcome.state,
            attempts=outcome.attempts,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            status_code=outcome.status_code,
            error=outcome.error,
            skip_reason=outcome.skip_reason,
            response_body=outcome.response_body,
        )
        self.executions.record(record, trusted=True)
        if self.execution_observers:
            self._observe(self.execution_observers, record)

    def _observe(self, observers: list[Callable[..., None]], *args: Any) -> None:
        """Call each observer; one that raises is logged the first time only."""
        for observer in observers:
            try:
                observer(*args)
            except Exception:
                if observer not in self._failed_observers:
                    self._failed_observers.add(observer)
                    log.failure("execution observer {observer!r} failed", observer=observer)

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
        response_body: str | None = None,
    ) -> dict:
        def instant(seconds: float | None) -> str | None:
            if seconds is None:
                return None
            # Deliveries sent or finished together share their instants
            # (a record has two: started and finished).
            known = self._clock_texts.get(seconds)
            if known is None:
                if len(self._clock_texts) >= 64:
                    self._clock_texts.clear()
                known = self._clock_texts[seconds] = format_instant(utc_from_timestamp(seconds))
            return known

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
            "response_body": response_body,
        }

    # -- how far this node got --------------------------------------------------

    def progress_mark(self) -> tuple[str, int, int] | None:
        """
        How far this node got, for the cluster to commit (in a cluster only;
        None while the jobs are being loaded): (done_before, loaded_at,
        as_of). Every slot before C{done_before} of every job this node
        holds has been sent (its first attempt began) or recorded, as of
        the changes applied up to log index C{as_of}, in the run that loaded
        its jobs at index C{loaded_at}. A job's new owner fires what comes
        after (see scheduler0.store.state.covers_job).

        It is the earliest of: the next slot of any job, any slot prepared
        and waiting for its instant, any slot handed to the executor whose
        first attempt has not begun -- and now.
        """
        if self.applied_index is None or self._loaded_at is None or self._pending is not None:
            return None
        earliest = self.clock.seconds()
        heap, entries = self._heap, self._entries
        while heap and entries.get(heap[0][2].uuid) is not heap[0][2]:
            heapq.heappop(heap)
        if heap and heap[0][0] < earliest:
            earliest = heap[0][0]
        if self._batches:
            earliest = min(earliest, min(self._batches))
        if self._unstarted:
            earliest = min(earliest, min(self._unstarted.values()))
        unread = self.handover.unread_before() if self.handover is not None else None
        as_of = self._seen_index if unread is None else unread
        as_of = max(as_of, self._loaded_at)
        return format_instant(utc_from_timestamp(earliest)), self._loaded_at, as_of

    # -- what the API asks -----------------------------------------------------

    def run_now(self, job: dict) -> Deferred:
        """
        Fire one extra execution of C{job} at this instant; fail with
        L{RecordsHeld} (nothing sent) while its record could not be written.
        """
        refusal = self.run_refusal() if self.run_refusal is not None else None
        if refusal is not None:
            return fail(RecordsHeld(refusal))
        now = utc_from_timestamp(self.clock.seconds())
        # Millisecond instants keep the id of a run-now equal to what the
        # record shows as scheduled_at.
        now = now.replace(microsecond=(now.microsecond // 1000) * 1000)
        now = self._run_instant(job, now)
        entry = _Entry(job["uuid"], job["name"], job.get("data"), _Kind(*_Kind.key(job), None))
        return succeed(self._deliver(entry, now, always=True))

    def _run_instant(self, job: dict, now: datetime) -> datetime:
        """
        The instant of a run-now of C{job} at C{now}: C{now}, or just after
        the job's last run-now if that was at the same instant (or within
        L{RUN_NOW_CLOSE} ahead), and a millisecond later while it is one of
        the job's slots. An execution_id is derived from the job and the instant, so
        a run-now never takes the id of a slot (one sent before the wall
        clock stepped back, or one due at that very millisecond), which a
        receiver deduplicating on it would drop.
        """
        uuid = job["uuid"]
        entry = self._entries.get(uuid)
        schedule = entry.schedule if entry is not None else None
        if schedule is None:
            try:
                schedule = make_schedule(
                    job["spec"], job.get("timezone") or "UTC", parse_instant(job["anchor_at"])
                )
            except (SpecError, KeyError, ValueError):
                schedule = None
        last = self._last_runs.get(uuid)
        if last is not None and now <= last < now + RUN_NOW_CLOSE:
            now = last + RUN_NOW_NUDGE
        # Slots are at least a second apart: one nudge at most, in practice.
        for _ in range(3):
            if schedule is None or schedule.next_after(now - RUN_NOW_NUDGE) != now:
                break
            now += RUN_NOW_NUDGE
        if len(self._last_runs) >= RUN_NOW_REMEMBERED:
            self._last_runs.clear()
        self._last_runs[uuid] = now
        return now

    def next_run_at(self, job: dict) -> str | None:
        """The next slot of C{job} this node will fire, as text."""
        entry = self._entries.get(job["uuid"])
        if entry is not None and entry.prepared:
            return format_instant(min(entry.prepared))
        if entry is not None and entry.next_slot is not None:
            return format_instant(entry.next_slot)
        if self._paused(job):
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

    def owned_jobs(self) -> int:
        """Jobs assigned to this node (in a cluster); on one node, its active jobs."""
        if self.handover is None:
            return len(self._entries)
        return self.handover.owned_count()

    def pending_slots(self) -> Iterable[tuple[str, datetime | None]]:
        return ((u, e.next_slot) for u, e in self._entries.items())
