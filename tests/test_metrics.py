"""
Tests for L{scheduler0.metrics} and the hooks that feed it: the scheduler's
execution and start observers, the executor's POST observer, C{GET /metrics}
in memory, and real nodes (one, then a cluster of three) scraped with a
real Prometheus text parser.
"""

from __future__ import annotations

import math
import os
from base64 import b64encode
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from scheduler0.api.limits import RateLimiter
from scheduler0.cluster.membership import Membership
from scheduler0.delivery import Delivery, Outcome
from scheduler0.metrics import CONTENT_TYPE, LATENCY_BUCKETS, NodeMetrics
from scheduler0.scheduler.service import SchedulerService
from scheduler0.store.commands import Command, Result
from scheduler0.timeutil import format_instant
from scheduler0.versions import ENTRY_VERSION
from tests.support.api import Harness as APIHarness
from tests.support.executor import Harness as ExecutorHarness
from tests.support.executor import delivery as make_delivery
from tests.support.scheduler import START, make_job
from tests.support.scheduler import FakeExecutions as SchedulerExecutions
from tests.support.scheduler import FakeExecutor as SchedulerExecutor
from tests.support.scheduler import FakeProposer as SchedulerProposer
from tests.support.scheduler import FakeState as SchedulerState

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(metrics: NodeMetrics) -> Samples:
    return parse(metrics.exposition().decode("utf-8"))


def record(job_uuid: str = "job-1", state: str = "succeeded", **fields: Any) -> dict:
    values = {
        "execution_id": f"{job_uuid}-x",
        "job_uuid": job_uuid,
        "project_uuid": "project-1",
        "scheduled_at": "2026-03-01T12:00:00.000Z",
        "state": state,
        "attempts": 1,
        "node_id": 1,
        "started_at": None,
        "finished_at": None,
        "status_code": None,
        "error": None,
        "skip_reason": None,
    }
    values.update(fields)
    return values


def started(job_uuid: str, scheduled_s: float) -> Delivery:
    return make_delivery(1, job_uuid=job_uuid, scheduled_s=scheduled_s)


def applied(op: str, value: Any, **args: Any) -> tuple[Command, Result]:
    return Command(op, args), Result.success(value)


# -- fakes of the node's parts ------------------------------------------------


@attrs.define
class FakeScheduler:
    active: int = 4
    owned: int = 3

    def active_jobs(self) -> int:
        return self.active

    def owned_jobs(self) -> int:
        return self.owned


@attrs.define
class FakeExecutor:
    max_workers: int = 8
    depth: int = 5
    posts: int = 2
    waiting_retry: int = 1

    def queue_depth(self) -> int:
        return self.depth

    def in_flight(self) -> int:
        return self.posts

    def retrying(self) -> int:
        return self.waiting_retry


@attrs.define
class FakeProposer:
    applied_index: int = 17


@attrs.define
class FakeSettings:
    election_ticks: int = 10  # 0.5 s at 50 ms a tick


@attrs.define
class FakeCore:
    settings: FakeSettings = attrs.field(factory=FakeSettings)


@attrs.define
class FakeCluster:
    """What NodeMetrics reads of a ClusterNode."""

    now: float = 1000.0
    role: str = "follower"
    term: int = 6
    leader_id: int | None = 2
    _heard: dict[int, float] = attrs.field(factory=dict)
    core: FakeCore = attrs.field(factory=FakeCore)
    members: tuple[int, ...] = (1, 2, 3)
    config: Any = attrs.field(factory=lambda: SimpleNamespace(node_id=1))
    entry_version: int | None = 2

    def local_status(self) -> dict:
        return {
            "node_id": 1,
            "role": self.role,
            "term": self.term,
            "leader_id": self.leader_id,
            "commit_index": 40,
            "applied_index": 39,
            "lease_valid": self.role == "follower",
            "entry_version": self.entry_version,
        }

    def member_ids(self) -> set[int]:
        return set(self.members)

    def monotonic(self) -> float:
        return self.now

    # The real count, on this fake's clock and members.
    reachable_peers = Membership.reachable_peers


@attrs.define
class FakeProgress:
    """The scheduler's progress mark, as NodeMetrics reads it."""

    mark: tuple | None = None

    def progress_mark(self) -> tuple | None:
        return self.mark

    def active_jobs(self) -> int:
        return 0

    def owned_jobs(self) -> int:
        return 0


@attrs.define
class FakeGuard:
    paused: bool = False
    reason: str | None = None

    def snapshot(self) -> dict:
        return {
            "paused": self.paused,
            "reason": self.reason,
            "rss_mb": 100.0,
            "cpu_percent": 12.5,
            "max_memory_mb": 512,
            "max_cpu_percent": 80,
        }


# -- NodeMetrics ----------------------------------------------------------------


class ExecutionCountTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = NodeMetrics(self.clock, 1)

    def test_final_records_are_counted_by_state(self) -> None:
        """Each final record adds one to its state's counter."""
        for state in ("succeeded", "succeeded", "failed"):
            self.metrics.on_execution(record(state=state))
        samples = scrape(self.metrics)
        self.assertEqual(
            value(samples, "scheduler0_executions_finished_total", state="succeeded"), 2
        )
        self.assertEqual(value(samples, "scheduler0_executions_finished_total", state="failed"), 1)
        self.assertEqual(value(samples, "scheduler0_executions_finished_total", state="skipped"), 0)

    def test_skipped_records_are_counted_by_reason(self) -> None:
        """A skipped record counts under its skip_reason, known in advance or not."""
        self.metrics.on_execution(record(state="skipped", skip_reason="queue_full"))
        self.metrics.on_execution(record(state="skipped", skip_reason="queue_full"))
        self.metrics.on_execution(record(state="skipped", skip_reason="something_new"))
        samples = scrape(self.metrics)
        self.assertEqual(value(samples, "scheduler0_slots_skipped_total", reason="queue_full"), 2)
        self.assertEqual(
            value(samples, "scheduler0_slots_skipped_total", reason="something_new"), 1
        )
        self.assertEqual(
            value(samples, "scheduler0_slots_skipped_total", reason="outside_catch_up_window"), 0
        )
        self.assertEqual(value(samples, "scheduler0_executions_finished_total", state="skipped"), 3)

    def test_failure_notifications_are_counted_by_result(self) -> None:
        """The notifier's sent, undelivered and dropped notifications are counters."""

        class Notifier:
            sent, undelivered, dropped = 5, 2, 1

        metrics = NodeMetrics(self.clock, 1, notifier=Notifier())
        samples = scrape(metrics)
        for result, count in (("sent", 5), ("undelivered", 2), ("dropped", 1)):
            self.assertEqual(
                value(samples, "scheduler0_failure_notifications_total", result=result), count
            )
        # A node without a notifier (none wired in) has no such series.
        self.assertIsNone(
            value(scrape(self.metrics), "scheduler0_failure_notifications_total", result="sent")
        )

    def test_non_final_records_are_ignored(self) -> None:
        """A running record is no outcome: nothing counts it."""
        self.metrics.on_execution(record(state="running"))
        samples = scrape(self.metrics)
        for state in ("succeeded", "failed", "skipped"):
            self.assertEqual(value(samples, "scheduler0_executions_finished_total", state=state), 0)
        self.assertEqual(value(samples, "scheduler0_job_series_jobs"), 0)

    def test_lateness_lands_in_its_bucket(self) -> None:
        """A first attempt 30 ms after its slot is in the 50 ms bucket, not the 25 ms one."""
        self.metrics.on_started(started("job-1", 100.0), 100.03)
        self.metrics.on_started(started("job-1", 200.0), 200.0005)
        samples = scrape(self.metrics)
        name = "scheduler0_execution_lateness_seconds_bucket"
        self.assertEqual(value(samples, name, le="0.001"), 1)
        self.assertEqual(value(samples, name, le="0.025"), 1)
        self.assertEqual(value(samples, name, le="0.05"), 2)
        self.assertEqual(value(samples, name, le="+Inf"), 2)
        self.assertEqual(value(samples, "scheduler0_execution_lateness_seconds_count"), 2)
        self.assertAlmostEqual(
            value(samples, "scheduler0_execution_lateness_seconds_sum"), 0.0305, places=6
        )

    def test_lateness_buckets_span_a_millisecond_to_a_minute(self) -> None:
        """The histogram's bounds run from 1 ms to 60 s."""
        self.assertEqual((LATENCY_BUCKETS[0], LATENCY_BUCKETS[-1]), (0.001, 60.0))
        samples = scrape(self.metrics)
        bounds = {
            dict(labels)["le"]
            for name, labels in samples
            if name == "scheduler0_execution_lateness_seconds_bucket"
        }
        self.assertIn("0.001", bounds)
        self.assertIn("60.0", bounds)

    def test_a_delivery_without_a_slot_instant_is_not_measured(self) -> None:
        """Lateness needs scheduled_s; a delivery without it is left out."""
        self.metrics.on_started(make_delivery(1), 100.0)
        self.assertEqual(
            value(scrape(self.metrics), "scheduler0_execution_lateness_seconds_count"), 0
        )

    def test_posts_are_timed_by_status_class(self) -> None:
        """Each POST lands in its status class; no HTTP answer is "error"."""
        self.metrics.on_post(0.004, 200, 0)
        self.metrics.on_post(0.2, 503, 3)
        self.metrics.on_post(0.1, 500, 0)
        self.metrics.on_post(1.5, None, 2)
        self.metrics.on_post(0.01, 404, 0)
        self.metrics.on_post(0.01, 302, 0)
        samples = scrape(self.metrics)
        count = "scheduler0_callback_duration_seconds_count"
        self.assertEqual(value(samples, count, status_class="2xx"), 1)
        self.assertEqual(value(samples, count, status_class="3xx"), 1)
        self.assertEqual(value(samples, count, status_class="4xx"), 1)
        self.assertEqual(value(samples, count, status_class="5xx"), 2)
        self.assertEqual(value(samples, count, status_class="error"), 1)
        self.assertEqual(
            value(
                samples, "scheduler0_callback_duration_seconds_bucket", status_class="5xx", le="0.1"
            ),
            1,
        )
        self.assertEqual(value(samples, "scheduler0_callback_retries_total"), 5)

    def test_each_node_has_its_own_registry(self) -> None:
        """Two nodes in one process count apart (no global registry)."""
        other = NodeMetrics(self.clock, 2)
        self.metrics.on_execution(record())
        self.assertEqual(
            value(scrape(other), "scheduler0_executions_finished_total", state="succeeded"), 0
        )
        self.assertEqual(
            value(scrape(self.metrics), "scheduler0_executions_finished_total", state="succeeded"),
            1,
        )

    def test_negative_job_series_limit_is_refused(self) -> None:
        """max_job_series below 0 is a clear error naming it."""
        with self.assertRaises(ValueError) as caught:
            NodeMetrics(self.clock, 1, max_job_series=-1)
        self.assertIn("max_job_series", str(caught.exception))

    def test_every_metric_has_help_and_the_prefix(self) -> None:
        """Every family is named scheduler0_* and says what it is."""
        metrics = NodeMetrics(
            self.clock,
            1,
            scheduler=FakeScheduler(),
            executor=FakeExecutor(),
            guard=FakeGuard(),
            proposer=FakeProposer(),
        )
        metrics.on_execution(record())
        families = list(text_string_to_metric_families(metrics.exposition().decode()))
        self.assertGreater(len(families), 20)
        for family in families:
            self.assertTrue(family.name.startswith("scheduler0_"), family.name)
            self.assertGreater(len(family.documentation), 15, family.name)


