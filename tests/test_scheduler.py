"""
Tests for L{scheduler0.scheduler.service}: slots fire at their instant on a
single timer, follow job changes, and are caught up (or recorded as skipped)
after a restart.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.clockwatch import ClockStep
from scheduler0.delivery import DEFAULT_POLICY, Outcome
from scheduler0.scheduler import service as scheduler_service
from scheduler0.scheduler.service import PREPARE_LEAD_MIN_S, SchedulerService
from scheduler0.scheduler.spec import execution_id
from scheduler0.timeutil import format_instant, parse_instant
from tests.support.scheduler import (
    START,
    FakeExecutions,
    FakeExecutor,
    FakeProposer,
    FakeState,
    make_job,
)


class SchedulerTests(SynchronousTestCase):
    def build(
        self, jobs: list[dict], last_slots: dict[str, str] | None = None, now: datetime = START
    ):
        self.clock = Clock()
        self.clock.advance(now.timestamp())
        self.state = FakeState(jobs)
        self.proposer = FakeProposer()
        self.executions = FakeExecutions(last_slots)
        self.executor = FakeExecutor()
        self.executor.clock = self.clock
        self.scheduler = SchedulerService(
            self.clock,
            self.state,
            self.proposer,
            self.executions,
            self.executor,
            node_id=7,
            history_per_job=5,
        )
        self.scheduler.startService()
        return self.scheduler

    def slots(self) -> list[str]:
        return [d.scheduled_at for d in self.executor.submitted]

    def advance_to_next_call(self) -> None:
        call = min(self.clock.getDelayedCalls(), key=lambda c: c.getTime())
        self.clock.advance(call.getTime() - self.clock.seconds())

    def test_each_batch_starts_at_another_job(self) -> None:
        """
        Slots due together are handed over starting from a different job
        each time, so an overloaded executor shedding the tail of a burst
        does not always drop the same jobs.
        """
        jobs = [make_job(f"job-{n:02d}") for n in range(10)]
        self.build(jobs)
        while len(self.executor.submitted) < 10 * 12:
            self.advance_to_next_call()
        by_second: dict[float, list[str]] = {}
        for at, delivery in zip(self.executor.turns, self.executor.submitted, strict=True):
            by_second.setdefault(at, []).append(delivery.job_uuid)
        batches = list(by_second.values())[:12]
        self.assertEqual({len(b) for b in batches}, {10})
        # An executor that takes only the first 5 of each burst still serves every job.
        served = {uuid for batch in batches for uuid in batch[:5]}
        self.assertEqual(served, {job["uuid"] for job in jobs})

    def test_every_slot_fires_at_its_instant(self) -> None:
        """An C{@every 1s} job fires once per second, each handed over exactly on its slot."""
        self.build([make_job()])
        self.assertEqual(self.executor.submitted, [])
        while len(self.executor.submitted) < 3:
            self.advance_to_next_call()
        expected = [format_instant(START + timedelta(seconds=k)) for k in (1, 2, 3)]
        self.assertEqual(self.slots(), expected)
        self.assertEqual(
            self.executor.turns, [(START + timedelta(seconds=k)).timestamp() for k in (1, 2, 3)]
        )

    def test_deliveries_are_prepared_ahead_of_the_instant(self) -> None:
        """The preparation timer runs a lead before the slot; nothing is sent before the slot."""
        self.build([make_job()])
        (call,) = self.clock.getDelayedCalls()
        slot = (START + timedelta(seconds=1)).timestamp()
        self.assertEqual(call.getTime(), slot - PREPARE_LEAD_MIN_S)
        self.advance_to_next_call()
        self.assertEqual(self.executor.submitted, [])
        self.assertIn(slot, [c.getTime() for c in self.clock.getDelayedCalls()])
        self.assertEqual(
            self.scheduler.next_run_at(make_job()), format_instant(START + timedelta(seconds=1))
        )
        self.clock.advance(slot - self.clock.seconds())
        self.assertEqual(len(self.executor.submitted), 1)

    def test_job_deleted_within_the_lead_fires_nothing(self) -> None:
        """A prepared slot of a job deleted before its instant is not handed over."""
        self.build([make_job()])
        self.advance_to_next_call()
        self.proposer.applied("delete_job", {"uuid": "job-1"})
        self.clock.advance(5)
        self.assertEqual(self.executor.submitted, [])

    def test_job_changed_within_the_lead_fires_as_changed(self) -> None:
        """A prepared slot of a job changed before its instant fires once, with the new data."""
        job = make_job()
        self.build([job])
        self.advance_to_next_call()
        self.proposer.applied("update_job", dict(job, data={"n": 2}))
        self.clock.advance(1)
        self.assertEqual(self.slots(), [format_instant(START + timedelta(seconds=1))])
        self.assertEqual(self.executor.submitted[0].data, {"n": 2})

    def test_stop_drops_prepared_slots(self) -> None:
        """After stopService nothing prepared is handed over (the slots stay owed)."""
        self.build([make_job()])
        self.advance_to_next_call()
        self.successResultOf(self.scheduler.stopService())
        self.clock.advance(5)
        self.assertEqual(self.executor.submitted, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_execution_ids_are_derived_from_job_and_slot(self) -> None:
        """Each delivery's id is execution_id(job uuid, slot) and distinct per slot."""
        self.build([make_job()])
        self.clock.advance(3)
        ids = [d.execution_id for d in self.executor.submitted]
        self.assertEqual(len(set(ids)), 3)
        self.assertEqual(
            ids,
            [execution_id("job-1", parse_instant(d.scheduled_at)) for d in self.executor.submitted],
        )

    def test_one_timer_for_all_jobs(self) -> None:
        """However many jobs are active, one timer is pending, a lead before the earliest slot."""
        jobs = [make_job(f"job-{i}", spec=f"@every {i + 1}s") for i in range(50)]
        self.build(jobs)
        calls = self.clock.getDelayedCalls()
        self.assertEqual(len(calls), 1)
        self.assertEqual(
            calls[0].getTime(), (START + timedelta(seconds=1)).timestamp() - PREPARE_LEAD_MIN_S
        )

    def test_slots_due_together_fire_in_one_turn(self) -> None:
        """Jobs with the same slot are all handed over when that instant comes."""
        self.build([make_job(f"job-{i}") for i in range(100)])
        self.clock.advance(1)
        self.assertEqual(len(self.executor.submitted), 100)
        self.assertEqual(set(self.executor.turns), {(START + timedelta(seconds=1)).timestamp()})

    def test_delivery_carries_the_job(self) -> None:
        """A delivery has the job's callback, data, timeout and retry budget."""
        self.build([make_job(data={"x": [1, 2]}, timeout_s=5.0, retry_max=2)])
        self.clock.advance(1)
        (delivery,) = self.executor.submitted
        self.assertEqual(delivery.callback_url, "http://127.0.0.1:9/callback")
        self.assertEqual(delivery.data, {"x": [1, 2]})
        self.assertEqual((delivery.timeout_s, delivery.retry_max), (5.0, 2))
        # The first record is written when the POST goes out, not before.
        self.assertEqual(self.executions.records, {})
        self.scheduler.on_started(delivery, self.clock.seconds())
        self.assertEqual(self.executions.records[delivery.execution_id]["state"], "running")
        self.assertEqual(self.executions.records[delivery.execution_id]["node_id"], 7)

    def test_new_jobs_are_scheduled_when_applied(self) -> None:
        """A job created after start fires from its first slot."""
        self.build([])
        self.clock.advance(0.5)
        at = START + timedelta(seconds=0.5)
        self.proposer.applied("create_jobs", [make_job("new", at=at)])
        self.clock.advance(0.5)
        self.assertEqual(self.slots(), [format_instant(START + timedelta(seconds=1))])

    def test_deleted_job_fires_nothing(self) -> None:
        """After delete_job is applied no further slot of the job fires."""
        self.build([make_job()])
        self.clock.advance(1)
        self.proposer.applied("delete_job", {"uuid": "job-1"})
        self.clock.advance(10)
        self.assertEqual(len(self.executor.submitted), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.executor.cancelled, [("job-1", "job_deleted")])

    def test_cascade_project_delete_stops_its_jobs(self) -> None:
        """Jobs deleted with their project stop firing."""
        self.build([make_job("a"), make_job("b")])
        self.proposer.applied("delete_project", {"uuid": "project-1", "deleted_jobs": ["a", "b"]})
        self.clock.advance(5)
        self.assertEqual(self.executor.submitted, [])
        self.assertEqual(self.executor.cancelled, [("a", "job_deleted"), ("b", "job_deleted")])

    def test_pause_and_resume(self) -> None:
        """A paused job fires nothing; resumed, it fires from the next slot, not the paused ones."""
        job = make_job()
        self.build([job])
        self.clock.advance(1)
        self.proposer.applied("update_job", dict(job, paused=True))
        self.assertEqual(self.executor.cancelled, [("job-1", "job_paused")])
        self.clock.advance(5)
        self.assertEqual(len(self.executor.submitted), 1)
        self.proposer.applied("update_job", dict(job, paused=False))
        self.clock.advance(1)
        self.assertEqual(
            self.slots(), [format_instant(START + timedelta(seconds=k)) for k in (1, 7)]
        )

    def test_spec_change_applies_from_the_next_slot(self) -> None:
        """Changing the spec re-plans the job at once."""
        job = make_job()
        self.build([job])
        self.clock.advance(1)
        changed_at = START + timedelta(seconds=1)
        self.proposer.applied(
            "update_job",
            dict(
                job,
                spec="@every 10s",
                updated_at=format_instant(changed_at),
                anchor_at=format_instant(changed_at),
            ),
        )
        self.clock.advance(9)
        self.assertEqual(len(self.executor.submitted), 1)
        self.clock.advance(1)
        self.assertEqual(self.slots()[-1], format_instant(START + timedelta(seconds=11)))

    def test_catch_up_after_restart_fires_missed_slots_late(self) -> None:
        """Slots missed while down and inside the window fire at once, with their own ids."""
        now = START + timedelta(seconds=10, milliseconds=400)
        last = format_instant(START + timedelta(seconds=5))
        self.build([make_job()], last_slots={"job-1": last}, now=now)
        expected = [format_instant(START + timedelta(seconds=k)) for k in range(6, 11)]
        self.assertEqual(self.slots(), expected)
        self.assertEqual(
            [d.execution_id for d in self.executor.submitted],
            [execution_id("job-1", parse_instant(s)) for s in expected],
        )
        self.clock.advance(0.6)
        self.assertEqual(self.slots()[-1], format_instant(START + timedelta(seconds=11)))

    def test_slots_outside_the_window_are_recorded_skipped(self) -> None:
        """Missed slots older than the catch-up window are recorded as skipped, not fired."""
        now = START + timedelta(seconds=13)
        job = make_job(catch_up_window_s=2.0)
        self.build(
            [job], last_slots={"job-1": format_instant(START + timedelta(seconds=8))}, now=now
        )
        self.assertEqual(
            self.slots(), [format_instant(START + timedelta(seconds=k)) for k in (11, 12, 13)]
        )
        skipped = sorted(
            r["scheduled_at"] for r in self.executions.records.values() if r["state"] == "skipped"
        )
        self.assertEqual(skipped, [format_instant(START + timedelta(seconds=k)) for k in (9, 10)])
        for r in self.executions.records.values():
            if r["state"] == "skipped":
                self.assertEqual(r["skip_reason"], "outside_catch_up_window")

    def test_a_huge_gap_is_bounded(self) -> None:
        """After a long outage a bounded number of skipped records is written; firing resumes."""
        now = START + timedelta(days=1)
        self.build(
            [make_job(catch_up_window_s=1.0)], last_slots={"job-1": format_instant(START)}, now=now
        )
        skipped = [r for r in self.executions.writes if r["state"] == "skipped"]
        self.assertEqual(len(skipped), 5)
        self.assertEqual(
            self.slots(), [format_instant(now - timedelta(seconds=1)), format_instant(now)]
        )

    def test_coalesce_delivers_only_the_latest_missed_slot(self) -> None:
        """
        coalesce: the slots missed while down are delivered as one execution
        for the latest; the others in the window are recorded skipped
        (coalesced), those before it stay outside_catch_up_window.
        """
        now = START + timedelta(seconds=10, milliseconds=400)
        job = make_job(coalesce=True, catch_up_window_s=3.0)
        last = format_instant(START + timedelta(seconds=5))
        self.build([job], last_slots={"job-1": last}, now=now)
        self.assertEqual(self.slots(), [format_instant(START + timedelta(seconds=10))])
        reasons = {
            r["scheduled_at"]: r["skip_reason"]
            for r in self.executions.records.values()
            if r["state"] == "skipped"
        }
        self.assertEqual(
            reasons,
            {
                format_instant(START + timedelta(seconds=6)): "outside_catch_up_window",
                format_instant(START + timedelta(seconds=7)): "outside_catch_up_window",
                format_instant(START + timedelta(seconds=8)): "coalesced",
                format_instant(START + timedelta(seconds=9)): "coalesced",
            },
        )
        # From then on every slot fires as usual.
        self.clock.advance(0.6)
        self.clock.advance(1)
        self.assertEqual(
            self.slots()[1:], [format_instant(START + timedelta(seconds=k)) for k in (11, 12)]
        )

    def test_without_coalesce_every_missed_slot_fires(self) -> None:
        now = START + timedelta(seconds=10, milliseconds=400)
        last = format_instant(START + timedelta(seconds=5))
        self.build([make_job(coalesce=False)], last_slots={"job-1": last}, now=now)
        self.assertEqual(len(self.slots()), 5)

    def test_a_jobs_policy_goes_with_its_deliveries(self) -> None:
        """concurrency_policy and the retry delays of a job reach the executor."""
        job = make_job(concurrency_policy="forbid", retry_delay_s=2.5, retry_max_delay_s=30.0)
        plain = make_job("job-2")
        self.build([job, plain])
        self.clock.advance(1)
        policies = {d.job_uuid: d.policy for d in self.executor.submitted}
        self.assertEqual(
            (
                policies["job-1"].concurrency,
                policies["job-1"].retry_delay_s,
                policies["job-1"].retry_max_delay_s,
            ),
            ("forbid", 2.5, 30.0),
        )
        self.assertIs(policies["job-2"], DEFAULT_POLICY)

    def test_never_fired_job_catches_up_from_creation(self) -> None:
        """A job that never fired before the restart is owed the slots since its creation."""
        now = START + timedelta(seconds=3)
        self.build([make_job()], now=now)
        self.assertEqual(
            self.slots(), [format_instant(START + timedelta(seconds=k)) for k in (1, 2, 3)]
        )

    def test_changes_during_load_are_not_lost(self) -> None:
        """A job created while the scheduler is still loading is scheduled once loading ends."""
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.state = FakeState([])
        loading = self.state.loading = Deferred()
        self.proposer = FakeProposer()
        self.executions = FakeExecutions()
        self.executor = FakeExecutor()
        scheduler = SchedulerService(
            self.clock, self.state, self.proposer, self.executions, self.executor, node_id=1
        )
        scheduler.startService()
        self.proposer.applied("create_jobs", [make_job()])
        loading.callback(None)
        self.clock.advance(1)
        self.assertEqual(len(self.executor.submitted), 1)

    def test_outcome_is_recorded(self) -> None:
        """The executor's outcome becomes the execution's final record."""
        self.build([make_job()])
        self.clock.advance(1)
        (delivery,) = self.executor.submitted
        self.scheduler.on_started(delivery, self.clock.seconds())
        self.assertEqual(self.executions.records[delivery.execution_id]["state"], "running")
        self.scheduler.on_outcome(
            Outcome(
                delivery=delivery,
                state="failed",
                attempts=3,
                status_code=500,
                error="HTTP 500",
                skip_reason=None,
                started_at=self.clock.seconds(),
                finished_at=self.clock.seconds() + 2,
            )
        )
        record = self.executions.records[delivery.execution_id]
        self.assertEqual(
            (record["state"], record["attempts"], record["status_code"], record["error"]),
            ("failed", 3, 500, "HTTP 500"),
        )
        self.assertEqual(record["finished_at"], format_instant(START + timedelta(seconds=3)))

    def test_run_now_delivers_at_once(self) -> None:
        """run_now hands one extra execution, scheduled now, to the executor."""
        job = make_job(spec="0 0 1 1 *")
        self.build([job])
        self.clock.advance(0.25)
        record = self.successResultOf(self.scheduler.run_now(job))
        self.assertEqual(record["scheduled_at"], format_instant(START + timedelta(seconds=0.25)))
        self.assertEqual(len(self.executor.submitted), 1)

    def test_a_run_now_never_takes_a_slots_execution_id(self) -> None:
        """
        A run-now at the very millisecond of one of its job's slots -- one due
        now, or one already sent before the wall clock stepped back -- is
        scheduled a millisecond later, so its execution_id is its own (a
        receiver deduplicating on ids would drop it otherwise); two run-nows
        in one millisecond differ too.
        """
        job = make_job(spec="@every 1s")
        self.build([job])
        self.clock.advance(3.5)
        sent = {d.scheduled_at: d.execution_id for d in self.executor.submitted}
        self.assertEqual(len(sent), 3)
        # The wall clock steps back to the instant of a slot already sent.
        before, after = self.clock.seconds(), (START + timedelta(seconds=1)).timestamp()
        self.clock.rightNow = after
        self.scheduler.clock_stepped(ClockStep(before, after))
        run = self.successResultOf(self.scheduler.run_now(job))
        self.assertEqual(run["scheduled_at"], format_instant(START + timedelta(seconds=1.001)))
        self.assertNotIn(run["execution_id"], sent.values())
        self.assertEqual(
            run["execution_id"], execution_id(job["uuid"], START + timedelta(seconds=1.001))
        )
        # On the millisecond of a slot due now, and twice in that millisecond.
        self.clock.rightNow = (START + timedelta(seconds=5)).timestamp()
        runs = [self.successResultOf(self.scheduler.run_now(job)) for _ in range(2)]
        self.assertEqual(
            [r["scheduled_at"] for r in runs],
            [format_instant(START + timedelta(seconds=s)) for s in (5.001, 5.002)],
        )
        slot_ids = {execution_id(job["uuid"], START + timedelta(seconds=s)) for s in range(10)}
        ids = {run["execution_id"], *(r["execution_id"] for r in runs)}
        self.assertEqual(len(ids), 3)
        self.assertEqual(ids & slot_ids, set())
        # A run-now off the slots keeps its instant; a paused job's slots count too.
        self.clock.rightNow = (START + timedelta(seconds=5.25)).timestamp()
        run = self.successResultOf(self.scheduler.run_now(job))
        self.assertEqual(run["scheduled_at"], format_instant(START + timedelta(seconds=5.25)))
        self.clock.rightNow = (START + timedelta(seconds=7)).timestamp()
        run = self.successResultOf(self.scheduler.run_now(dict(job, uuid="held-elsewhere")))
        self.assertEqual(run["scheduled_at"], format_instant(START + timedelta(seconds=7.001)))

    def test_next_run_at(self) -> None:
        """next_run_at names the coming slot, and nothing for a paused job."""
        job = make_job(spec="*/5 * * * *")
        self.build([job])
        self.assertEqual(
            self.scheduler.next_run_at(job), format_instant(START + timedelta(minutes=5))
        )
        self.assertIsNone(self.scheduler.next_run_at(dict(job, paused=True, uuid="other")))

    def test_restored_state_replaces_the_jobs(self) -> None:
        """After the state is restored from a snapshot the scheduler follows the new jobs."""
        kept, dropped = make_job("kept"), make_job("dropped")
        self.build([kept, dropped])
        self.state.jobs = [kept, make_job("arrived")]
        self.proposer.applied("state_restored", None)
        self.clock.advance(1)
        self.assertEqual(sorted(d.job_uuid for d in self.executor.submitted), ["arrived", "kept"])
        self.assertIn(("dropped", "job_deleted"), self.executor.cancelled)


