"""
The nemesis run: a real N-node cluster under random faults while clients
write, then the figures a cron service's users care about.

    python -m harness.nemesis --nodes 3 --jobs 500 --duration 300 --seed 7
        [--json out.json] [--dump records.json] [--faults kill_leader,partition,...]
    python -m harness.nemesis --reanalyse records.json

A callback receiver, an N-node L{Cluster} and one project with C{--jobs}
C{@every 1s} jobs are set up; then for C{--duration} seconds a few client
workers update, read, pause, resume, delete and create jobs on random
reachable nodes while a nemesis kills, stops, isolates, partitions and
restarts nodes (one fault at a time, so never more than a minority). Every
fault is healed, the cluster settles, late slots get a quiet period to
arrive, and the run checks:

 - acknowledged writes lost (creates, deletes, pause/resume, data updates);
 - linearizability of each job's C{data.v} register, and 404 answers for
   jobs whose create had been acknowledged (a node answering from stale state);
 - slots expected while a job was surely active that never arrived (a slot
   owed through a fault to a job paused or deleted soon after is excused);
 - slots of a job delivered although their instant is after the 2xx of
   its delete or pause;
 - slots that do not exist (off the job's grid, or before its creation);
 - duplicated execution ids (reported prominently, not failed).

The exit status is 0 only when every safety figure is 0. The checking
functions are pure and take plain records, so they are tested on hand-made
histories; everything that talks to processes is in L{NemesisRun}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, TimeoutError

from harness.cluster import Cluster
from harness.linearizability import check_history
from harness.process import http_client
from harness.receiver import CallbackReceiver
from harness.waiting import wait_for
from scheduler0.timeutil import parse_instant

FAULT_KINDS = (
    "kill_leader",
    "kill_follower",
    "pause_node",
    "isolate_leader",
    "partition",
    "restart_node",
)
#: Relative weights of the client operations.
OPERATION_WEIGHTS = {
    "update": 45,
    "read": 40,
    "pause": 5,
    "resume": 5,
    "create": 3,
    "delete": 2,
}
PERIOD_S = 1.0
CALLBACK_PATHS = 4
#: Seconds after a fault heals during which a duplicate still counts as "in" it
#: (leases, retries and handovers settle within this).
FAULT_SETTLE_S = 5.0
INFINITY = math.inf
#: Two arrivals of one execution id closer than this came from two nodes
#: firing the slot at once, not from a late re-fire.
CONCURRENT_S = 0.5


# -- records -------------------------------------------------------------------


@attrs.frozen
class Operation:
    """
    One client request: C{kind} is create/update/read/pause/resume/delete;
    C{value} is the written C{data.v} (update), the C{data.v} read (read) or
    the job name (create); C{status} None means a timeout or connection error.
    """

    worker: int
    kind: str
    job: str | None
    node: int
    call: float
    returned: float
    status: int | None
    value: Any = None

    @property
    def outcome(self) -> str:
        """ "ok" (2xx), "failed" (4xx: surely no effect) or "unknown" (5xx, timeout)."""
        if self.status is not None and 200 <= self.status < 300:
            return "ok"
        if self.status is not None and 400 <= self.status < 500:
            return "failed"
        return "unknown"

    @property
    def ack(self) -> float | None:
        """The time of the 2xx, or None when there was none."""
        return self.returned if self.outcome == "ok" else None


@attrs.frozen
class JobInfo:
    """When a job was created and where its C{@every 1s} grid is anchored (epoch seconds)."""

    uuid: str
    created_at: float
    anchor_at: float


@attrs.frozen
class Delivery:
    """One execution as the receiver got it (epoch seconds)."""

    job_uuid: str
    execution_id: str
    scheduled_at: float
    arrived_at: float
    attempt: int = 1
    #: The node that sent it (its X-Scheduler0-Node header), 0 when unknown.
    node: int = 0


@attrs.frozen
class Timeline:
    """
    What a job's acknowledged life says about its slots: C{inactive} spans
    are slot instants that need not fire (paused, deleted or uncertain);
    C{forbidden} spans are slot instants that must not fire (after the 2xx
    of a pause until the next resume call, after the 2xx of a delete).
    """

    job: JobInfo
    inactive: tuple[tuple[float, float], ...] = ()
    forbidden: tuple[tuple[float, float], ...] = ()
    #: Calls of every pause and delete that may have taken effect.
    stops: tuple[float, ...] = ()


@attrs.frozen
class Fault:
    """One fault the nemesis applied, from C{start} to C{end} (epoch seconds)."""

    kind: str
    nodes: tuple[int, ...]
    start: float
    end: float
    leader_before: int | None = None
    #: Seconds from the start until the nodes outside the fault agreed on a
    #: new leader (leader faults only); None when they did not in time.
    failover_s: float | None = None
    note: str = ""

    @property
    def hits_leader(self) -> bool:
        return self.leader_before is not None and self.leader_before in self.nodes


@attrs.frozen
class RegisterOp:
    """A register operation in the form L{check_history} takes (integer microseconds)."""

    kind: str
    key: str
    value: Any
    output: Any
    call: int
    ret: int | None
    failed: bool


# -- pure checks ---------------------------------------------------------------


def slots_between(
    anchor: float, after: float, until: float, period: float = PERIOD_S
) -> list[float]:
    """Every slot C{anchor + k*period} (k >= 1) with C{after < slot <= until}."""
    first = max(1, math.floor((after - anchor) / period) + 1)
    slots = []
    k = first
    while anchor + k * period <= until:
        slot = anchor + k * period
        if slot > after:
            slots.append(slot)
        k += 1
    return slots


def slot_index(job: JobInfo, scheduled_at: float, period: float = PERIOD_S) -> int | None:
    """The k of a slot instant on C{job}'s grid, or None when it is off the grid (1 ms slack)."""
    k = round((scheduled_at - job.anchor_at) / period)
    if abs(job.anchor_at + k * period - scheduled_at) > 0.0015:
        return None
    return k


def _within(instant: float, spans: Iterable[tuple[float, float]]) -> bool:
    return any(start <= instant <= end for start, end in spans)