class PerJobSeriesTests(SynchronousTestCase):
    def test_jobs_get_series_up_to_the_limit(self) -> None:
        """The first jobs seen get series; later ones count in the totals and as refused."""
        metrics = NodeMetrics(Clock(), 1, max_job_series=2)
        for job in ("a", "b", "c", "a", "c"):
            metrics.on_execution(record(job))
        metrics.on_execution(record("b", state="failed"))
        metrics.on_started(started("a", 10.0), 10.25)
        metrics.on_started(started("c", 10.0), 10.5)
        samples = scrape(metrics)
        job = "scheduler0_job_executions_total"
        self.assertEqual(value(samples, job, job_uuid="a", state="succeeded"), 2)
        self.assertEqual(value(samples, job, job_uuid="b", state="succeeded"), 1)
        self.assertEqual(value(samples, job, job_uuid="b", state="failed"), 1)
        self.assertEqual(value(samples, job, job_uuid="a", state="skipped"), 0)
        self.assertIsNone(value(samples, job, job_uuid="c", state="succeeded"))
        self.assertEqual(value(samples, "scheduler0_job_last_lateness_seconds", job_uuid="a"), 0.25)
        self.assertIsNone(value(samples, "scheduler0_job_last_lateness_seconds", job_uuid="b"))
        self.assertIsNone(value(samples, "scheduler0_job_last_lateness_seconds", job_uuid="c"))
        self.assertEqual(value(samples, "scheduler0_job_series_refused_total"), 3)
        self.assertEqual(value(samples, "scheduler0_job_series_jobs"), 2)
        self.assertEqual(value(samples, "scheduler0_job_series_limit"), 2)
        self.assertEqual(
            value(samples, "scheduler0_executions_finished_total", state="succeeded"), 5
        )

    def test_label_values_are_escaped(self) -> None:
        """A job id with a quote, backslash or newline reads back exactly."""
        odd = 'odd"job\\id\nx'
        metrics = NodeMetrics(Clock(), 1)
        metrics.on_execution(record(odd))
        metrics.on_started(started(odd, 10.0), 10.5)
        samples = scrape(metrics)
        self.assertEqual(
            value(samples, "scheduler0_job_executions_total", job_uuid=odd, state="succeeded"), 1
        )
        self.assertEqual(value(samples, "scheduler0_job_last_lateness_seconds", job_uuid=odd), 0.5)

    def test_zero_turns_per_job_series_off(self) -> None:
        """With a limit of 0 no job gets series and nothing is counted as refused."""
        metrics = NodeMetrics(Clock(), 1, max_job_series=0)
        metrics.on_execution(record("a"))
        metrics.on_started(started("a", 10.0), 10.1)
        samples = scrape(metrics)
        self.assertFalse([k for k in samples if k[0].startswith("scheduler0_job_executions")])
        self.assertEqual(value(samples, "scheduler0_job_series_refused_total"), 0)
        self.assertEqual(
            value(samples, "scheduler0_executions_finished_total", state="succeeded"), 1
        )

    def test_a_deleted_jobs_series_are_removed_and_its_place_freed(self) -> None:
        """
        Deleting a job removes its series; events that follow the delete (its
        cancelled deliveries) do not bring them back; a new job takes the place.
        """
        metrics = NodeMetrics(Clock(), 1, max_job_series=1)
        metrics.on_execution(record("a"))
        metrics.on_applied(*applied("delete_job", {"uuid": "a"}))
        metrics.on_execution(record("a", state="skipped", skip_reason="job_deleted"))
        metrics.on_execution(record("b"))
        samples = scrape(metrics)
        job = "scheduler0_job_executions_total"
        self.assertIsNone(value(samples, job, job_uuid="a", state="succeeded"))
        self.assertEqual(value(samples, job, job_uuid="b", state="succeeded"), 1)
        self.assertEqual(value(samples, "scheduler0_job_series_refused_total"), 0)

    def test_deleting_a_project_removes_its_jobs_series(self) -> None:
        """delete_project's deleted_jobs lose their series."""
        metrics = NodeMetrics(Clock(), 1)
        for job in ("a", "b", "c"):
            metrics.on_execution(record(job))
        metrics.on_applied(*applied("delete_project", {"deleted_jobs": ["a", "b"]}))
        self.assertEqual(set(metrics.job_series()), {"c"})

    def test_rejected_changes_are_ignored(self) -> None:
        """A delete the state machine rejected removes nothing."""
        metrics = NodeMetrics(Clock(), 1)
        metrics.on_execution(record("a"))
        metrics.on_applied(Command("delete_job", {}), Result(False, code="not_found"))
        self.assertEqual(set(metrics.job_series()), {"a"})


