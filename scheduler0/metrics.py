"""
Prometheus metrics of one node, served at C{GET /metrics}.

Two kinds of numbers live here. What happens to executions (outcomes,
lateness, callback POSTs, retries, skipped slots) is counted as it happens,
through observers the scheduler and the executor call; each of those
counters has its label children bound once, so an event costs an increment
and no label lookup. What the node I{is} (Raft role and indexes, peers,
lease, queue depth, fan-in lag, resource guard, per-job series) is read from
the node's parts when Prometheus scrapes, so nothing is kept up to date
between scrapes.

Every node has a registry of its own (never prometheus_client's global
one), so several nodes can run in one process (tests do). The text comes
from prometheus_client's C{generate_latest}, except the per-job families,
which are written here at a fraction of the cost (see L{NodeMetrics._per_job_text}).

Per-job series: the first C{max_job_series} jobs this node reports an
execution for get series (C{scheduler0_job_executions_total} by state and
C{scheduler0_job_last_lateness_seconds}); later jobs are counted in the node
totals only, and each of their events adds one to
C{scheduler0_job_series_refused_total}. A deleted job's series are removed,
which frees its place for the next new job. 0 turns per-job series off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

import scheduler0
from scheduler0.ports import (
    ClusterGauges,
    ExecutionRecords,
    NotifierCounts,
    ProposingNode,
    SchedulerGauges,
    SenderGauges,
    StateReader,
)
from scheduler0.readiness import CODES as READINESS_CODES
from scheduler0.store.commands import Op, Result
from scheduler0.timeutil import parse_instant
from scheduler0.versions import ENTRY_VERSION

#: Why an API request's credentials were refused (scheduler0.api.auth).
AUTH_FAILURE_REASONS = ("unknown_key", "wrong_secret", "archived", "admin_rejected")
#: Which throttle of failed authentications refused a request.
AUTH_THROTTLE_SCOPES = ("address", "key")

if TYPE_CHECKING:
    from scheduler0.clockwatch import ClockWatch
    from scheduler0.diskspace import DiskWatcher
    from scheduler0.guard import ResourceGuard

log = Logger()

#: The Content-Type of the text exposition format C{/metrics} answers in.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Buckets of the lateness and callback latency histograms: 1 ms to 60 s.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: Final execution states, as records carry them.
FINAL_STATES = ("succeeded", "failed", "skipped")

#: Every skip_reason the scheduler and the executor give (bound up front;
#: another reason still counts, its child made when first seen).
SKIP_REASONS = (
    "outside_catch_up_window",
    "queue_full",
    "resource_guard",
    "node_stopping",
    "job_deleted",
    "job_paused",
    "job_moved",
    "overloaded",
    "endpoint_busy",
    "still_running",
    "replaced",
    "coalesced",
    "clock_stepped",
)

#: Roles a node reports (Raft core roles).
ROLES = ("leader", "follower", "candidate", "pre-candidate")

#: Status classes of callback POSTs; "error" is a POST without an HTTP answer.
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")

#: Pause reasons of the resource guard.
GUARD_REASONS = ("memory", "cpu")

#: Deleted jobs remembered, so events that follow a delete (its cancelled
#: deliveries) do not give the job series again.
DELETED_REMEMBERED = 10_000

# Index of each final state in a per-job series list; index 3 is the last lateness.
_STATE_INDEX = {state: i for i, state in enumerate(FINAL_STATES)}
_LATENESS = 3
# Index of the sample names (with labels) of the job's series.
_NAMES = 4

_JOB_EXECUTIONS_HEAD = (
    "# HELP scheduler0_job_executions_total Executions of one job that reached a final"
    " state on this node, by state.\n"
    "# TYPE scheduler0_job_executions_total counter\n"
)
_JOB_LATENESS_HEAD = (
    "# HELP scheduler0_job_last_lateness_seconds Lateness of one job's latest first"
    " callback attempt on this node.\n"
    "# TYPE scheduler0_job_last_lateness_seconds gauge\n"
)


def _escape(label_value: str) -> str:
    """A label value as the text format writes it."""
    return label_value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_MB = 1024 * 1024


def _seconds(instant: str) -> float:
    return parse_instant(instant).timestamp()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


@attrs.define(eq=False)
class NodeMetrics:
    """
    This node's metrics: observers to hang on the scheduler and executor, a
    proposer subscriber, and C{exposition()} for C{GET /metrics}.

    Every part is optional (None: its metrics are left out or read as a
    single node's), so tests can build one from fakes.
    """

    clock: IReactorTime
    node_id: int
    max_job_series: int = 1000
    version: str = scheduler0.__version__
    # Read at scrape time.
    scheduler: SchedulerGauges | None = None
    executor: SenderGauges | None = None
    cluster: ClusterGauges | None = None
    guard: ResourceGuard | None = None
    proposer: ProposingNode | None = None
    # The execution store (a cluster node's outbox) and the state (the
    # cluster's committed fan-in seq), for the fan-in lag.
    executions: ExecutionRecords | None = None
    state: StateReader | None = None
    # Why the node is not ready (NodeService.readiness: [] when it is).
    readiness: Callable[[], list[dict]] | None = None
    notifier: NotifierCounts | None = None
    # The data directory's free space and whether writes are refused.
    disk: DiskWatcher | None = None
    # The watch on the wall clock.
    clock_watch: ClockWatch | None = None
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)

    _finished: dict[str, tuple[Any, int]] = attrs.field(init=False, factory=dict)
    _skipped: dict[str | None, Any] = attrs.field(init=False, factory=dict)
    _status_children: list[Any] = attrs.field(init=False, factory=list)
    _skipped_counter: Any = attrs.field(init=False, default=None)
    _lateness: Any = attrs.field(init=False, default=None)
    _retries: Any = attrs.field(init=False, default=None)
    _refused: Any = attrs.field(init=False, default=None)
    _auth_failures: dict[str, Any] = attrs.field(init=False, factory=dict)
    _auth_throttled: dict[str, Any] = attrs.field(init=False, factory=dict)
    _jobs: dict[str, list] = attrs.field(init=False, factory=dict)
    _deleted: dict[str, None] = attrs.field(init=False, factory=dict)
    # The done_before of this node's last progress mark the cluster committed.
    _committed_mark: str | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_job_series, bool) or self.max_job_series < 0:
            raise ValueError(f"max_job_series must be an integer >= 0, got {self.max_job_series!r}")
        registry = self.registry
        finished = Counter(
            "scheduler0_executions_finished",
            "Executions that reached a final state on this node, by state"
            " (skipped slots included).",
            ["state"],
            registry=registry,
        )
        self._finished = {
            state: (finished.labels(state), _STATE_INDEX[state]) for state in FINAL_STATES
        }
        self._skipped_counter = Counter(
            "scheduler0_slots_skipped",
            "Slots this node skipped instead of delivering, by skip_reason.",
            ["reason"],
            registry=registry,
        )
        self._skipped = {reason: self._skipped_counter.labels(reason) for reason in SKIP_REASONS}
        self._lateness = Histogram(
            "scheduler0_execution_lateness_seconds",
            "Seconds from a slot's scheduled instant to its first callback attempt.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        latency = Histogram(
            "scheduler0_callback_duration_seconds",
            "Seconds each callback POST took, from sending to its answer, by status"
            " class (error: no HTTP answer, e.g. timeout or refused connection).",
            ["status_class"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Indexed by status code // 100 (0 and 1 stand for "error").
        error = latency.labels("error")
        by_class = {c: latency.labels(c) for c in STATUS_CLASSES}
        self._status_children = [error, error] + [by_class[f"{n}xx"] for n in (2, 3, 4, 5)]
        self._retries = Counter(
            "scheduler0_callback_retries",
            "Deliveries whose callback attempt failed transiently and were queued to retry.",
            registry=registry,
        )
        self._refused = Counter(
            "scheduler0_job_series_refused",
            "Execution events of jobs that got no per-job series because"
            " MetricsMaxJobSeries jobs have them already (node totals count them).",
            registry=registry,
        )
        failures = Counter(
            "scheduler0_auth_failures",
            "Requests whose credentials were refused (401), by reason: unknown_key,"
            " wrong_secret, archived, admin_rejected.",
            ["reason"],
            registry=registry,
        )
        self._auth_failures = {r: failures.labels(r) for r in AUTH_FAILURE_REASONS}
        throttled = Counter(
            "scheduler0_auth_throttled",
            "Requests refused with 429 after repeated failed authentications, by"
            " scope: address (the source address) or key (the API key).",
            ["scope"],
            registry=registry,
        )
        self._auth_throttled = {s: throttled.labels(s) for s in AUTH_THROTTLE_SCOPES}
        registry.register(_ScrapeCollector(self))

    # -- observers (the hot path) ---------------------------------------------

    def on_auth_failure(self, reason: str) -> None:
        """The API's observer: one request's credentials were refused for C{reason}."""
        child = self._auth_failures.get(reason)
        if child is not None:
            child.inc()

    def on_auth_throttled(self, scope: str) -> None:
        """The API's observer: one request was refused 429 by the C{scope} throttle."""
        child = self._auth_throttled.get(scope)
        if child is not None:
            child.inc()

    def on_execution(self, record: dict) -> None:
        """
        The scheduler's execution observer: one FINAL execution record
        (succeeded, failed or skipped).
        """
        state = record["state"]
        known = self._finished.get(state)
        if known is None:
            return
        child, index = known
        child.inc()
        if index == 2:
            reason = record["skip_reason"]
            skipped = self._skipped.get(reason)
            if skipped is None:
                skipped = self._skipped[reason] = self._skipped_counter.labels(str(reason))
            skipped.inc()
        if self.max_job_series:
            series = self._jobs.get(record["job_uuid"])
            if series is None:
                series = self._admit(record["job_uuid"])
                if series is None:
                    return
            series[index] += 1

    def on_started(self, delivery: Any, at: float) -> None:
        """
        The scheduler's start observer: the first attempt of C{delivery}
        (whose C{scheduled_s} is its slot in POSIX seconds) began at C{at}.
        """
        scheduled = delivery.scheduled_s
        if scheduled is None:
            return
        lateness = at - scheduled
        self._lateness.observe(lateness)
        if self.max_job_series:
            series = self._jobs.get(delivery.job_uuid)
            if series is None:
                series = self._admit(delivery.job_uuid)
                if series is None:
                    return
            series[_LATENESS] = lateness

    def on_post(self, seconds: float, status_code: int | None, retried: int) -> None:
        """
        The executor's POST observer: one callback POST took C{seconds} and
        got C{status_code} (None: no answer); C{retried} of its deliveries
        will be tried again.
        """
        if status_code is None or not 100 <= status_code < 600:
            child = self._status_children[0]
        else:
            child = self._status_children[status_code // 100]
        child.observe(seconds)
        if retried:
            self._retries.inc(retried)

    def _admit(self, job_uuid: str) -> list | None:
        """Give C{job_uuid} per-job series if there is room (and it was not deleted)."""
        if job_uuid in self._deleted:
            return None
        if len(self._jobs) >= self.max_job_series:
            self._refused.inc()
            return None
        label = _escape(job_uuid)
        names = (
            *(
                f'scheduler0_job_executions_total{{job_uuid="{label}",state="{state}"}} '
                for state in FINAL_STATES
            ),
            f'scheduler0_job_last_lateness_seconds{{job_uuid="{label}"}} ',
        )
        series = self._jobs[job_uuid] = [0, 0, 0, None, names]
        return series

    # -- following the state machine ------------------------------------------

    #: The ops L{on_applied} follows.
    APPLIED_OPS = frozenset((Op.DELETE_JOB, Op.DELETE_PROJECT, Op.RECORD_PROGRESS))

    def on_applied(self, command: Any, result: Result) -> None:
        """
        The proposer's subscriber: drop a deleted job's series; follow the
        progress marks the cluster committed for this node.
        """
        if not result.ok:
            return
        op = command.op
        if op == Op.DELETE_JOB:
            self._forget_jobs([(result.value or {}).get("uuid")])
        elif op == Op.DELETE_PROJECT:
            self._forget_jobs((result.value or {}).get("deleted_jobs") or ())
        elif op == Op.RECORD_PROGRESS:
            for mark in command.args.get("marks") or ():
                if isinstance(mark, list) and len(mark) == 4 and mark[0] == self.node_id:
                    self._committed_mark = mark[1]

    def _forget_jobs(self, job_uuids: Iterable[str | None]) -> None:
        for job_uuid in job_uuids:
            if job_uuid is None:
                continue
            self._jobs.pop(job_uuid, None)
            self._deleted[job_uuid] = None
            if len(self._deleted) > DELETED_REMEMBERED:
                del self._deleted[next(iter(self._deleted))]

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Nothing runs on a timer: every figure is read at scrape time."""

    def stop(self) -> None:
        pass

    # -- scraping --------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every metric of this node in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry) + self._per_job_text()

    def job_series(self) -> dict[str, tuple[int, int, int, float | None]]:
        """Per-job numbers kept now: uuid -> (succeeded, failed, skipped, last lateness)."""
        return {job_uuid: (s[0], s[1], s[2], s[3]) for job_uuid, s in self._jobs.items()}

    def _collect(self) -> Iterable[Metric]:
        sections: tuple[Callable[[], Iterable[Metric]], ...] = (
            self._raft,
            self._jobs_and_executor,
            self._fanin,
            self._guard,
            self._disk,
            self._readiness,
            self._clock,
            self._per_job,
        )
        for section in sections:
            try:
                yield from list(section())
            except Exception:
                log.failure("collecting metrics ({section}) failed", section=section.__name__)

    def _raft(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "scheduler0_node_info",
            "This node's id and Scheduler0 version (always 1).",
            labels=["node_id", "version"],
        )
        info.add_metric([str(self.node_id), self.version], 1)
        yield info
        cluster = self.cluster
        if cluster is None:
            applied = int(getattr(self.proposer, "applied_index", 0) or 0)
            role, term, leader_id = "leader", 1, self.node_id
            commit, lease_valid, peers, reachable = applied, True, 0, 0
            clock_offset: float | None = 0.0
            entry_version = getattr(self.proposer, "entry_version", None)
        else:
            status = cluster.local_status()
            role, term = status["role"], status["term"]
            leader_id = status["leader_id"] or 0
            commit, applied = status["commit_index"], status["applied_index"]
            lease_valid = status["lease_valid"]
            clock_offset = status.get("clock_offset_s")
            entry_version = status.get("entry_version")
            others = [m for m in cluster.member_ids() if m != self.node_id]
            peers = len(others)
            reachable = cluster.reachable_peers()
        roles = GaugeMetricFamily(
            "scheduler0_raft_role",
            "1 for the Raft role this node has now, 0 for the others.",
            labels=["role"],
        )
        for name in ROLES if role in ROLES else (*ROLES, role):
            roles.add_metric([name], 1 if name == role else 0)
        yield roles
        yield _gauge("scheduler0_raft_term", "The Raft term this node is in.", term)
        yield _gauge(
            "scheduler0_raft_commit_index",
            "The highest log index this node knows committed.",
            commit,
        )
        yield _gauge(
            "scheduler0_raft_applied_index",
            "The highest log index this node applied to its state.",
            applied,
        )
        yield _gauge(
            "scheduler0_raft_leader_id",
            "The node id of the leader this node knows (0: none).",
            leader_id,
        )
        yield _gauge(
            "scheduler0_cluster_peers", "Other members (voters and learners) of the cluster.", peers
        )
        yield _gauge(
            "scheduler0_cluster_peers_reachable",
            "Other members a Raft message came from within the election timeout (a follower"
            " normally hears only from its leader).",
            reachable,
        )
        yield _gauge(
            "scheduler0_lease_valid",
            "1 while this node holds a valid lease to fire slots.",
            1 if lease_valid else 0,
        )
        yield _gauge(
            "scheduler0_clock_offset_seconds",
            "This node's wall clock minus its Raft leader's, measured from the lease answers"
            " (0 on the leader and a single node; NaN: not measured yet). Beyond"
            " MaxClockOffsetMs the node fires nothing.",
            float("nan") if clock_offset is None else clock_offset,
        )
        yield _gauge(
            "scheduler0_entry_version",
            "The Raft entry version the cluster writes, as this node has applied it (README,"
            " Upgrading; NaN: not known yet). Below scheduler0_reads_entry_version while a"
            " member runs an older release.",
            float("nan") if entry_version is None else entry_version,
        )
        yield _gauge(
            "scheduler0_reads_entry_version",
            "The newest Raft entry version this node's release reads.",
            ENTRY_VERSION,
        )

    def _records_held(self) -> Iterable[Metric]:
        """Execution records waiting in memory because they cannot be written."""
        executions = self.executions
        hold_state = getattr(executions, "hold_state", None)
        if hold_state is None:
            return
        hold = hold_state()
        yield _gauge(
            "scheduler0_execution_records_pending",
            "Execution records not yet written to this node's executions.db.",
            hold["pending"],
        )
        yield _gauge(
            "scheduler0_execution_records_held",
            "1 while writing execution records fails (a full disk) and they wait in memory.",
            1 if hold["held"] else 0,
        )
        yield _gauge(
            "scheduler0_execution_records_firing_stopped",
            "1 while ExecutionRecordsMaxPending records wait in memory: no new slot fires.",
            1 if hold["firing_stopped"] else 0,
        )
        yield CounterMetricFamily(
            "scheduler0_execution_record_write_failures",
            "Writes of execution records that failed (each is tried again, with backoff).",
            value=getattr(executions, "write_failures", 0),
        )
        yield CounterMetricFamily(
            "scheduler0_execution_records_firing_stops",
            "Times the node stopped firing new slots at ExecutionRecordsMaxPending.",
            value=getattr(executions, "firing_stops", 0),
        )

    def _jobs_and_executor(self) -> Iterable[Metric]:
        scheduler = self.scheduler
        if scheduler is not None:
            active = scheduler.active_jobs()
            yield _gauge("scheduler0_jobs_active", "Active jobs this node fires now.", active)
            admission = getattr(scheduler, "admission", None)
            if admission is not None:
                yield _gauge(
                    "scheduler0_overloaded",
                    "1 while this node is busy (its reactor thread mostly on the CPU, or its"
                    " timers late); past its capacity it sheds slots (skipped: overloaded).",
                    1 if admission.busy else 0,
                )
            folded = getattr(self.executions, "folded", None)
            if isinstance(folded, int):
                yield CounterMetricFamily(
                    "scheduler0_execution_records_folded",
                    "Slots shed (skipped: overloaded) that got no record of their own: while"
                    " the record writer was behind, each job's were recorded as one.",
                    value=folded,
                )
            yield from self._records_held()
            yield _gauge(
                "scheduler0_jobs_owned",
                "Jobs the cluster assigned to this node (a single node owns all its active jobs).",
                scheduler.owned_jobs(),
            )
        executor = self.executor
        if executor is not None:
            in_flight = executor.in_flight()
            yield _gauge(
                "scheduler0_executor_queue_depth",
                "Deliveries waiting for a worker (not in flight, not waiting to retry).",
                executor.queue_depth(),
            )
            yield _gauge(
                "scheduler0_executor_in_flight_posts", "Callback POSTs in flight now.", in_flight
            )
            yield _gauge(
                "scheduler0_executor_retrying",
                "Deliveries waiting for their retry delay to pass.",
                executor.retrying(),
            )
            yield _gauge(
                "scheduler0_executor_workers_max",
                "MaxWorkers: callback POSTs in flight at most.",
                executor.max_workers,
            )
            yield _gauge(
                "scheduler0_executor_worker_utilization_ratio",
                "Callback POSTs in flight divided by MaxWorkers.",
                in_flight / max(1, executor.max_workers),
            )
        notifier = self.notifier
        if notifier is not None:
            notifications = CounterMetricFamily(
                "scheduler0_failure_notifications",
                "Failure notifications to projects' notify_url: sent (handed to the notifier's"
                " executor), undelivered (given up after its retries), dropped (before sending:"
                " the project could not be read, or too many waited).",
                labels=["result"],
            )
            for result in ("sent", "undelivered", "dropped"):
                notifications.add_metric([result], getattr(notifier, result))
            yield notifications

    def _fanin(self) -> Iterable[Metric]:
        if self.cluster is None or self.scheduler is None:
            return
        now = self.clock.seconds()
        mark = self.scheduler.progress_mark()
        yield _gauge(
            "scheduler0_progress_lag_seconds",
            "Now minus this node's progress: the age of the oldest slot it still owes"
            " (0 when none is owed).",
            max(0.0, now - _seconds(mark[0])) if mark is not None else 0.0,
        )
        yield _gauge(
            "scheduler0_progress_committed_lag_seconds",
            "Now minus the progress of this node that the cluster last committed: how far"
            " back a new owner of its jobs would start after a crash.",
            max(0.0, now - _seconds(self._committed_mark)) if self._committed_mark else 0.0,
        )

    def _guard(self) -> Iterable[Metric]:
        if self.guard is None:
            return
        snap = self.guard.snapshot()
        yield _gauge(
            "scheduler0_resource_guard_paused",
            "1 while the resource guard pauses new executions (they are skipped).",
            1 if snap["paused"] else 0,
        )
        active = {part.split(" ", 1)[0] for part in (snap.get("reason") or "").split("; ") if part}
        reasons = GaugeMetricFamily(
            "scheduler0_resource_guard_pause_reason",
            "1 for each resource over its limit that pauses the node now.",
            labels=["reason"],
        )
        for reason in GUARD_REASONS:
            reasons.add_metric([reason], 1 if reason in active else 0)
        yield reasons
        yield _gauge(
            "scheduler0_resource_memory_rss_bytes",
            "Resident memory of the node process at the guard's last sample.",
            float(snap.get("rss_mb") or 0) * _MB,
        )
        yield _gauge(
            "scheduler0_resource_memory_limit_bytes",
            "MaxMemory: resident memory at which the node pauses (0: no limit).",
            float(snap.get("max_memory_mb") or 0) * _MB,
        )
        yield _gauge(
            "scheduler0_resource_cpu_usage_percent",
            "CPU use of the node process over the guard's window, % of one core.",
            float(snap.get("cpu_percent") or 0),
        )
        yield _gauge(
            "scheduler0_resource_cpu_limit_percent",
            "MaxCPU: CPU use above which the node pauses, % of one core (0: no limit).",
            float(snap.get("max_cpu_percent") or 0),
        )

    def _disk(self) -> Iterable[Metric]:
        if self.disk is None:
            return
        yield _gauge(
            "scheduler0_writes_refused",
            "1 while writes answer 507: the data directory is below DataDirMinFreeMB, full"
            " or read-only.",
            1 if self.disk.refusal is not None else 0,
        )
        yield _gauge(
            "scheduler0_data_dir_free_bytes",
            "Free bytes in the data directory at the last sample (once a second).",
            float(self.disk.free_bytes),
        )
        yield _gauge(
            "scheduler0_data_dir_min_free_bytes",
            "DataDirMinFreeMB: free bytes below which writes are refused.",
            float(self.disk.floor_bytes),
        )

    def _readiness(self) -> Iterable[Metric]:
        if self.readiness is None:
            return
        active = {reason.get("code") for reason in self.readiness()}
        yield _gauge(
            "scheduler0_ready",
            "1 while this node can serve writes and fire its jobs (GET /healthcheck answers 200).",
            0 if active else 1,
        )
        reasons = GaugeMetricFamily(
            "scheduler0_not_ready_reason",
            "1 for each reason this node is not ready now (the codes of GET /healthcheck).",
            labels=["reason"],
        )
        for code in READINESS_CODES:
            reasons.add_metric([code], 1 if code in active else 0)
        yield reasons

    def _clock(self) -> Iterable[Metric]:
        watch = self.clock_watch
        if watch is None:
            return
        steps = CounterMetricFamily(
            "scheduler0_clock_steps",
            "Steps of the wall clock this node saw (its difference from the elapsed clock"
            " changed by more than 0.1 s at once), by direction.",
            labels=["direction"],
        )
        for direction, count in sorted(watch.steps.items()):
            steps.add_metric([direction], count)
        yield steps
        last = watch.last
        yield _gauge(
            "scheduler0_clock_last_step_seconds",
            "Size of the last step of the wall clock, negative when back (0: none since start).",
            0.0 if last is None else last.size_s,
        )

    def _per_job(self) -> Iterable[Metric]:
        yield _gauge(
            "scheduler0_job_series_limit",
            "MetricsMaxJobSeries: jobs that may have per-job series (0: none).",
            self.max_job_series,
        )
        yield _gauge(
            "scheduler0_job_series_jobs", "Jobs that have per-job series now.", len(self._jobs)
        )

    def _per_job_text(self) -> bytes:
        """
        The per-job families, written here rather than by prometheus_client:
        its exposition costs about 5 us a sample, so 1,000 jobs (4,000
        samples) would hold the reactor, and every slot due meanwhile, for
        some 20 ms a scrape. Each job's sample names with their labels are
        made once, when the job gets its series; a scrape only adds values.
        """
        jobs = self._jobs
        if not jobs:
            return b""
        executions = [_JOB_EXECUTIONS_HEAD]
        lateness = [_JOB_LATENESS_HEAD]
        for series in jobs.values():
            names = series[_NAMES]
            executions.append(
                f"{names[0]}{float(series[0])!r}\n"
                f"{names[1]}{float(series[1])!r}\n"
                f"{names[2]}{float(series[2])!r}\n"
            )
            if series[_LATENESS] is not None:
                lateness.append(f"{names[3]}{float(series[_LATENESS])!r}\n")
        return "".join(executions + lateness).encode("utf-8")


@attrs.define(eq=False)
class _ScrapeCollector:
    """The registry's view of what L{NodeMetrics} reads at scrape time."""

    metrics: NodeMetrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics._collect()

    def describe(self) -> list[Metric]:
        # Names are only known by collecting; nothing to check for clashes.
        return []