def job_timeline(job: JobInfo, lifecycle: Iterable[Operation]) -> Timeline:
    """
    The inactive and forbidden spans of C{job} from its pause, resume and
    delete requests. Failed (4xx) requests changed nothing. An unknown
    outcome makes everything from its call on uncertain: inactive, never
    forbidden (the client sends no lifecycle request after one).
    """
    inactive: list[tuple[float, float]] = []
    forbidden: list[tuple[float, float]] = []
    ops = sorted((op for op in lifecycle if op.outcome != "failed"), key=lambda op: op.call)
    stops = tuple(op.call for op in ops if op.kind in ("pause", "delete"))
    # The pause that may hold now: its call and (when acknowledged) its 2xx.
    pause_call: float | None = None
    pause_ack: float | None = None
    for op in ops:
        if op.kind == "pause":
            pause_call, pause_ack = op.call, op.ack
            if op.ack is None:
                break
        elif op.kind == "resume" and pause_call is not None:
            if pause_ack is not None:
                forbidden.append((pause_ack, op.call))
            if op.ack is None:
                inactive.append((pause_call, INFINITY))
                return Timeline(job, tuple(inactive), tuple(forbidden), stops)
            inactive.append((pause_call, op.ack))
            pause_call = pause_ack = None
        elif op.kind == "delete":
            inactive.append((op.call if pause_call is None else pause_call, INFINITY))
            if pause_ack is not None:
                forbidden.append((pause_ack, INFINITY))
            if op.ack is not None:
                forbidden.append((op.ack, INFINITY))
            return Timeline(job, tuple(inactive), tuple(forbidden), stops)
    if pause_call is not None:
        inactive.append((pause_call, INFINITY))
        if pause_ack is not None:
            forbidden.append((pause_ack, INFINITY))
    return Timeline(job, tuple(inactive), tuple(forbidden), stops)


def expected_slots(timeline: Timeline, t_stop: float, period: float = PERIOD_S) -> list[float]:
    """The slots of the job in (created_at, t_stop] outside every inactive span."""
    job = timeline.job
    return [
        slot
        for slot in slots_between(job.anchor_at, job.created_at, t_stop, period)
        if not _within(slot, timeline.inactive)
    ]


@attrs.frozen
class SlotFigures:
    """What L{check_slots} found; C{delivered} counts expected slots that arrived."""

    expected: int
    delivered: int
    #: Distinct slots that arrived although not expected (inside an inactive
    #: span, after the stop, or not existing).
    delivered_other: int
    missed: list[tuple[str, float]]
    lateness: list[float]
    after_ack: list[Delivery]
    nonexistent: list[Delivery]
    #: Undelivered slots owed through a fault to a job paused or deleted
    #: soon after (see L{check_slots}); not counted as missed.
    excused: list[tuple[str, float]] = attrs.field(factory=list)


def check_slots(
    timelines: Mapping[str, Timeline],
    deliveries: Sequence[Delivery],
    t_stop: float,
    period: float = PERIOD_S,
    faults: Sequence[Fault] = (),
    owed_grace: float = 10.0,
) -> SlotFigures:
    """
    Compare what fired with what should have: every expected slot must
    arrive (late is fine); no slot inside a forbidden span, no slot off a
    job's grid or not after its creation, no delivery for an unknown job.

    One exception: a slot that falls in a fault (or its settling time), was
    never delivered, and whose job got a pause or delete call within
    C{owed_grace} seconds after it is excused, not missed: its owner was
    cut off, and by the time a new owner could fire it late the job was
    paused or gone, which rightly fires nothing.
    """
    spans = [(f.start - period, f.end + FAULT_SETTLE_S) for f in faults]
    first_arrival: dict[tuple[str, int], float] = {}
    after_ack: list[Delivery] = []
    nonexistent: list[Delivery] = []
    for delivery in deliveries:
        timeline = timelines.get(delivery.job_uuid)
        if timeline is None:
            nonexistent.append(delivery)
            continue
        k = slot_index(timeline.job, delivery.scheduled_at, period)
        if k is None or delivery.scheduled_at <= timeline.job.created_at:
            nonexistent.append(delivery)
            continue
        if _within(delivery.scheduled_at, timeline.forbidden):
            after_ack.append(delivery)
        key = (delivery.job_uuid, k)
        if key not in first_arrival or delivery.arrived_at < first_arrival[key]:
            first_arrival[key] = delivery.arrived_at
    missed: list[tuple[str, float]] = []
    excused: list[tuple[str, float]] = []
    lateness: list[float] = []
    expected = 0
    for uuid, timeline in timelines.items():
        for slot in expected_slots(timeline, t_stop, period):
            expected += 1
            k = slot_index(timeline.job, slot, period)
            arrived = first_arrival.get((uuid, k))  # type: ignore[arg-type]
            if arrived is None:
                owed = _within(slot, spans) and any(
                    slot < stop <= slot + owed_grace for stop in timeline.stops
                )
                (excused if owed else missed).append((uuid, slot))
            else:
                lateness.append(arrived - slot)
    return SlotFigures(
        expected=expected,
        delivered=len(lateness),
        delivered_other=len(first_arrival) - len(lateness),
        missed=missed,
        lateness=lateness,
        after_ack=after_ack,
        nonexistent=nonexistent,
        excused=excused,
    )


@attrs.frozen
class Duplicate:
    """An execution id that arrived more than once."""

    execution_id: str
    job_uuid: str
    scheduled_at: float
    arrivals: tuple[float, ...]
    attempts: tuple[int, ...]
    in_fault: bool
    #: The node each arrival came from (0: unknown), in arrival order.
    nodes: tuple[int, ...] = ()