class NodeStateTests(SynchronousTestCase):
    def test_a_single_node_reports_itself_leader_of_term_one(self) -> None:
        """Without a cluster the node is the leader, term 1, its own leader, with a lease."""
        metrics = NodeMetrics(Clock(), 4, proposer=FakeProposer(applied_index=17))
        samples = scrape(metrics)
        self.assertEqual(value(samples, "scheduler0_raft_role", role="leader"), 1)
        self.assertEqual(value(samples, "scheduler0_raft_role", role="follower"), 0)
        self.assertEqual(value(samples, "scheduler0_raft_term"), 1)
        self.assertEqual(value(samples, "scheduler0_raft_leader_id"), 4)
        self.assertEqual(value(samples, "scheduler0_raft_commit_index"), 17)
        self.assertEqual(value(samples, "scheduler0_raft_applied_index"), 17)
        self.assertEqual(value(samples, "scheduler0_cluster_peers"), 0)
        self.assertEqual(value(samples, "scheduler0_lease_valid"), 1)
        info = [labels for name, labels in samples if name == "scheduler0_node_info"]
        self.assertEqual(dict(info[0])["node_id"], "4")

    def test_a_cluster_node_reports_its_raft_view(self) -> None:
        """Role, term, indexes and leader come from the cluster node's status."""
        cluster = FakeCluster(role="follower", term=6, leader_id=2)
        samples = scrape(NodeMetrics(Clock(), 1, cluster=cluster))
        self.assertEqual(value(samples, "scheduler0_raft_role", role="follower"), 1)
        self.assertEqual(value(samples, "scheduler0_raft_role", role="leader"), 0)
        self.assertEqual(value(samples, "scheduler0_raft_term"), 6)
        self.assertEqual(value(samples, "scheduler0_raft_leader_id"), 2)
        self.assertEqual(value(samples, "scheduler0_raft_commit_index"), 40)
        self.assertEqual(value(samples, "scheduler0_raft_applied_index"), 39)
        self.assertEqual(value(samples, "scheduler0_lease_valid"), 1)
        cluster.leader_id = None
        cluster.role = "candidate"
        samples = scrape(NodeMetrics(Clock(), 1, cluster=cluster))
        self.assertEqual(value(samples, "scheduler0_raft_leader_id"), 0)
        self.assertEqual(value(samples, "scheduler0_raft_role", role="candidate"), 1)
        self.assertEqual(value(samples, "scheduler0_lease_valid"), 0)

    def test_the_entry_version_the_cluster_writes_and_the_one_this_node_reads(self) -> None:
        """
        During a rolling upgrade the cluster writes an older entry version than
        this node reads (README, Upgrading); NaN before the node knows it.
        """
        samples = scrape(NodeMetrics(Clock(), 1, cluster=FakeCluster(entry_version=1)))
        self.assertEqual(value(samples, "scheduler0_entry_version"), 1)
        self.assertEqual(value(samples, "scheduler0_reads_entry_version"), ENTRY_VERSION)
        samples = scrape(NodeMetrics(Clock(), 1, cluster=FakeCluster(entry_version=None)))
        self.assertTrue(math.isnan(value(samples, "scheduler0_entry_version")))

    def test_peers_are_reachable_when_heard_within_the_election_timeout(self) -> None:
        """A peer heard 0.4 s ago is reachable, one heard 0.6 s ago (past 0.5 s) is not."""
        cluster = FakeCluster(now=1000.0, heard={2: 999.6, 3: 999.4}, members=(1, 2, 3))
        samples = scrape(NodeMetrics(Clock(), 1, cluster=cluster))
        self.assertEqual(value(samples, "scheduler0_cluster_peers"), 2)
        self.assertEqual(value(samples, "scheduler0_cluster_peers_reachable"), 1)
        cluster._heard[3] = 999.9
        samples = scrape(NodeMetrics(Clock(), 1, cluster=cluster))
        self.assertEqual(value(samples, "scheduler0_cluster_peers_reachable"), 2)

    def test_jobs_and_executor_gauges(self) -> None:
        """Active and owned jobs, queue depth, in-flight POSTs and worker use are read live."""
        executor = FakeExecutor(max_workers=8, depth=5, posts=2)
        metrics = NodeMetrics(Clock(), 1, scheduler=FakeScheduler(4, 3), executor=executor)
        samples = scrape(metrics)
        self.assertEqual(value(samples, "scheduler0_jobs_active"), 4)
        self.assertEqual(value(samples, "scheduler0_jobs_owned"), 3)
        self.assertEqual(value(samples, "scheduler0_executor_queue_depth"), 5)
        self.assertEqual(value(samples, "scheduler0_executor_in_flight_posts"), 2)
        self.assertEqual(value(samples, "scheduler0_executor_retrying"), 1)
        self.assertEqual(value(samples, "scheduler0_executor_worker_utilization_ratio"), 0.25)
        executor.posts = 8
        samples = scrape(metrics)
        self.assertEqual(value(samples, "scheduler0_executor_worker_utilization_ratio"), 1.0)

    def test_folded_records_are_counted(self) -> None:
        """Shed slots recorded as one while the writer was behind are counted."""

        class Executions:
            folded = 7

        metrics = NodeMetrics(Clock(), 1, scheduler=FakeScheduler(4, 3), executions=Executions())
        samples = scrape(metrics)
        self.assertEqual(value(samples, "scheduler0_execution_records_folded_total"), 7)

    def test_resource_guard_state_and_readings(self) -> None:
        """Paused, each reason over its limit, and the readings against their limits."""
        guard = FakeGuard()
        metrics = NodeMetrics(Clock(), 1, guard=guard)
        samples = scrape(metrics)
        self.assertEqual(value(samples, "scheduler0_resource_guard_paused"), 0)
        self.assertEqual(value(samples, "scheduler0_resource_guard_pause_reason", reason="cpu"), 0)
        self.assertEqual(value(samples, "scheduler0_resource_memory_rss_bytes"), 100 * 2**20)
        self.assertEqual(value(samples, "scheduler0_resource_memory_limit_bytes"), 512 * 2**20)
        self.assertEqual(value(samples, "scheduler0_resource_cpu_usage_percent"), 12.5)
        self.assertEqual(value(samples, "scheduler0_resource_cpu_limit_percent"), 80)
        guard.paused = True
        guard.reason = "memory 500/512 MB (98%): pauses at >= 95%; cpu 90% (5 s average): ..."
        samples = scrape(metrics)
        self.assertEqual(value(samples, "scheduler0_resource_guard_paused"), 1)
        reason = "scheduler0_resource_guard_pause_reason"
        self.assertEqual(value(samples, reason, reason="memory"), 1)
        self.assertEqual(value(samples, reason, reason="cpu"), 1)
        guard.reason = "cpu 90% (5 s average): pauses above 80%"
        samples = scrape(metrics)
        self.assertEqual(value(samples, reason, reason="memory"), 0)
        self.assertEqual(value(samples, reason, reason="cpu"), 1)

    def test_readiness_and_its_reasons(self) -> None:
        """scheduler0_ready is 1 without reasons; each reason of not being ready is a 1."""
        reasons: list[dict] = []
        metrics = NodeMetrics(Clock(), 1, readiness=lambda: reasons)
        samples = scrape(metrics)
        self.assertEqual(value(samples, "scheduler0_ready"), 1)
        name = "scheduler0_not_ready_reason"
        self.assertEqual(value(samples, name, reason="no_quorum"), 0)
        reasons.extend([{"code": "no_leader", "message": "m"}, {"code": "lease_lapsed"}])
        samples = scrape(metrics)
        self.assertEqual(value(samples, "scheduler0_ready"), 0)
        self.assertEqual(value(samples, name, reason="no_leader"), 1)
        self.assertEqual(value(samples, name, reason="lease_lapsed"), 1)
        self.assertEqual(value(samples, name, reason="scheduling_paused"), 0)

    def test_a_failing_part_leaves_the_rest_of_the_scrape(self) -> None:
        """A part that raises drops its own metrics only, and the failure is logged."""

        class Broken(FakeExecutor):
            def queue_depth(self) -> int:
                raise RuntimeError("boom")

        metrics = NodeMetrics(Clock(), 1, executor=Broken(), proposer=FakeProposer())
        samples = scrape(metrics)
        self.assertIsNone(value(samples, "scheduler0_executor_queue_depth"))
        self.assertEqual(value(samples, "scheduler0_raft_term"), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ProgressTests(SynchronousTestCase):
    def build(self) -> tuple[NodeMetrics, Clock, FakeProgress]:
        clock = Clock()
        clock.advance(START.timestamp())
        progress = FakeProgress()
        metrics = NodeMetrics(clock, 1, cluster=FakeCluster(), scheduler=progress)
        metrics.start()
        self.addCleanup(metrics.stop)
        return metrics, clock, progress

    def lag(self, metrics: NodeMetrics) -> tuple[float | None, float | None]:
        samples = scrape(metrics)
        return (
            value(samples, "scheduler0_progress_lag_seconds"),
            value(samples, "scheduler0_progress_committed_lag_seconds"),
        )

    def test_the_lag_of_this_nodes_progress_and_of_what_was_committed(self) -> None:
        """
        The progress lag is the age of the oldest slot this node still owes;
        the committed lag the age of its last mark the cluster committed
        (another node's marks change nothing here).
        """
        metrics, clock, progress = self.build()
        self.assertEqual(self.lag(metrics), (0.0, 0.0))
        progress.mark = (format_instant(START), 5, 5)
        clock.advance(1.5)
        self.assertEqual(self.lag(metrics), (1.5, 0.0))
        metrics.on_applied(
            *applied(
                "record_progress", {"kept": 2}, marks=[[2, "x", 1, 1], [1, progress.mark[0], 5, 5]]
            )
        )
        clock.advance(2)
        self.assertEqual(self.lag(metrics), (3.5, 3.5))
        metrics.on_applied(*applied("record_progress", {"kept": 1}, marks=[[2, "y", 1, 2]]))
        self.assertEqual(self.lag(metrics)[1], 3.5)

    def test_a_single_node_has_no_progress_metrics(self) -> None:
        """Without a cluster nothing is committed and no progress metric is given."""
        metrics = NodeMetrics(Clock(), 1, scheduler=FakeProgress())
        metrics.start()
        self.assertEqual(self.lag(metrics), (None, None))


# -- the hooks ---------------------------------------------------------------------


class SchedulerObserverTests(SynchronousTestCase):
    """The scheduler's observers (with the fakes of tests.support.scheduler)."""

    def build(
        self,
        jobs: list[dict],
        last_slots: dict[str, str] | None = None,
        now: Any = START,
        observers: list[Any] | None = None,
    ) -> SchedulerService:
        self.clock = Clock()
        self.clock.advance(now.timestamp())
        self.executions = SchedulerExecutions(last_slots)
        self.executor = SchedulerExecutor()
        self.scheduler = SchedulerService(
            self.clock,
            SchedulerState(jobs),
            SchedulerProposer(),
            self.executions,
            self.executor,
            node_id=7,
            history_per_job=5,
        )
        self.scheduler.execution_observers.extend(observers or ())
        self.scheduler.startService()
        return self.scheduler

    def test_outcomes_reach_execution_observers_as_recorded(self) -> None:
        """Each outcome's record, the same dict the store got, reaches every observer once."""
        scheduler = self.build([make_job()])
        seen: list[dict] = []
        scheduler.execution_observers.append(seen.append)
        self.clock.advance(1)
        (delivery,) = self.executor.submitted
        scheduler.on_started(delivery, self.clock.seconds())
        scheduler.on_outcome(
            Outcome(delivery, "failed", 2, 500, "HTTP 500", None, 1.0, self.clock.seconds())
        )
        self.assertEqual(len(seen), 1)
        self.assertIs(seen[0], self.executions.writes[-1])
        self.assertEqual(
            (seen[0]["state"], seen[0]["status_code"], seen[0]["attempts"]), ("failed", 500, 2)
        )

    def test_slots_skipped_by_the_scheduler_reach_execution_observers(self) -> None:
        """Slots older than the catch-up window reach the observers as skipped records."""
        seen: list[dict] = []
        now = START + timedelta(seconds=13)
        self.build(
            [make_job(catch_up_window_s=2.0)],
            last_slots={"job-1": format_instant(START + timedelta(seconds=8))},
            now=now,
            observers=[seen.append],
        )
        self.assertEqual(
            sorted((r["scheduled_at"], r["skip_reason"]) for r in seen),
            [
                (format_instant(START + timedelta(seconds=k)), "outside_catch_up_window")
                for k in (9, 10)
            ],
        )
        for r in seen:
            self.assertIs(self.executions.records[r["execution_id"]], r)

    def test_started_observers_get_the_slot_instant_as_a_number(self) -> None:
        """A start observer gets the delivery, whose scheduled_s is its slot, and the start."""
        scheduler = self.build([make_job()])
        seen: list[tuple[Delivery, float]] = []
        scheduler.started_observers.append(lambda d, at: seen.append((d, at)))
        self.clock.advance(1)
        (delivery,) = self.executor.submitted
        self.assertEqual(delivery.scheduled_s, (START + timedelta(seconds=1)).timestamp())
        scheduler.on_started(delivery, delivery.scheduled_s + 0.003)
        self.assertEqual(len(seen), 1)
        self.assertAlmostEqual(seen[0][1] - seen[0][0].scheduled_s, 0.003)

    def test_a_raising_observer_is_logged_once_and_firing_goes_on(self) -> None:
        """A raising observer is logged once; records and the other observers go on."""
        scheduler = self.build([make_job()])
        seen: list[dict] = []

        def broken(record: dict) -> None:
            raise ValueError("observer bug")

        scheduler.execution_observers.extend([broken, seen.append])
        for _ in range(3):
            self.clock.advance(1)
        for delivery in self.executor.submitted:
            scheduler.on_outcome(
                Outcome(delivery, "succeeded", 1, 200, None, None, 1.0, self.clock.seconds())
            )
        self.assertEqual(len(seen), 3)
        self.assertEqual(len(self.executions.writes), 3)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.executor.submitted), 4)