class ScaleTests(SynchronousTestCase):
    """What lets one node hold a million jobs: paged loading and shared, compact entries."""

    build = SchedulerTests.build

    def test_jobs_load_a_page_at_a_time(self) -> None:
        """Start-up reads the jobs in pages, each after the last job of the one before."""
        self.patch(scheduler_service, "LOAD_PAGE_SIZE", 2)
        jobs = [make_job(f"job-{i}") for i in range(5)]
        self.build(jobs)
        self.assertEqual(
            self.state.pages,
            [
                (None, 2),
                ((jobs[1]["created_at"], "job-1"), 2),
                ((jobs[3]["created_at"], "job-3"), 2),
            ],
        )
        self.assertEqual(self.scheduler.active_jobs(), 5)
        self.clock.advance(1)
        fired = sorted(d.job_uuid for d in self.executor.submitted)
        self.assertEqual(fired, [j["uuid"] for j in jobs])

    def test_loaded_pages_fire_before_the_last_page_loads(self) -> None:
        """Jobs of a page already read fire on time while later pages are still loading."""
        self.patch(scheduler_service, "LOAD_PAGE_SIZE", 1)
        later = make_job("job-2", at=START + timedelta(milliseconds=1))
        state = FakeState([make_job("job-1"), later])
        held: list[tuple[Deferred, Any, int]] = []
        read = state.jobs_page

        def gated(after: Any, limit: int) -> Deferred:
            # The second page's read waits until the test lets it finish.
            if after is None or held:
                return read(after, limit)
            waiting: Deferred = Deferred()
            held.append((waiting, after, limit))
            return waiting

        state.jobs_page = gated  # type: ignore[method-assign]
        clock = Clock()
        clock.advance(START.timestamp())
        executor = FakeExecutor()
        scheduler = SchedulerService(
            clock, state, FakeProposer(), FakeExecutions(), executor, node_id=1
        )
        scheduler.startService()
        clock.advance(1)
        self.assertEqual([d.job_uuid for d in executor.submitted], ["job-1"])
        self.assertNoResult(scheduler.ready)
        ((waiting, after, limit),) = held
        waiting.callback(self.successResultOf(read(after, limit)))
        self.successResultOf(scheduler.ready)
        clock.advance(1)
        self.assertIn("job-2", [d.job_uuid for d in executor.submitted])

    def test_jobs_alike_share_their_schedule_and_slot(self) -> None:
        """Jobs with one spec, zone and anchor hold one schedule, one slot instant and one URL."""
        self.build([make_job("a", spec="@hourly"), make_job("b", spec="@hourly")])
        a, b = self.scheduler._entries["a"], self.scheduler._entries["b"]
        self.assertIs(a.schedule, b.schedule)
        self.assertIs(a.next_slot, b.next_slot)
        self.assertIs(a.callback_url, b.callback_url)
        self.assertEqual(a.next_slot, START + timedelta(hours=1))

    def test_shared_numbers_keep_their_type(self) -> None:
        """A retry_max of 1 next to a timeout of 1.0 stays the integer 1."""
        self.build([make_job(timeout_s=1.0, retry_max=1, catch_up_window_s=1.0)])
        self.clock.advance(1)
        (delivery,) = self.executor.submitted
        self.assertEqual((type(delivery.retry_max), type(delivery.timeout_s)), (int, float))

    def test_only_frequent_jobs_keep_their_members_encoded(self) -> None:
        """After firing, an every-second job keeps its members encoded; an hourly one does not."""
        self.build([make_job("often"), make_job("hourly", spec="@hourly")])
        self.clock.advance(3600)
        self.assertIsNotNone(self.scheduler._entries["often"].job_json)
        self.assertIsNone(self.scheduler._entries["hourly"].job_json)
        hourly = [d for d in self.executor.submitted if d.job_uuid == "hourly"]
        self.assertEqual([(d.name, d.data) for d in hourly], [("name of hourly", {"n": 1})])

    def test_unchanged_job_keeps_its_entry_across_a_restore(self) -> None:
        """A restored state whose job is unchanged leaves its entry (and planned slot) alone."""
        job = make_job()
        self.build([job])
        entry = self.scheduler._entries["job-1"]
        self.state.jobs = [dict(job)]
        self.proposer.applied("state_restored", None)
        self.assertIs(self.scheduler._entries["job-1"], entry)
        self.state.jobs = [dict(job, callback_url="http://127.0.0.1:9/other")]
        self.proposer.applied("state_restored", None)
        self.assertIsNot(self.scheduler._entries["job-1"], entry)

    def test_job_created_during_load_fires_each_slot_once(self) -> None:
        """A job whose create is replayed before its page loads is not loaded again."""
        self.patch(scheduler_service, "LOAD_PAGE_SIZE", 1)
        first, second = make_job("job-1", spec="@hourly"), make_job("job-2", spec="@hourly")
        new = make_job("new", at=START + timedelta(milliseconds=1))
        state = FakeState([first, second])
        held: list[tuple[Deferred, Any]] = []
        read = state.jobs_page

        def gated(after: Any, limit: int) -> Deferred:
            if after is None:
                return read(after, limit)
            waiting: Deferred = Deferred()
            held.append((waiting, after))
            return waiting

        def release() -> None:
            waiting, after = held.pop(0)
            waiting.callback(self.successResultOf(read(after, 1)))

        state.jobs_page = gated  # type: ignore[method-assign]
        clock = Clock()
        clock.advance(START.timestamp())
        executor = FakeExecutor()
        proposer = FakeProposer()
        scheduler = SchedulerService(clock, state, proposer, FakeExecutions(), executor, node_id=1)
        scheduler.startService()
        # While the second page is read, the job is created (and stored).
        state.jobs.append(new)
        proposer.applied("create_jobs", [new])
        release()  # page 2 (job-2); the create is replayed after it
        clock.advance(1.5)  # the new job fires its first slot
        release()  # page 3 holds the new job too
        release()  # the empty last page
        self.successResultOf(scheduler.ready)
        clock.advance(1)
        fired = [d.scheduled_at for d in executor.submitted if d.job_uuid == "new"]
        self.assertEqual(fired, [format_instant(START + timedelta(seconds=k)) for k in (1, 2)])

    def test_restore_reads_the_jobs_in_pages(self) -> None:
        """After a restore the jobs are read a page at a time, and all of them fire."""
        self.patch(scheduler_service, "LOAD_PAGE_SIZE", 2)
        self.build([make_job("old")])
        self.state.jobs = [make_job(f"job-{i}") for i in range(5)]
        self.state.pages.clear()
        self.proposer.applied("state_restored", None)
        self.assertEqual(len(self.state.pages), 3)
        self.clock.advance(1)
        fired = sorted(d.job_uuid for d in self.executor.submitted)
        self.assertEqual(fired, [f"job-{i}" for i in range(5)])
        self.assertIn(("old", "job_deleted"), self.executor.cancelled)
