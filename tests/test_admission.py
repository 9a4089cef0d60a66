"""
Tests for L{scheduler0.scheduler.admission} and the scheduler's shedding past
its capacity: a busy node records what it cannot send on time as
C{skipped: overloaded} at the earliest point; an idle one, a stalled one and
one catching up after a restart shed nothing; long runs of due slots are
worked through in slices.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.scheduler import service as scheduler_service
from scheduler0.scheduler.admission import (
    BUSY,
    BUSY_LAG_S,
    CONTROL_S,
    GATE_S,
    LATE_S,
    Admission,
)
from scheduler0.scheduler.service import SchedulerService
from scheduler0.timeutil import STALL_S, StallWatch, format_instant
from tests.support.scheduler import (
    START,
    FakeExecutions,
    FakeExecutor,
    FakeProposer,
    FakeState,
    make_job,
)


class FakeCPU:
    """A thread's CPU seconds, moved by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


class StallWatchTests(SynchronousTestCase):
    def test_a_busy_thread_is_not_stalled(self) -> None:
        """Late by much, but on the CPU all that time: busy, not a stall."""
        cpu = FakeCPU()
        watch = StallWatch(STALL_S, cpu)
        watch.stalled(100.0)
        cpu.seconds += 5.0
        self.assertFalse(watch.stalled(105.0))

    def test_a_thread_sharing_a_busy_machine_is_not_stalled(self) -> None:
        """
        On a machine with more work than cores a working thread is off the
        CPU much of the time, but not idle: busy, not a stall.
        """
        cpu = FakeCPU()
        watch = StallWatch(STALL_S, cpu)
        watch.stalled(100.0)
        cpu.seconds += 1.5
        self.assertFalse(watch.stalled(104.0))

    def test_time_off_the_cpu_is_a_stall(self) -> None:
        """More than the threshold passed with the thread off the CPU: a stall."""
        cpu = FakeCPU()
        watch = StallWatch(STALL_S, cpu)
        watch.stalled(100.0)
        cpu.seconds += 0.2
        self.assertTrue(watch.stalled(100.0 + STALL_S + 0.5))
        # Measured from the last look on.
        cpu.seconds += 0.1
        self.assertFalse(watch.stalled(100.0 + STALL_S + 0.7))


class AdmissionTests(SynchronousTestCase):
    def test_busy_follows_the_reactor_threads_cpu(self) -> None:
        """Busy once a period spent more than BUSY of its time on the CPU; idle again after."""
        cpu = FakeCPU()
        admission = Admission(cpu=cpu)
        admission.steer(10.0)
        cpu.seconds += CONTROL_S * (BUSY + 0.1)
        admission.steer(10.0 + CONTROL_S)
        self.assertTrue(admission.busy)
        # Not a whole period yet: unchanged.
        admission.steer(10.0 + CONTROL_S * 1.5)
        self.assertTrue(admission.busy)
        cpu.seconds += CONTROL_S * (BUSY - 0.3)
        admission.steer(10.0 + CONTROL_S * 2)
        self.assertFalse(admission.busy)

    def test_a_writer_behind_makes_the_node_busy(self) -> None:
        """
        Execution records written slower than they are made (the writer is
        behind) make the node busy, however idle its reactor thread.
        """
        cpu = FakeCPU()
        admission = Admission(cpu=cpu)
        behind = [True]
        admission.steer(10.0, lambda: behind[0])
        cpu.seconds += 0.05
        admission.steer(10.0 + CONTROL_S, lambda: behind[0])
        self.assertTrue(admission.busy)
        behind[0] = False
        admission.steer(10.0 + 2 * CONTROL_S, lambda: behind[0])
        self.assertFalse(admission.busy)

    def test_a_late_timer_makes_the_node_busy(self) -> None:
        """
        A timer run BUSY_LAG_S late (not a stall) makes the node busy for the
        next period, however little CPU its thread got (a machine with more
        work than cores).
        """
        cpu = FakeCPU()
        admission = Admission(cpu=cpu)
        admission.steer(10.0)
        cpu.seconds += 0.05
        self.assertFalse(admission.timer_ran(10.1, 10.1 + BUSY_LAG_S + 0.05))
        admission.steer(10.0 + CONTROL_S)
        self.assertTrue(admission.busy)
        admission.timer_ran(10.6, 10.61)
        admission.steer(10.0 + 2 * CONTROL_S)
        self.assertFalse(admission.busy)

    def test_a_timer_late_while_off_the_cpu_is_a_stall(self) -> None:
        cpu = FakeCPU()
        admission = Admission(cpu=cpu)
        admission.timer_ran(10.0, 10.0)
        self.assertTrue(admission.timer_ran(11.0, 11.0 + STALL_S + 1))
        cpu.seconds += 3 * STALL_S
        self.assertFalse(admission.timer_ran(14.0, 14.0 + STALL_S + 1))