class ExecutorObserverTests(SynchronousTestCase):
    def test_each_post_is_reported_with_its_time_status_and_retries(self) -> None:
        """A POST reports how long it took, its status, and how many deliveries will retry."""
        posts: list[tuple[float, int | None, int]] = []
        h = ExecutorHarness(post_observer=lambda *a: posts.append(a))
        h.submit(make_delivery(1), make_delivery(2))
        h.turn()
        h.clock.advance(0.25)
        h.client.requests[0].respond(503)
        self.assertEqual(posts, [(0.25, 503, 2)])
        h.clock.advance(60)
        h.client.requests[1].respond(200)
        self.assertEqual(posts[1], (0.0, 200, 0))

    def test_a_post_without_an_answer_reports_no_status(self) -> None:
        """A refused connection is reported with status None."""
        from twisted.internet.error import ConnectionRefusedError

        posts: list[tuple[float, int | None, int]] = []
        h = ExecutorHarness(post_observer=lambda *a: posts.append(a), retry_delay_s=1.0)
        h.submit(make_delivery(1, retry_max=0))
        h.turn()
        h.client.requests[0].fail(ConnectionRefusedError())
        self.assertEqual(posts, [(0.0, None, 0)])
        self.assertEqual(h.outcomes[0].state, "failed")

    def test_a_raising_post_observer_is_logged_once(self) -> None:
        """A broken post_observer does not change outcomes and is logged once."""

        def broken(*args: Any) -> None:
            raise ValueError("observer bug")

        h = ExecutorHarness(post_observer=broken)
        for n in range(2):
            h.submit(make_delivery(n))
            h.turn()
            h.client.requests[-1].respond(200)
        self.assertEqual([o.state for o in h.outcomes], ["succeeded", "succeeded"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


# -- GET /metrics in memory -------------------------------------------------------------


class MetricsRouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.metrics = NodeMetrics(Clock(), 1, proposer=FakeProposer())
        self.metrics.on_execution(record())

    def test_client_credentials_get_the_text_format(self) -> None:
        """A client credential gets 200, the 0.0.4 text format, and the counts."""
        h = APIHarness(metrics=self.metrics)
        for path in ("/metrics", "/api/v1/metrics"):
            status, headers, body = h.request("GET", path)
            self.assertEqual(status, 200)
            self.assertEqual(headers["content-type"], CONTENT_TYPE)
            samples = parse(body.decode())
            self.assertEqual(
                value(samples, "scheduler0_executions_finished_total", state="succeeded"), 1
            )

    def test_admin_basic_auth_is_accepted(self) -> None:
        """HTTP Basic admin credentials (a Prometheus basic_auth scrape) are accepted."""
        status, _, _ = APIHarness(metrics=self.metrics).request("GET", "/metrics", auth="admin")
        self.assertEqual(status, 200)

    def test_no_credentials_is_401_json(self) -> None:
        """Without credentials the answer is the API's 401 JSON error."""
        status, headers, body = APIHarness(metrics=self.metrics).request(
            "GET", "/metrics", auth="none"
        )
        self.assertEqual(status, 401)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertFalse(body["success"])

    def test_a_wrong_password_is_401(self) -> None:
        """Wrong Basic credentials are refused."""
        token = b64encode(b"admin:wrong").decode()
        status, _, _ = APIHarness(metrics=self.metrics).request(
            "GET", "/metrics", auth="none", headers={"Authorization": f"Basic {token}"}
        )
        self.assertEqual(status, 401)

    def test_the_rate_limit_applies(self) -> None:
        """Scrapes count against the credential's request rate like any route."""
        h = APIHarness(metrics=self.metrics)
        h.api.auth.rate_limiter = RateLimiter(h.clock, 1, 1)
        self.assertEqual(h.request("GET", "/metrics")[0], 200)
        status, headers, _ = h.request("GET", "/metrics")
        self.assertEqual(status, 429)
        self.assertIn("retry-after", headers)

    def test_without_metrics_the_route_is_404(self) -> None:
        """An API built without metrics says so with a 404."""
        status, _, body = APIHarness().request("GET", "/metrics")
        self.assertEqual(status, 404)
        self.assertIn("metrics are not served", str(body))

    def test_metrics_are_not_in_the_route_table(self) -> None:
        """/metrics stays out of the route table, so out of the OpenAPI document."""
        from scheduler0.api.routes import ROUTES

        self.assertNotIn("/metrics", [route.path for route in ROUTES])


# -- real nodes ----------------------------------------------------------------------------


class SingleNodeMetricsTests(TestCase):
    timeout = 120

    async def test_a_real_node_reports_what_happened(self) -> None:
        """
        A real node with two jobs, one of whose callbacks answers 500, shows
        at /metrics: executions by state, lateness in its buckets, callback
        latency by status class, retries, role and term, and per-job series.
        """
        from twisted.internet import reactor

        from harness.process import http_client, ok_and_failing_jobs
        from harness.waiting import wait_for

        http = http_client(reactor)
        scene = await ok_and_failing_jobs(
            self, reactor, "JobExecutionRetryDelay: 0.05\n", retry_max=1
        )
        node, headers, jobs = scene.node, scene.headers, scene.jobs

        async def get_metrics(**kwargs: Any) -> tuple[int, str, str]:
            response = await http.get(node.url + "/metrics", **kwargs)
            content_type = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
            return response.code, content_type, (await response.text())

        async def enough() -> Samples | None:
            code, _, text = await get_metrics(headers=headers)
            samples = parse(text)
            job = "scheduler0_job_executions_total"
            done = value(samples, job, job_uuid=jobs["fail"], state="failed")
            ok = value(samples, job, job_uuid=jobs["ok"], state="succeeded")
            return samples if (done or 0) >= 2 and (ok or 0) >= 2 else None

        samples = await wait_for(reactor, enough, timeout=30, what="two outcomes of each job")
        succeeded = value(samples, "scheduler0_executions_finished_total", state="succeeded")
        failed = value(samples, "scheduler0_executions_finished_total", state="failed")
        self.assertGreaterEqual(succeeded, 2)
        self.assertGreaterEqual(failed, 2)
        # Per-job series agree with the totals (two jobs, both under the limit).
        job = "scheduler0_job_executions_total"
        self.assertEqual(value(samples, job, job_uuid=jobs["ok"], state="succeeded"), succeeded)
        self.assertEqual(value(samples, job, job_uuid=jobs["fail"], state="failed"), failed)
        self.assertEqual(value(samples, job, job_uuid=jobs["fail"], state="succeeded"), 0)
        for name in ("ok", "fail"):
            late = value(samples, "scheduler0_job_last_lateness_seconds", job_uuid=jobs[name])
            self.assertIsNotNone(late)
            self.assertTrue(0 <= late < 1, late)
        # First attempts are in the lateness histogram, all under a second late.
        # (One whose answer came before its start was reported is left out.)
        count = value(samples, "scheduler0_execution_lateness_seconds_count")
        self.assertGreaterEqual(count, 2)
        self.assertEqual(
            value(samples, "scheduler0_execution_lateness_seconds_bucket", le="1.0"), count
        )
        # The failing job's POSTs: 500s, each retried once (retry_max 1).
        duration = "scheduler0_callback_duration_seconds_count"
        self.assertGreaterEqual(value(samples, duration, status_class="5xx"), 2 * failed)
        self.assertGreaterEqual(value(samples, duration, status_class="2xx"), succeeded)
        self.assertEqual(value(samples, duration, status_class="error"), 0)
        self.assertGreaterEqual(value(samples, "scheduler0_callback_retries_total"), failed)
        # A single node: the leader of term 1, with its lease.
        self.assertEqual(value(samples, "scheduler0_raft_role", role="leader"), 1)
        self.assertEqual(value(samples, "scheduler0_raft_term"), 1)
        self.assertEqual(value(samples, "scheduler0_lease_valid"), 1)
        self.assertEqual(value(samples, "scheduler0_jobs_active"), 2)
        self.assertGreater(value(samples, "scheduler0_raft_applied_index"), 0)
        self.assertEqual(value(samples, "scheduler0_ready"), 1)
        # A single node writes the entry version of its release.
        self.assertEqual(value(samples, "scheduler0_entry_version"), ENTRY_VERSION)

        code, content_type, _ = await get_metrics(headers=headers)
        self.assertEqual((code, content_type), (200, CONTENT_TYPE))
        code, content_type, text = await get_metrics()
        self.assertEqual((code, content_type), (401, "application/json"))
        self.assertIn("authentication required", text)
        admin = b64encode(b"admin:admin-password").decode()
        code, _, _ = await get_metrics(headers={"Authorization": f"Basic {admin}"})
        self.assertEqual(code, 200)


class ClusterMetricsTests(TestCase):
    timeout = 150

    async def test_one_leader_and_one_term_across_the_cluster(self) -> None:
        """Scraping three real nodes: exactly one reports role leader, all the same term."""
        from twisted.internet import reactor

        from harness.cluster import Cluster
        from harness.process import http_client
        from harness.waiting import wait_for

        cluster = Cluster(reactor, os.path.abspath(self.mktemp()), 3, direct=True)
        self.addCleanup(cluster.close)
        await cluster.prepare()
        await cluster.start()
        await cluster.wait_leader(30)
        admin = {"Authorization": "Basic " + b64encode(b"admin:admin-password").decode()}
        http = http_client(reactor)

        async def views() -> list[Samples] | None:
            out = []
            for node_id in cluster.ids:
                url = f"http://127.0.0.1:{cluster.addresses[node_id].http_port}/metrics"
                response = await http.get(url, headers=admin, timeout=5)
                if response.code != 200:
                    return None
                out.append(parse(await response.text()))
            leaders = [value(s, "scheduler0_raft_role", role="leader") for s in out]
            terms = {value(s, "scheduler0_raft_term") for s in out}
            if sorted(leaders) != [0, 0, 1] or len(terms) != 1:
                return None
            # Under load a follower's answer can arrive after the window the
            # leader counts it reachable in: wait for the steady state.
            reachable = [value(s, "scheduler0_cluster_peers_reachable") for s in out]
            if max(reachable) < 2:
                return None
            return out

        samples = await wait_for(reactor, views, timeout=30, what="one leader, one term")
        leader_ids = {value(s, "scheduler0_raft_leader_id") for s in samples}
        self.assertEqual(len(leader_ids), 1)
        (leader_id,) = leader_ids
        for node_id, s in zip(cluster.ids, samples, strict=True):
            self.assertEqual(value(s, "scheduler0_cluster_peers"), 2)
            is_leader = value(s, "scheduler0_raft_role", role="leader") == 1
            self.assertEqual(is_leader, node_id == leader_id)
            follower = value(s, "scheduler0_raft_role", role="follower")
            self.assertEqual(follower, 0 if is_leader else 1)
            self.assertGreaterEqual(value(s, "scheduler0_raft_term"), 1)
            self.assertIsNotNone(value(s, "scheduler0_progress_lag_seconds"))
            # The leader hears from both followers; a follower at least from the leader.
            self.assertGreaterEqual(
                value(s, "scheduler0_cluster_peers_reachable"), 2 if is_leader else 1
            )