def find_duplicates(
    deliveries: Iterable[Delivery], faults: Sequence[Fault] = ()
) -> list[Duplicate]:
    """
    Every execution id delivered more than once, and also every (job, slot)
    delivered under more than one execution id (ids must be a function of
    the slot); C{in_fault} when a second arrival or the slot falls in a
    fault or within L{FAULT_SETTLE_S} after it.
    """
    by_id: dict[str, list[Delivery]] = defaultdict(list)
    ids_by_slot: dict[tuple[str, float], set[str]] = defaultdict(set)
    for delivery in deliveries:
        by_id[delivery.execution_id].append(delivery)
        ids_by_slot[(delivery.job_uuid, round(delivery.scheduled_at, 3))].add(delivery.execution_id)
    spans = [(f.start, f.end + FAULT_SETTLE_S) for f in faults]
    duplicates = []
    for execution_id, group in by_id.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda d: d.arrived_at)
        in_fault = any(_within(d.arrived_at, spans) for d in group[1:]) or _within(
            group[0].scheduled_at, spans
        )
        duplicates.append(
            Duplicate(
                execution_id,
                group[0].job_uuid,
                group[0].scheduled_at,
                tuple(d.arrived_at for d in group),
                tuple(d.attempt for d in group),
                in_fault,
                tuple(d.node for d in group),
            )
        )
    for (job_uuid, scheduled_at), ids in ids_by_slot.items():
        if len(ids) > 1:
            arrivals = sorted(d.arrived_at for i in ids for d in by_id[i])
            duplicates.append(
                Duplicate(
                    "ids:" + ",".join(sorted(ids)),
                    job_uuid,
                    scheduled_at,
                    tuple(arrivals),
                    (),
                    _within(scheduled_at, spans) or any(_within(a, spans) for a in arrivals[1:]),
                )
            )
    duplicates.sort(key=lambda d: d.scheduled_at)
    return duplicates


def register_history(
    operations: Iterable[Operation], final_reads: Iterable[Operation] = ()
) -> list[RegisterOp]:
    """The update and read operations as register operations keyed by job uuid."""
    history = []
    for op in itertools.chain(operations, final_reads):
        if op.kind not in ("update", "read") or op.job is None:
            continue
        outcome = op.outcome
        if op.kind == "read" and outcome != "ok":
            continue
        history.append(
            RegisterOp(
                kind="put" if op.kind == "update" else "get",
                key=op.job,
                value=op.value if op.kind == "update" else None,
                output=op.value if op.kind == "read" else None,
                call=round(op.call * 1e6),
                ret=round(op.returned * 1e6) if outcome == "ok" else None,
                failed=outcome == "failed",
            )
        )
    return history


