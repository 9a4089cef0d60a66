"""
Tests for L{scheduler0.clockwatch}: steps of the wall clock are noticed,
reported once, and leave the reactor's timers on elapsed time; and for what
the scheduler makes of a step (L{SchedulerService.clock_stepped}): no slot
sent twice, no silence unreported, no outage for time that did not pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.clockwatch import (
    BACKWARD,
    FORWARD,
    SKIP_CLOCK_STEPPED,
    STEP_THRESHOLD_S,
    ClockStep,
    ClockWatch,
)
from scheduler0.metrics import NodeMetrics
from scheduler0.scheduler.service import SchedulerService
from scheduler0.timeutil import format_instant
from tests.support.scheduler import (
    START,
    FakeExecutions,
    FakeExecutor,
    FakeProposer,
    FakeState,
    make_job,
)


class Clocks:
    """
    A reactor clock (task.Clock: its seconds() is the wall clock, as the
    real reactor's) and an elapsed clock beside it; L{step} moves the wall
    clock alone, as NTP does.
    """

    def __init__(self, start: float) -> None:
        self.reactor = Clock()
        self.reactor.advance(start)
        self._offset = start

    def elapsed(self) -> float:
        return self.reactor.seconds() - self._offset

    def step(self, seconds: float) -> None:
        """The wall clock jumps by C{seconds}; no time passes."""
        self.reactor.rightNow += seconds
        self._offset += seconds


def captured_events(test: SynchronousTestCase) -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class ClockWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clocks = Clocks(START.timestamp())
        self.heard: list[ClockStep] = []
        self.watch = ClockWatch(
            self.clocks.reactor, elapsed=self.clocks.elapsed, listeners=[self.heard.append]
        )
        self.watch.wall = self.clocks.reactor.seconds
        self.watch.check()

    def test_time_passing_is_no_step(self) -> None:
        """Both clocks advancing together, for as long as they do, is no step."""
        for _ in range(100):
            self.clocks.reactor.advance(3600)
            self.assertIsNone(self.watch.check())
        self.assertEqual(self.heard, [])
        self.assertEqual(self.watch.snapshot()["last_step_s"], None)

    def test_a_change_within_the_threshold_is_no_step(self) -> None:
        """A change of the difference no larger than the threshold is not reported."""
        self.clocks.step(STEP_THRESHOLD_S * 0.9)
        self.assertIsNone(self.watch.check())
        self.clocks.step(-STEP_THRESHOLD_S * 0.9)
        self.assertIsNone(self.watch.check())
        self.assertEqual(self.watch.steps, {FORWARD: 0, BACKWARD: 0})

    def test_a_backward_step_is_reported_once(self) -> None:
        """
        A step back is one log event (direction and size), one count, the
        last step in the snapshot, and one call of each listener.
        """
        events = captured_events(self)
        self.clocks.step(-30)
        step = self.watch.check()
        assert step is not None
        self.assertEqual((step.direction, step.size_s), (BACKWARD, -30.0))
        self.assertIsNone(self.watch.check())
        self.clocks.reactor.advance(5)
        self.assertIsNone(self.watch.check())
        self.assertEqual(self.heard, [step])
        self.assertEqual(self.watch.steps, {FORWARD: 0, BACKWARD: 1})
        steps = [e for e in events if e.get("event") == "clock_step"]
        self.assertEqual(len(steps), 1)
        self.assertEqual((steps[0]["direction"], steps[0]["size"]), (BACKWARD, -30.0))
        self.assertEqual(
            self.watch.snapshot(),
            {
                "last_step_s": -30.0,
                "at": format_instant(START - timedelta(seconds=30)),
                "steps": {FORWARD: 0, BACKWARD: 1},
            },
        )

    def test_timers_keep_their_elapsed_time_across_steps(self) -> None:
        """
        A timer set for 5 s runs after 5 s of elapsed time, whether the wall
        clock stepped back 30 s or forward 120 s meanwhile.
        """
        ran: list[float] = []
        reactor = self.clocks.reactor
        reactor.callLater(5, lambda: ran.append(self.clocks.elapsed()))
        reactor.advance(1)
        self.clocks.step(-30)
        self.watch.check()
        reactor.advance(3.9)
        self.assertEqual(ran, [])
        reactor.advance(0.1)
        self.assertEqual(ran, [5.0])
        reactor.callLater(5, lambda: ran.append(self.clocks.elapsed()))
        self.clocks.step(120)
        self.watch.check()
        reactor.advance(0)
        self.assertEqual(ran, [5.0])
        reactor.advance(5)
        self.assertEqual(ran, [5.0, 10.0])

    def test_a_read_split_by_preemption_is_read_again(self) -> None:
        """
        Readings of the elapsed clock far apart around the wall clock's (the
        thread was preempted) are read again, so a pause is not taken for a step.
        """
        readings: Iterator[float] = iter([0.0, 5.0, 5.0, 5.0])
        walls: Iterator[float] = iter([100.0, 105.0])
        watch = ClockWatch(Clock(), wall=lambda: next(walls), elapsed=lambda: next(readings))
        self.assertEqual(watch.read(), (105.0, 5.0))

    def test_install_checks_before_every_reactor_turn(self) -> None:
        """
        Installed, the watch looks at the clocks before each turn of the
        reactor's timers; uninstalled, the reactor is as it was.
        """
        turns: list[str] = []

        class Reactor:
            def __init__(self) -> None:
                self.calls: list[Any] = []

            def runUntilCurrent(self) -> None:  # noqa: N802 (Twisted's name)
                turns.append("turn")

            def seconds(self) -> float:
                return -1.0

        reactor = Reactor()
        wall = [1000.0]
        watch = ClockWatch(reactor, wall=lambda: wall[0], elapsed=lambda: 0.0)
        watch.install()
        wall[0] = 1060.0
        reactor.runUntilCurrent()
        self.assertEqual((turns, watch.steps[FORWARD]), (["turn"], 1))
        watch.uninstall()
        wall[0] = 2000.0
        reactor.runUntilCurrent()
        self.assertEqual((turns, watch.steps[FORWARD]), (["turn", "turn"], 1))
        self.assertNotIn("runUntilCurrent", vars(reactor))
        self.assertNotIn("seconds", vars(reactor))
        self.assertEqual(reactor.seconds(), -1.0)

    def test_a_step_within_a_turn_is_taken_in_at_the_next(self) -> None:
        """
        Installed, the reactor's seconds() keeps the frame of the turn's
        start: a step in the middle of a turn shows (and the timers move)
        only at the next turn, so no timer set in that turn is moved twice.
        """
        wall, elapsed = [1000.0], [0.0]
        reactor = Clock()
        watch = ClockWatch(reactor, wall=lambda: wall[0], elapsed=lambda: elapsed[0])
        watch.install()
        self.assertIs(vars(reactor).get("seconds"), None)  # task.Clock has no turns
        watch.check()
        elapsed[0], wall[0] = 1.0, 1001.0
        self.assertEqual(watch.seconds(), 1001.0)
        wall[0] += 120  # the step, in the middle of a turn
        self.assertEqual(watch.seconds(), 1001.0)
        watch.check()
        self.assertEqual(watch.seconds(), 1121.0)

    def test_watches_installed_on_one_reactor_uninstall_in_any_order(self) -> None:
        """
        Two nodes in one process share the reactor: each watch stops
        checking when it is uninstalled, whatever the order, and the
        reactor's turns go on.
        """
        turns: list[str] = []

        class Reactor:
            def __init__(self) -> None:
                self.calls: list[Any] = []

            def runUntilCurrent(self) -> None:  # noqa: N802 (Twisted's name)
                turns.append("turn")

            def seconds(self) -> float:
                return -1.0

        reactor = Reactor()
        wall = [0.0]
        first = ClockWatch(reactor, wall=lambda: wall[0], elapsed=lambda: 0.0)
        second = ClockWatch(reactor, wall=lambda: wall[0], elapsed=lambda: 0.0)
        first.install()
        second.install()
        first.uninstall()
        wall[0] = 10.0
        reactor.runUntilCurrent()
        self.assertEqual((first.steps[FORWARD], second.steps[FORWARD]), (0, 1))
        second.uninstall()
        wall[0] = 20.0
        reactor.runUntilCurrent()
        self.assertEqual((first.steps[FORWARD], second.steps[FORWARD]), (0, 1))
        self.assertEqual(turns, ["turn", "turn"])

    def test_metrics_show_the_steps(self) -> None:
        """GET /metrics counts the steps by direction and shows the last one's size."""
        metrics = NodeMetrics(self.clocks.reactor, 1, clock_watch=self.watch)
        self.clocks.step(-30)
        self.watch.check()
        text = metrics.exposition().decode()
        self.assertIn('scheduler0_clock_steps_total{direction="backward"} 1.0', text)
        self.assertIn('scheduler0_clock_steps_total{direction="forward"} 0.0', text)
        self.assertIn("scheduler0_clock_last_step_seconds -30.0", text)
        self.assertIn('scheduler0_slots_skipped_total{reason="clock_stepped"} 0.0', text)