class CongestedExecutor(FakeExecutor):
    """A fake executor whose queues for some URLs are behind since a given instant."""

    def __init__(self) -> None:
        super().__init__()
        self.behind: dict[str, float] = {}

    def congested(self, before: float) -> set[str]:
        return {url for url, ready in self.behind.items() if ready < before}


SLOW = "http://127.0.0.1:9/slow"
FAST = "http://127.0.0.1:9/fast"


class SheddingTests(SynchronousTestCase):
    def build(
        self,
        jobs: list[dict],
        clock: Clock | None = None,
        may_fire: Callable[[], bool] | None = None,
    ) -> SchedulerService:
        self.clock = clock or Clock()
        self.clock.advance(START.timestamp())
        self.cpu = FakeCPU()
        self.executions = FakeExecutions()
        self.executor = CongestedExecutor()
        self.executor.clock = self.clock
        self.scheduler = SchedulerService(
            self.clock,
            FakeState(jobs),
            FakeProposer(),
            self.executions,
            self.executor,
            node_id=7,
            history_per_job=5,
            admission=Admission(cpu=self.cpu),
            may_fire=may_fire,
        )
        self.scheduler.startService()
        return self.scheduler

    def run_for(self, seconds: float, busy: bool) -> None:
        """Advance in small steps, the reactor thread on the CPU all along when C{busy}."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            step = min(0.01, end - self.clock.seconds())
            if busy:
                self.cpu.seconds += step
            self.clock.advance(step)

    def shed(self) -> list[dict]:
        return [
            r
            for r in self.executions.writes
            if r["state"] == "skipped" and r["skip_reason"] == "overloaded"
        ]

    def test_a_busy_node_sheds_deliveries_for_a_url_that_is_behind(self) -> None:
        """
        Busy, with the queue of one URL behind by more than GATE_S: that URL's
        slots are recorded skipped (overloaded) and not handed over; another
        URL's go on.
        """
        self.build([make_job("slow", callback_url=SLOW), make_job("fast", callback_url=FAST)])
        self.run_for(1.5, busy=True)
        self.assertEqual({d.job_uuid for d in self.executor.submitted}, {"slow", "fast"})
        self.executor.behind[SLOW] = self.clock.seconds() - GATE_S - 0.1
        before = len(self.executor.submitted)
        self.run_for(3, busy=True)
        sent = self.executor.submitted[before:]
        self.assertEqual({d.job_uuid for d in sent}, {"fast"})
        self.assertEqual(len(sent), 3)
        shed = self.shed()
        self.assertEqual({r["job_uuid"] for r in shed}, {"slow"})
        self.assertEqual(len(shed), 3)
        # Each shed slot is recorded once, with its own execution id, as not attempted.
        self.assertEqual(len({r["execution_id"] for r in shed}), 3)
        self.assertEqual({r["attempts"] for r in shed}, {0})
        self.assertEqual(self.scheduler.admission.shed, 3)

    def test_an_idle_node_sheds_nothing_for_a_slow_url(self) -> None:
        """A queue behind a slow endpoint on a node that is not busy is not overload."""
        self.build([make_job("slow", callback_url=SLOW)])
        self.executor.behind[SLOW] = self.clock.seconds() - 60
        self.run_for(4, busy=False)
        self.assertEqual(len(self.executor.submitted), 4)
        self.assertEqual(self.shed(), [])

    def test_a_busy_node_sheds_slots_its_timer_heap_reaches_late(self) -> None:
        """
        Busy, the slot timer itself running late (but not stalled: on the CPU
        all along): slots reached more than LATE_S after their instant are
        recorded skipped before any delivery is built; on-time ones are sent.
        """
        self.build([make_job()])
        self.run_for(2.5, busy=True)
        sent = len(self.executor.submitted)
        self.assertEqual(sent, 2)
        # The reactor was busy elsewhere for 3 s (on the CPU throughout).
        self.cpu.seconds += 3.0
        self.clock.advance(3.0)
        shed = self.shed()
        self.assertGreaterEqual(len(shed), 1)
        late = [r["scheduled_at"] for r in shed]
        now = self.clock.seconds()
        for text in late:
            slot = START + timedelta(seconds=int(text[17:19]))
            self.assertGreater(now - slot.timestamp(), LATE_S)
        # No slot is both shed and sent, and none is lost.
        sent_slots = [d.scheduled_at for d in self.executor.submitted]
        self.assertEqual(set(sent_slots) & set(late), set())
        self.run_for(1, busy=True)
        all_slots = sorted(set(late) | {d.scheduled_at for d in self.executor.submitted})
        expected = [format_instant(START + timedelta(seconds=k)) for k in range(1, 7)]
        self.assertEqual(all_slots, expected)

    def test_a_stall_sheds_nothing(self) -> None:
        """
        The process stopped for 5 s (off the CPU): the slots it missed are
        delivered late, as a restart's would be, none shed -- even if it was
        busy before.
        """
        self.build([make_job()])
        self.run_for(2.5, busy=True)
        self.assertTrue(self.scheduler.admission.busy)
        self.clock.advance(5.0)
        self.run_for(0.5, busy=False)
        self.assertEqual(self.shed(), [])
        expected = [format_instant(START + timedelta(seconds=k)) for k in range(1, 9)]
        self.assertEqual([d.scheduled_at for d in self.executor.submitted], expected)

    def test_slots_owed_across_a_lease_gap_are_not_shed(self) -> None:
        """
        Slots that fell due while the node held no lease are late for that,
        not for load: once it holds one again they are sent, none shed --
        even on a busy node.
        """
        lease = [True]
        self.build([make_job()], may_fire=lambda: lease[0])
        self.run_for(2.5, busy=True)
        lease[0] = False
        self.run_for(3, busy=True)
        lease[0] = True
        self.run_for(1, busy=True)
        self.assertEqual(self.shed(), [])
        expected = [format_instant(START + timedelta(seconds=k)) for k in range(1, 7)]
        self.assertEqual([d.scheduled_at for d in self.executor.submitted], expected)

    def test_the_gap_is_forgiven_not_the_load_after_it(self) -> None:
        """
        A slot owed across a lease gap counts as ready when the gap ended;
        if the node then takes more than LATE_S longer to reach it, it is shed.
        """
        self.build([make_job()])
        scheduler = self.scheduler
        scheduler._gap(START.timestamp() + 10, START.timestamp() + 13)
        # Due at +11 (inside the gap): ready at +13.
        self.assertEqual(scheduler._ready(START.timestamp() + 11), START.timestamp() + 13)
        # Due at +9 (owed when the gap began): moved on by the gap's 3 s.
        self.assertEqual(scheduler._ready(START.timestamp() + 9), START.timestamp() + 12)
        # Due after it: its own instant.
        self.assertEqual(scheduler._ready(START.timestamp() + 14), START.timestamp() + 14)
        # A job taken over at +15: its owed slots count from then.
        self.assertEqual(
            scheduler._ready(START.timestamp() + 11, START.timestamp() + 15),
            START.timestamp() + 15,
        )

    def test_slots_late_for_a_restart_are_not_shed(self) -> None:
        """Catching up after a restart (slots owed from before it) is not overload."""
        job = make_job(at=START - timedelta(seconds=30))
        self.build([job])
        self.cpu.seconds += 1.0
        self.run_for(0.5, busy=True)
        self.assertEqual(self.shed(), [])
        self.assertGreaterEqual(len(self.executor.submitted), 5)


class TickingClock(Clock):
    """A clock that moves a little every time it is read (work takes time)."""

    tick = 0.0

    def seconds(self) -> float:
        self.rightNow += self.tick
        return self.rightNow


class SlicingTests(SynchronousTestCase):
    def test_a_long_run_of_due_slots_is_worked_through_in_slices(self) -> None:
        """
        Thousands of slots due at one instant are prepared and handed over in
        several reactor turns, each about SLICE_S long, and every one of them
        is handed over exactly once, in the slot's order.
        """
        clock = TickingClock()
        clock.advance(START.timestamp())
        jobs = [make_job(f"job-{n:04d}") for n in range(3000)]
        # (An executor that does not read the clock: only the scheduler's reads cost time.)
        executor = FakeExecutor()
        scheduler = SchedulerService(
            clock,
            FakeState(jobs),
            FakeProposer(),
            FakeExecutions(),
            executor,
            node_id=7,
            history_per_job=5,
            admission=Admission(cpu=lambda: 0.0),
        )
        scheduler.startService()
        turns: dict[str, int] = {"fire": 0, "release": 0}

        def counted(name: str, method: Any) -> Any:
            def call(*args: Any) -> Any:
                turns[name] += 1
                return method(*args)

            return call

        scheduler._fire_due = counted("fire", scheduler._fire_due)  # type: ignore[method-assign]
        scheduler._release = counted("release", scheduler._release)  # type: ignore[method-assign]
        # Each look at the clock (one per 256 slots) finds 5 ms gone: a
        # slice holds about a thousand slots.
        clock.tick = 0.005
        scheduler._arm()
        deadline = START.timestamp() + 3.5
        while clock.seconds() < deadline:
            calls = clock.getDelayedCalls()
            if not calls:
                break
            nearest = min(c.getTime() for c in calls)
            clock.advance(max(0.0, nearest - clock.rightNow))
        # 3000 slots of the first second and as many of the next two, in
        # slices of about a thousand, preparing and handing over.
        self.assertGreaterEqual(turns["fire"], 6)
        self.assertGreaterEqual(turns["release"], 6)
        by_job: dict[str, list[str]] = {}
        for delivery in executor.submitted:
            by_job.setdefault(delivery.job_uuid, []).append(delivery.scheduled_at)
        self.assertEqual(len(by_job), 3000)
        for slots in by_job.values():
            self.assertEqual(slots, sorted(set(slots)))
            self.assertGreaterEqual(len(slots), 2)
        self.assertLess(scheduler_service.SLICE_S, 0.1)