def non_linearizable_keys(history: Sequence[RegisterOp]) -> list[str]:
    """Every key whose register history is not linearizable."""
    by_key: dict[str, list[RegisterOp]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    return [key for key in sorted(by_key) if not check_history(by_key[key]).ok]


def stale_not_found(operations: Sequence[Operation]) -> list[Operation]:
    """
    Requests answered 404 for a job whose create had been acknowledged
    before they were sent and that no delete had been sent for before they
    returned: the node answered from state older than an acknowledged write.
    """
    created: dict[str, float] = {}
    first_delete: dict[str, float] = {}
    for op in operations:
        if op.job is None:
            continue
        if op.kind == "create" and op.ack is not None:
            created[op.job] = op.ack
        elif op.kind == "delete":
            first_delete[op.job] = min(op.call, first_delete.get(op.job, INFINITY))
    return [
        op
        for op in operations
        if op.status == 404
        and op.job in created
        and created[op.job] < op.call
        and first_delete.get(op.job, INFINITY) > op.returned
    ]


def lost_updates(
    operations: Iterable[Operation], final_values: Mapping[str, Any]
) -> list[Operation]:
    """
    Acknowledged updates surely overwritten by nothing yet missing at the
    end: the final value is the initial one (None) or was written by an
    update that returned before this one was called.
    """
    writer: dict[tuple[str, Any], Operation] = {}
    acked: list[Operation] = []
    for op in operations:
        if op.kind != "update" or op.job is None:
            continue
        writer[(op.job, op.value)] = op
        if op.outcome == "ok":
            acked.append(op)
    lost = []
    for op in acked:
        if op.job is None or op.job not in final_values:
            continue  # the job is gone; deletes are checked on their own
        final = final_values[op.job]
        if final == op.value:
            continue
        source = writer.get((op.job, final))
        if final is None or (
            source is not None and source.ack is not None and source.ack < op.call
        ):
            lost.append(op)
    return lost


@attrs.frozen
class LostWrites:
    creates: list[str]
    deletes: list[str]
    pause_states: list[str]
    updates: list[Operation]

    @property
    def total(self) -> int:
        return len(self.creates) + len(self.deletes) + len(self.pause_states) + len(self.updates)


def lost_writes(
    operations: Sequence[Operation], final_jobs: Mapping[str, Mapping[str, Any]]
) -> LostWrites:
    """
    Acknowledged writes missing at the end: created jobs that are gone
    although no delete was sent, deleted jobs that are back, jobs whose
    C{paused} is not what their last (acknowledged) pause/resume set, and
    lost data updates (see L{lost_updates}).
    """
    by_job: dict[str, list[Operation]] = defaultdict(list)
    for op in operations:
        if op.job is not None:
            by_job[op.job].append(op)
    creates, deletes, pause_states = [], [], []
    for uuid, ops in by_job.items():
        kinds = {op.kind: op for op in ops}
        deleted = [op for op in ops if op.kind == "delete" and op.outcome != "failed"]
        if "create" in kinds and kinds["create"].outcome == "ok":
            if uuid not in final_jobs and not deleted:
                creates.append(uuid)
        if any(op.ack is not None for op in deleted) and uuid in final_jobs:
            deletes.append(uuid)
        lifecycle = sorted(
            (op for op in ops if op.kind in ("pause", "resume") and op.outcome != "failed"),
            key=lambda op: op.call,
        )
        if lifecycle and lifecycle[-1].ack is not None and uuid in final_jobs and not deleted:
            want = lifecycle[-1].kind == "pause"
            if bool(final_jobs[uuid].get("paused")) != want:
                pause_states.append(uuid)
    final_values = {uuid: _data_v(job) for uuid, job in final_jobs.items()}
    return LostWrites(creates, deletes, pause_states, lost_updates(operations, final_values))


def _data_v(job: Mapping[str, Any]) -> Any:
    data = job.get("data")
    return data.get("v") if isinstance(data, dict) else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank C{p}-th percentile (0 < p <= 100), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# -- the report ----------------------------------------------------------------


@attrs.frozen
class Report:
    """Every figure of a run; C{ok} when every safety figure is 0."""

    seed: int
    nodes: int
    duration: float
    base_dir: str
    operations: dict[str, dict[str, int]]
    lost: LostWrites
    linearizable: bool
    non_linearizable: list[str]
    slots: SlotFigures
    duplicates: list[Duplicate]
    faults: list[Fault]
    t0: float
    #: The raw records, for the evidence of flagged jobs.
    history: Sequence[Operation] = ()
    deliveries: Sequence[Delivery] = ()
    jobs: Mapping[str, JobInfo] = attrs.field(factory=dict)
    final_jobs: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: 404 answers for jobs known to exist (see L{stale_not_found}).
    stale: Sequence[Operation] = ()

    @property
    def safety(self) -> dict[str, int]:
        return {
            "lost_writes": self.lost.total,
            "non_linearizable_keys": len(self.non_linearizable),
            "missed_slots": len(self.slots.missed),
            "stale_not_found": len(self.stale),
            "delivered_after_ack": len(self.slots.after_ack),
            "nonexistent_slots": len(self.slots.nonexistent),
        }

    @property
    def ok(self) -> bool:
        return not any(self.safety.values())

    @property
    def concurrent_duplicates(self) -> int:
        """Duplicates whose first two arrivals are under L{CONCURRENT_S} apart (two firers)."""
        return sum(
            1
            for d in self.duplicates
            if len(d.arrivals) > 1 and d.arrivals[1] - d.arrivals[0] < CONCURRENT_S
        )

    def as_json(self) -> dict[str, Any]:
        lateness = self.slots.lateness
        return {
            "ok": self.ok,
            "seed": self.seed,
            "nodes": self.nodes,
            "duration_s": self.duration,
            "base_dir": self.base_dir,
            "safety": self.safety,
            "operations": self.operations,
            "lost_writes": {
                "creates": self.lost.creates,
                "deletes": self.lost.deletes,
                "pause_states": self.lost.pause_states,
                "updates": [attrs.asdict(op) for op in self.lost.updates],
            },
            "non_linearizable_keys": self.non_linearizable,
            "stale_not_found": [
                {**attrs.asdict(op), "call": op.call - self.t0, "returned": op.returned - self.t0}
                for op in self.stale
            ],
            "slots": {
                "expected": self.slots.expected,
                "delivered": self.slots.delivered,
                "delivered_other": self.slots.delivered_other,
                "missed": [{"job": j, "slot": s - self.t0} for j, s in self.slots.missed],
                "late_s": {
                    "p50": percentile(lateness, 50),
                    "p99": percentile(lateness, 99),
                    "max": max(lateness, default=None),
                },
                "excused": len(self.slots.excused),
                "after_ack": [attrs.asdict(d) for d in self.slots.after_ack],
                "nonexistent": [attrs.asdict(d) for d in self.slots.nonexistent],
            },
            "duplicates": {
                "count": len(self.duplicates),
                "in_fault": sum(d.in_fault for d in self.duplicates),
                "concurrent": self.concurrent_duplicates,
                # The first 2000 (by slot); --dump keeps every delivery.
                "items": [attrs.asdict(d) for d in self.duplicates[:2000]],
            },
            "faults": [
                {**attrs.asdict(f), "start_s": f.start - self.t0, "end_s": f.end - self.t0}
                for f in self.faults
            ],
            "failover_s": [f.failover_s for f in self.faults if f.hits_leader],
            "t0": self.t0,
            "evidence": {uuid: self.evidence(uuid) for uuid in self.flagged_jobs()},
        }

    def flagged_jobs(self, per_figure: int = 8) -> list[str]:
        """Up to C{per_figure} jobs named by each safety figure, in a stable order."""
        figures: list[Iterable[str | None]] = [
            [*self.lost.creates, *self.lost.deletes, *self.lost.pause_states],
            (op.job for op in self.lost.updates),
            self.non_linearizable,
            (op.job for op in self.stale),
            (uuid for uuid, _ in self.slots.missed),
            (d.job_uuid for d in self.slots.after_ack),
            (d.job_uuid for d in self.slots.nonexistent),
        ]
        found: list[str] = []
        for names in figures:
            distinct = [n for n in dict.fromkeys(names) if n is not None]
            found += distinct[:per_figure]
        return list(dict.fromkeys(found))

    def evidence(self, uuid: str) -> dict[str, Any]:
        """Everything recorded about one job, times relative to the run's start."""
        job = self.jobs.get(uuid)
        return {
            "created_at": None if job is None else job.created_at - self.t0,
            "anchor_at": None if job is None else job.anchor_at - self.t0,
            "final": self.final_jobs.get(uuid),
            "operations": [
                {
                    **attrs.asdict(op),
                    "call": op.call - self.t0,
                    "returned": op.returned - self.t0,
                    "outcome": op.outcome,
                }
                for op in self.history
                if op.job == uuid and op.kind != "read"
            ],
            "deliveries": [
                [d.scheduled_at - self.t0, d.arrived_at - self.t0, d.attempt, d.execution_id]
                for d in self.deliveries
                if d.job_uuid == uuid
            ],
        }

    def render(self) -> str:
        def rel(instant: float) -> str:
            return f"{instant - self.t0:7.1f}s"

        lines = [f"nemesis run: seed {self.seed}, {self.nodes} nodes, {self.duration:.0f} s"]
        lines.append("faults:")
        for f in self.faults:
            failover = ""
            if f.hits_leader:
                failover = (
                    f", failover {f.failover_s:.2f} s"
                    if f.failover_s is not None
                    else ", NO new leader in time"
                )
            note = f" ({f.note})" if f.note else ""
            lines.append(
                f"  {rel(f.start)} .. {rel(f.end)}  {f.kind:<15} nodes {list(f.nodes)}"
                f" leader-before {f.leader_before}{failover}{note}"
            )
        times = [f.failover_s for f in self.faults if f.hits_leader and f.failover_s is not None]
        if times:
            lines.append(
                f"failover times: {', '.join(f'{t:.2f}' for t in times)} s (max {max(times):.2f} s)"
            )
        lines.append(
            "operations: "
            + ", ".join(
                f"{kind} {sum(c.values())} ({', '.join(f'{k} {n}' for k, n in sorted(c.items()))})"
                for kind, c in sorted(self.operations.items())
            )
        )
        lateness = self.slots.lateness
        p50, p99 = percentile(lateness, 50), percentile(lateness, 99)
        lines.append(
            f"slots: expected {self.slots.expected}, delivered {self.slots.delivered}, "
            f"missed {len(self.slots.missed)} (excused {len(self.slots.excused)}, other slots "
            f"delivered {self.slots.delivered_other}); "
            f"late p50 {_seconds(p50)} p99 {_seconds(p99)} "
            f"max {_seconds(max(lateness, default=None))}"
        )
        for uuid, slot in self.slots.missed[:10]:
            lines.append(f"  missed: job {uuid} slot at {rel(slot)}")
        for d in self.slots.after_ack[:10]:
            lines.append(
                f"  after ack: job {d.job_uuid} slot {rel(d.scheduled_at)} "
                f"arrived {rel(d.arrived_at)}"
            )
        for d in self.slots.nonexistent[:10]:
            lines.append(
                f"  no such slot: job {d.job_uuid} slot {rel(d.scheduled_at)} id {d.execution_id}"
            )
        in_fault = sum(d.in_fault for d in self.duplicates)
        lines.append(
            f"*** DUPLICATED execution ids: {len(self.duplicates)} "
            f"({in_fault} in a fault window; {self.concurrent_duplicates} fired twice within "
            f"{CONCURRENT_S} s, the rest fired again later) ***"
        )
        for dup in self.duplicates[:10]:
            lines.append(
                f"  dup: job {dup.job_uuid} slot {rel(dup.scheduled_at)} arrivals "
                f"{', '.join(rel(a).strip() for a in dup.arrivals)} attempts {list(dup.attempts)}"
                f"{' (in fault)' if dup.in_fault else ''}"
            )
        lines.append(
            f"lost writes: {self.lost.total} (creates {len(self.lost.creates)}, deletes "
            f"{len(self.lost.deletes)}, pause states {len(self.lost.pause_states)}, "
            f"updates {len(self.lost.updates)})"
        )
        lines.append(
            f"linearizable: {self.linearizable}"
            + (f" (not: {self.non_linearizable[:5]})" if self.non_linearizable else "")
        )
        for o in self.stale[:10]:
            lines.append(
                f"  404 for a live job: {o.kind} of {o.job} on node {o.node} at {rel(o.call)}"
            )
        lines.append("safety: " + ", ".join(f"{k} {v}" for k, v in self.safety.items()))
        lines.append(
            "RESULT: OK" if self.ok else f"RESULT: FAILED (node data kept in {self.base_dir})"
        )
        return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def analyse(
    *,
    seed: int,
    nodes: int,
    duration: float,
    base_dir: str,
    jobs: Mapping[str, JobInfo],
    operations: Sequence[Operation],
    final_reads: Sequence[Operation],
    final_jobs: Mapping[str, Mapping[str, Any]],
    deliveries: Sequence[Delivery],
    faults: Sequence[Fault],
    t_stop: float,
    t0: float,
) -> Report:
    """Every figure of a finished run, from its records alone."""
    lifecycle: dict[str, list[Operation]] = defaultdict(list)
    for op in operations:
        if op.kind in ("pause", "resume", "delete") and op.job is not None:
            lifecycle[op.job].append(op)
    timelines = {uuid: job_timeline(job, lifecycle.get(uuid, ())) for uuid, job in jobs.items()}
    history = register_history(operations, final_reads)
    bad_keys = non_linearizable_keys(history)
    counts: dict[str, Counter] = defaultdict(Counter)
    for op in operations:
        if op.worker >= 0:  # set-up creates are not client operations
            counts[op.kind][op.outcome] += 1
    return Report(
        seed=seed,
        nodes=nodes,
        duration=duration,
        base_dir=base_dir,
        operations={kind: dict(c) for kind, c in counts.items()},
        lost=lost_writes(operations, final_jobs),
        linearizable=not bad_keys,
        non_linearizable=bad_keys,
        slots=check_slots(timelines, deliveries, t_stop, faults=faults),
        duplicates=find_duplicates(deliveries, faults),
        faults=list(faults),
        t0=t0,
        history=operations,
        deliveries=deliveries,
        jobs=jobs,
        final_jobs=final_jobs,
        stale=stale_not_found(operations),
    )


def dump_records(path: str, records: Mapping[str, Any]) -> None:
    """Write the raw records of a run (the keyword arguments of L{analyse}) as JSON."""
    plain = {
        key: (
            {k: attrs.asdict(v) for k, v in value.items()}
            if key == "jobs"
            else [attrs.asdict(v) for v in value]
            if key in ("operations", "final_reads", "deliveries", "faults")
            else value
        )
        for key, value in records.items()
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(plain, f)


def load_records(path: str) -> dict[str, Any]:
    """Read records written by L{dump_records} back into the keyword arguments of L{analyse}."""
    with open(path, encoding="utf-8") as f:
        plain = json.load(f)
    records = dict(plain)
    records["jobs"] = {k: JobInfo(**v) for k, v in plain["jobs"].items()}
    for key, kind in (
        ("operations", Operation),
        ("final_reads", Operation),
        ("deliveries", Delivery),
    ):
        records[key] = [kind(**v) for v in plain[key]]
    records["faults"] = [Fault(**{**v, "nodes": tuple(v["nodes"])}) for v in plain["faults"]]
    return records


# -- talking to the cluster ----------------------------------------------------


def _sleep(clock: Any, seconds: float) -> Deferred:
    return task.deferLater(clock, max(0.0, seconds), lambda: None)


async def _request(
    reactor: Any,
    client: Any,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: Any = None,
    timeout: float = 5.0,
) -> tuple[int | None, Any]:
    """One API call: (status, parsed "data"); (None, None) on timeout or connection error."""

    async def go() -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": dict(headers)}
        if body is not None:
            kwargs["json"] = body
        response = await client.request(method, url, **kwargs)
        raw = await response.content()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        data = parsed.get("data") if isinstance(parsed, dict) else None
        return response.code, data

    try:
        return await Deferred.fromCoroutine(go()).addTimeout(timeout, reactor)
    except Exception:
        return None, None


@attrs.define(eq=False)
class _JobState:
    """What the clients believe about one job they may touch."""

    paused: bool = False
    busy: bool = False  # a pause, resume or delete is in flight
    uncertain: bool = False  # a lifecycle request had no answer: touch its life no more


@attrs.define(eq=False)
class NemesisRun:
    """One run: the cluster, the receiver, the clients, the nemesis and their records."""

    reactor: Any
    nodes: int = 3
    jobs: int = 500
    duration: float = 300.0
    seed: int = 7
    workers: int = 4
    op_interval: float = 0.05
    request_timeout: float = 5.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    quiet_between: tuple[float, float] = (2.0, 5.0)
    hold: tuple[float, float] = (3.0, 8.0)
    settle: float = 10.0
    margin: float = 3.0
    base_dir: str = ""
    log: Any = print
    #: The nemesis's choices; each client worker has a generator of its own,
    #: so the fault plan does not depend on how requests interleave.
    rng: random.Random = attrs.field(init=False)
    cluster: Cluster = attrs.field(init=False)
    receiver: CallbackReceiver = attrs.field(init=False)
    client: Any = attrs.field(init=False)
    headers: dict[str, str] = attrs.field(factory=dict)
    project: str = ""
    callback_base: str = ""
    job_info: dict[str, JobInfo] = attrs.field(factory=dict)
    live: dict[str, _JobState] = attrs.field(factory=dict)
    operations: list[Operation] = attrs.field(factory=list)
    faults: list[Fault] = attrs.field(factory=list)
    unknown_creates: set[str] = attrs.field(factory=set)
    counter: itertools.count = attrs.field(factory=lambda: itertools.count(1))
    t0: float = 0.0
    t_end: float = 0.0
    #: The keyword arguments of L{analyse} once the run is over.
    records: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.nodes < 3:
            raise ValueError(f"nodes: invalid value {self.nodes!r}; expected at least 3")
        if self.jobs < 1:
            raise ValueError(f"jobs: invalid value {self.jobs!r}; expected at least 1")
        if self.duration <= 0:
            raise ValueError(f"duration: invalid value {self.duration!r}; expected > 0")
        unknown = sorted(set(self.fault_kinds) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(
                f"faults: invalid value {list(self.fault_kinds)!r}; choose from {list(FAULT_KINDS)}"
                " (or none)"
            )
        self.rng = random.Random(f"nemesis-{self.seed}")
        self.client = http_client(self.reactor)
        self.receiver = CallbackReceiver(self.reactor)

    def now(self) -> float:
        return float(self.reactor.seconds())

    def say(self, text: str) -> None:
        self.log(f"[{self.now() - self.t0:7.1f}s] {text}")

    # -- set-up --------------------------------------------------------------

    async def set_up(self) -> None:
        """Start the receiver and the cluster; create the credential, project and jobs."""
        port = await self.receiver.listen(self.reactor)
        self.callback_base = f"http://127.0.0.1:{port}/cb/"
        self.cluster = Cluster(self.reactor, self.base_dir, size=self.nodes)
        await self.cluster.prepare()
        await self.cluster.start(timeout=60)
        leader = await self.cluster.wait_leader(timeout=60)
        self.headers = await self.cluster.make_headers(timeout=60)
        url = self.cluster.addresses[leader].address
        status, data = await _request(
            self.reactor,
            self.client,
            "POST",
            url + "/projects",
            self.headers,
            {"name": f"nemesis-{self.seed}", "description": "nemesis run"},
            timeout=30,
        )
        if status != 201:
            raise RuntimeError(f"POST /projects answered {status}: {data}")
        self.project = data["uuid"]
        batch = 100
        for start in range(0, self.jobs, batch):
            bodies = [
                self._job_body(f"job-{i}", i) for i in range(start, min(self.jobs, start + batch))
            ]
            call = self.now()
            status, data = await _request(
                self.reactor, self.client, "POST", url + "/jobs", self.headers, bodies, timeout=30
            )
            if status != 201 or not isinstance(data, list):
                raise RuntimeError(f"POST /jobs (jobs {start}..) answered {status}: {data}")
            for job in data:
                self._learn_job(job)
                self.live[job["uuid"]] = _JobState()
                self.operations.append(
                    Operation(
                        -1, "create", job["uuid"], leader, call, self.now(), status, job["name"]
                    )
                )
        self.say(
            f"cluster of {self.nodes} up in {self.base_dir} (leader {leader}); "
            f"{len(self.live)} jobs created"
        )

    def _job_body(self, name: str, index: int) -> dict[str, Any]:
        return {
            "project_uuid": self.project,
            "name": name,
            "spec": "@every 1s",
            "callback_url": f"{self.callback_base}{index % CALLBACK_PATHS}",
            "data": None,
        }

    def _learn_job(self, job: Mapping[str, Any]) -> None:
        created = parse_instant(job["created_at"]).timestamp()
        anchor = parse_instant(job.get("anchor_at") or job["created_at"]).timestamp()
        self.job_info[job["uuid"]] = JobInfo(job["uuid"], created, math.floor(anchor))

    # -- clients -------------------------------------------------------------

    def reachable(self) -> list[int]:
        return [
            n
            for n in self.cluster.ids
            if self.cluster.is_running(n) and n not in self.cluster.paused
        ]

    async def client_worker(self, worker: int) -> None:
        """Send random operations to random reachable nodes until the end time."""
        rng = random.Random(f"worker-{self.seed}-{worker}")
        kinds = list(OPERATION_WEIGHTS)
        weights = list(OPERATION_WEIGHTS.values())
        while self.now() < self.t_end:
            nodes = self.reachable()
            if nodes:
                node = rng.choice(nodes)
                kind = rng.choices(kinds, weights)[0]
                await self.operate(rng, worker, kind, node)
            await _sleep(self.reactor, self.op_interval)

    def _pick(self, rng: random.Random, kind: str) -> str | None:
        if kind in ("update", "read"):
            candidates = list(self.live)
        elif kind == "pause":
            candidates = [
                u for u, s in self.live.items() if not (s.busy or s.uncertain or s.paused)
            ]
        elif kind == "resume":
            candidates = [
                u for u, s in self.live.items() if not (s.busy or s.uncertain) and s.paused
            ]
        else:  # delete
            candidates = [u for u, s in self.live.items() if not (s.busy or s.uncertain)]
        return rng.choice(candidates) if candidates else None

    async def operate(self, rng: random.Random, worker: int, kind: str, node: int) -> None:
        """Perform one operation of C{kind} on C{node} and record it."""
        url = self.cluster.addresses[node].address
        if kind == "create":
            name = f"new-{worker}-{next(self.counter)}"
            body: dict[str, Any] | None = self._job_body(name, rng.randrange(CALLBACK_PATHS))
            call = self.now()
            status, data = await self._call("POST", url + "/jobs", body)
            uuid = data.get("uuid") if status == 201 and isinstance(data, dict) else None
            op = Operation(worker, kind, uuid, node, call, self.now(), status, name)
            self.operations.append(op)
            if uuid is not None:
                self._learn_job(data)
                self.live[uuid] = _JobState()
            elif op.outcome == "unknown":
                self.unknown_creates.add(name)
            return
        job = self._pick(rng, kind)
        if job is None:
            return
        state = self.live[job]
        method, body, value = "GET", None, None
        if kind == "update":
            value = next(self.counter)
            method, body = "PATCH", {"data": {"v": value}}
        elif kind in ("pause", "resume"):
            method, body = "PATCH", {"paused": kind == "pause"}
        elif kind == "delete":
            method = "DELETE"
            del self.live[job]
        if kind in ("pause", "resume"):
            state.busy = True
        call = self.now()
        status, data = await self._call(method, f"{url}/jobs/{job}", body)
        if kind == "read" and status == 200 and isinstance(data, dict):
            value = _data_v(data)
        op = Operation(worker, kind, job, node, call, self.now(), status, value)
        self.operations.append(op)
        if kind in ("pause", "resume"):
            state.busy = False
            if op.outcome == "ok":
                state.paused = kind == "pause"
            elif op.outcome == "unknown":
                state.uncertain = True

    async def _call(self, method: str, url: str, body: Any) -> tuple[int | None, Any]:
        return await _request(
            self.reactor, self.client, method, url, self.headers, body, self.request_timeout
        )

    # -- the nemesis ---------------------------------------------------------

    async def nemesis(self) -> None:
        """Apply one random fault at a time, each healed before the next, until the end time."""
        order: list[str] = []
        while self.fault_kinds:
            quiet = self.rng.uniform(*self.quiet_between)
            hold = self.rng.uniform(*self.hold)
            # Leave time for the fault, a restart and the failover wait before the end.
            if self.now() + quiet + hold + 2.0 > self.t_end:
                return
            await _sleep(self.reactor, quiet)
            if not order:
                order = list(self.fault_kinds)
                self.rng.shuffle(order)
            kind = order.pop(0)
            fault = await self.apply_fault(kind, hold)
            self.faults.append(fault)
            failover = (
                f"; failover {fault.failover_s:.2f} s"
                if fault.failover_s is not None
                else ("; NO failover in time" if fault.hits_leader else "")
            )
            self.say(
                f"fault {kind} on {list(fault.nodes)} (leader was {fault.leader_before}) "
                f"held {fault.end - fault.start:.1f} s{failover}"
                + (f" ({fault.note})" if fault.note else "")
            )

    async def current_leader(self) -> int | None:
        try:
            return await self.cluster.wait_leader(timeout=10)
        except TimeoutError:
            return None

    async def apply_fault(self, kind: str, hold: float) -> Fault:
        """Apply fault C{kind} for C{hold} seconds, heal it, and say what happened."""
        leader = await self.current_leader()
        ids = self.cluster.ids
        followers = [n for n in ids if n != leader]
        majority_size = self.nodes // 2 + 1
        note = "" if leader is not None else "no agreed leader before the fault"
        if kind in ("kill_leader", "isolate_leader") and leader is None:
            kind = "kill_follower" if kind == "kill_leader" else "partition"
        targets: tuple[int, ...]
        if kind in ("kill_leader", "isolate_leader") and leader is not None:
            targets = (leader,)
        elif kind == "kill_follower":
            targets = (self.rng.choice(followers),)
        elif kind in ("pause_node", "restart_node"):
            targets = (self.rng.choice(ids),)
        else:  # partition: a random minority
            targets = tuple(sorted(self.rng.sample(ids, self.nodes - majority_size)))
        others = [n for n in ids if n not in targets]
        start = self.now()
        if kind in ("kill_leader", "kill_follower", "restart_node"):
            for n in targets:
                await self.cluster.kill(n)
        elif kind == "pause_node":
            for n in targets:
                self.cluster.pause(n)
        elif kind == "isolate_leader":
            self.cluster.isolate(targets[0])
        else:
            self.cluster.partition(others, targets)
        failover: Deferred | None = None
        if leader is not None and leader in targets:
            failover = Deferred.fromCoroutine(self._failover(others, start, timeout=hold + 15))
        if kind != "restart_node":
            await _sleep(self.reactor, hold)
        if kind in ("kill_leader", "kill_follower", "restart_node"):
            await self.cluster.start(timeout=60, ids=list(targets))
        elif kind == "pause_node":
            for n in targets:
                self.cluster.resume(n)
        else:
            self.cluster.heal()
        end = self.now()
        failover_s = None
        if failover is not None:
            failover_s = await failover
        return Fault(kind, targets, start, end, leader, failover_s, note)

    async def _failover(self, among: list[int], start: float, timeout: float) -> float | None:
        try:
            await self.cluster.wait_leader(timeout=timeout, among=among)
        except TimeoutError:
            return None
        return self.now() - start

    # -- the end ---------------------------------------------------------------

    async def converge(self, timeout: float = 60.0) -> int:
        """Heal everything, start dead nodes, wait for one leader and equal applied indexes."""
        self.cluster.heal()
        for n in list(self.cluster.paused):
            self.cluster.resume(n)
        dead = [n for n in self.cluster.ids if not self.cluster.is_running(n)]
        if dead:
            await self.cluster.start(timeout=60, ids=dead)
        await self.cluster.wait_leader(timeout=timeout)

        async def same_applied() -> bool:
            answers = [await self.cluster.health(n) for n in self.cluster.ids]
            indexes = {a.get("applied_index") if a else None for a in answers}
            return len(indexes) == 1 and None not in indexes

        await wait_for(
            self.reactor,
            same_applied,
            timeout=timeout,
            interval=0.1,
            what="every node to report the same applied index",
        )
        return await self.cluster.wait_leader(timeout=timeout)

    async def final_state(self, leader: int) -> tuple[dict[str, dict], list[Operation]]:
        """Every job of the project as the leader lists it, and one final read per job."""
        url = self.cluster.addresses[leader].address
        jobs: dict[str, dict] = {}
        reads: list[Operation] = []
        cursor = None
        for _ in range(10_000):
            query = f"/jobs?project_uuid={self.project}&limit=1000"
            if cursor:
                query += f"&cursor={cursor}"
            call = self.now()
            status, data = await _request(
                self.reactor, self.client, "GET", url + query, self.headers, timeout=30
            )
            if status != 200 or not isinstance(data, dict):
                raise RuntimeError(f"GET {query} on the leader answered {status}: {data}")
            returned = self.now()
            for job in data["items"]:
                jobs[job["uuid"]] = job
                reads.append(
                    Operation(-1, "read", job["uuid"], leader, call, returned, 200, _data_v(job))
                )
            cursor = data.get("next_cursor")
            if not cursor:
                break
        return jobs, reads

    def deliveries(self) -> list[Delivery]:
        found = []
        for arrival in self.receiver.arrivals:
            item = arrival.item
            try:
                found.append(
                    Delivery(
                        str(item["job_uuid"]),
                        str(item["execution_id"]),
                        parse_instant(item["scheduled_at"]).timestamp(),
                        arrival.at,
                        int(item.get("attempt") or 1),
                        int(arrival.headers.get("x-scheduler0-node") or 0),
                    )
                )
            except (KeyError, TypeError, ValueError):
                found.append(Delivery("?", repr(item)[:80], 0.0, arrival.at))
        return found

    async def run(self) -> Report:
        """The whole run: set up, load and faults, settle, check."""
        self.t0 = self.now()
        try:
            await self.set_up()
            self.t_end = self.now() + self.duration
            self.say(f"workload and faults for {self.duration:.0f} s (seed {self.seed})")
            loops = [Deferred.fromCoroutine(self.client_worker(i)) for i in range(self.workers)]
            loops.append(Deferred.fromCoroutine(self.nemesis()))
            for loop in loops:
                await loop
            self.say(f"workload over: {len(self.operations)} operations, {len(self.faults)} faults")
            leader = await self.converge()
            self.say(f"converged (leader {leader}); quiet for {self.settle:.0f} s")
            await _sleep(self.reactor, self.settle)
            leader = await self.cluster.wait_leader(timeout=60)
            final_jobs, final_reads = await self.final_state(leader)
            for uuid, job in final_jobs.items():
                if uuid not in self.job_info:
                    self._learn_job(job)
        except BaseException:
            self.log(f"the run broke; node data kept in {self.base_dir}")
            if hasattr(self, "cluster"):
                self.log(self.cluster.logs())
            raise
        finally:
            await self.tear_down()
        self.records = dict(
            seed=self.seed,
            nodes=self.nodes,
            duration=self.duration,
            base_dir=self.base_dir,
            jobs=self.job_info,
            operations=self.operations,
            final_reads=final_reads,
            final_jobs=final_jobs,
            deliveries=self.deliveries(),
            faults=self.faults,
            t_stop=self.t_end - self.margin,
            t0=self.t0,
        )
        return analyse(**self.records)

    async def tear_down(self) -> None:
        if hasattr(self, "cluster"):
            await self.cluster.close()
        if self.receiver._port is not None:
            await self.receiver.stop()


# -- command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.nemesis",
        description="Run a real Scheduler0 cluster under random faults and check what users see.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (3 or 5)")
    parser.add_argument("--jobs", type=int, default=500, help="@every 1s jobs created at the start")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load and faults")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=4, help="concurrent client workers")
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help="comma-separated fault kinds, applied in shuffled rounds "
        f"(from {','.join(FAULT_KINDS)}), or none for a fault-free baseline",
    )
    parser.add_argument("--settle", type=float, default=10.0, help="quiet seconds before checking")
    parser.add_argument("--json", dest="json_path", help="also write every figure to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the node data even when all is well"
    )
    parser.add_argument(
        "--dump", help="also write the raw records (operations, deliveries, faults) to this file"
    )
    parser.add_argument(
        "--reanalyse", metavar="DUMP", help="check the records of an earlier --dump; run nothing"
    )
    return parser


async def run_nemesis(reactor: Any, options: argparse.Namespace) -> Report:
    """Run with parsed command-line C{options}; keep the data directory unless all is well."""
    run = NemesisRun(
        reactor,
        nodes=options.nodes,
        jobs=options.jobs,
        duration=options.duration,
        seed=options.seed,
        workers=options.workers,
        fault_kinds=tuple(
            k.strip() for k in options.faults.split(",") if k.strip() and k.strip() != "none"
        ),
        settle=options.settle,
    )
    base_dir = run.base_dir = tempfile.mkdtemp(prefix="scheduler0-nemesis-")
    report = await run.run()
    if options.dump:
        dump_records(options.dump, run.records)
    if report.ok and not options.keep:
        shutil.rmtree(base_dir, ignore_errors=True)
    return report


def _finish(report: Report, options: argparse.Namespace) -> int:
    print(report.render())
    if options.json_path:
        with open(options.json_path, "w", encoding="utf-8") as f:
            json.dump(report.as_json(), f, indent=2, default=str)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> None:
    options = _parser().parse_args(argv)
    if options.reanalyse:
        raise SystemExit(_finish(analyse(**load_records(options.reanalyse)), options))

    async def go(reactor: Any) -> None:
        try:
            report = await run_nemesis(reactor, options)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        code = _finish(report, options)
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: Deferred.fromCoroutine(go(reactor)))


if __name__ == "__main__":
    main()