class SchedulerAcrossStepsTests(SynchronousTestCase):
    """
    An C{@every 1s} job and a daily job on a scheduler whose reactor's wall
    clock steps, with the watch in front of it as in a node.
    """

    def setUp(self) -> None:
        self.clocks = Clocks(START.timestamp())
        reactor = self.clocks.reactor
        self.executions = FakeExecutions()
        self.executor = FakeExecutor()
        self.executor.clock = reactor
        self.proposer = FakeProposer()
        self.job = make_job()
        self.scheduler = SchedulerService(
            reactor,
            FakeState([self.job]),
            self.proposer,
            self.executions,
            self.executor,
            node_id=1,
            history_per_job=5,
        )
        self.watch = ClockWatch(
            reactor,
            wall=reactor.seconds,
            elapsed=self.clocks.elapsed,
            listeners=[self.scheduler.clock_stepped],
        )
        self.watch.check()
        self.scheduler.startService()

    def run_for(self, seconds: float, tick: float = 0.01) -> None:
        """Let C{seconds} of elapsed time pass, the watch looking before each turn."""
        for _ in range(round(seconds / tick)):
            self.watch.check()
            self.clocks.reactor.advance(tick)

    def step(self, seconds: float) -> None:
        self.clocks.step(seconds)
        self.watch.check()

    def sent(self) -> list[str]:
        return [d.scheduled_at for d in self.executor.submitted]

    def ids(self) -> list[str]:
        return [d.execution_id for d in self.executor.submitted]

    def skipped(self, reason: str) -> list[str]:
        return sorted(
            r["scheduled_at"]
            for r in self.executions.records.values()
            if r["state"] == "skipped" and r["skip_reason"] == reason
        )

    def at(self, seconds: float) -> str:
        return format_instant(START + timedelta(seconds=seconds))

    def test_after_a_backward_step_no_slot_is_sent_again(self) -> None:
        """
        Back 30 s: the slots already sent are not sent again (no execution
        id twice); the job waits for the wall clock to reach its next slot,
        which next_run_at shows throughout, and goes on from there.
        """
        self.run_for(10.5)
        self.assertEqual(self.sent(), [self.at(k) for k in range(1, 11)])
        self.step(-30)
        self.assertEqual(self.scheduler.next_run_at(self.job), self.at(11))
        self.run_for(29)
        self.assertEqual(len(self.sent()), 10)
        self.assertEqual(self.scheduler.next_run_at(self.job), self.at(11))
        self.run_for(6)
        self.assertEqual(self.sent(), [self.at(k) for k in range(1, 16)])
        self.assertEqual(len(set(self.ids())), len(self.ids()))

    def test_a_change_during_a_backward_step_sends_nothing_twice(self) -> None:
        """
        A job changed while the clock reads instants it already passed
        (back 30 s) does not send its slots up to there again.
        """
        self.run_for(10.5)
        self.step(-30)
        self.run_for(2)
        self.proposer.applied("update_job", dict(self.job, data={"n": 2}))
        self.run_for(33)
        self.assertEqual(self.sent(), [self.at(k) for k in range(1, 16)])
        self.assertEqual(len(set(self.ids())), len(self.ids()))

    def test_a_forward_step_is_no_outage(self) -> None:
        """
        Forward 120 s: of the slots in the time jumped over the job sends the
        first at once and records the others skipped (clock_stepped), none
        outside_catch_up_window; it then goes on each second, no burst.
        """
        self.run_for(10.5)
        self.step(120)
        self.run_for(0.6)
        self.assertEqual(self.sent(), [*(self.at(k) for k in range(1, 12)), self.at(131)])
        # history_per_job=5: five records, the rest in one log event.
        self.assertEqual(self.skipped(SKIP_CLOCK_STEPPED), [self.at(k) for k in range(12, 17)])
        self.assertEqual(self.skipped("outside_catch_up_window"), [])
        self.run_for(3)
        self.assertEqual(self.sent()[12:], [self.at(132), self.at(133), self.at(134)])
        turns = self.executor.turns
        self.assertLessEqual(max(sum(1 for t in turns if s <= t < s + 1) for s in turns), 2)
        self.assertEqual(len(set(self.ids())), len(self.ids()))

    def test_a_forward_step_does_not_age_an_owed_slot(self) -> None:
        """
        A slot owed from before a forward step (the node could not fire it)
        is still inside its catch-up window after the step: the wall time
        jumped over is not counted.
        """
        blocked = [True]
        self.scheduler.may_fire = lambda: not blocked[0]
        self.run_for(30.5)
        self.assertEqual(self.sent(), [])
        self.step(120)
        blocked[0] = False
        self.run_for(0.2)
        self.assertEqual(self.skipped("outside_catch_up_window"), [])
        sent = self.sent()
        self.assertEqual(sent[:30], [self.at(k) for k in range(1, 31)])
        self.assertEqual(sent[30], self.at(31))

    def test_a_daily_slot_jumped_over_is_sent(self) -> None:
        """A daily job whose one slot the clock jumped over sends it once, at once."""
        self.proposer.applied("create_jobs", [make_job("daily", spec="1 12 * * *")])
        self.run_for(10.5)
        self.step(120)
        self.run_for(0.5)
        daily = [d.scheduled_at for d in self.executor.submitted if d.job_uuid == "daily"]
        self.assertEqual(daily, [self.at(60)])

    def test_steps_do_not_count_as_load(self) -> None:
        """Neither step makes the node shed a slot as overloaded."""
        self.run_for(5.5)
        self.step(-30)
        self.run_for(35)
        self.step(120)
        self.run_for(5)
        self.assertEqual(self.skipped("overloaded"), [])
        self.assertEqual(self.scheduler.admission.shed, 0)
