"""
Tests for L{scheduler0.guard}: the node pauses new executions on high memory
or CPU use, with hysteresis, and survives errors reading either.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.guard import ResourceGuard

MB = 1024 * 1024


class FakeProcess:
    """A psutil.Process stand-in whose readings the test sets."""

    def __init__(self, rss_mb: float = 100.0) -> None:
        self.rss_mb = rss_mb
        self.cpu_seconds = 0.0
        self.fail_memory = False
        self.fail_cpu = False

    def memory_info(self) -> SimpleNamespace:
        if self.fail_memory:
            raise OSError("memory_info unavailable")
        return SimpleNamespace(rss=int(self.rss_mb * MB))

    def cpu_times(self) -> SimpleNamespace:
        if self.fail_cpu:
            raise OSError("cpu_times unavailable")
        return SimpleNamespace(user=self.cpu_seconds * 0.75, system=self.cpu_seconds * 0.25)


def make(max_memory_mb: float = 0, max_cpu_percent: float = 0, **kw: float):
    clock = Clock()
    process = FakeProcess()
    guard = ResourceGuard(clock, max_memory_mb, max_cpu_percent, process=process, **kw)
    changes: list[tuple[bool, str | None]] = []
    guard.add_observer(lambda paused, reason: changes.append((paused, reason)))
    guard.start()
    return clock, process, guard, changes


def burn(clock: Clock, process: FakeProcess, percent: float, seconds: int) -> None:
    """Advance the clock one second at a time while the process uses C{percent} of a core."""
    for _ in range(seconds):
        process.cpu_seconds += percent / 100.0
        clock.advance(1)


class MemoryTests(SynchronousTestCase):
    def test_pauses_at_70_percent(self) -> None:
        """RSS at 70 % of MaxMemory pauses the node, and the reason says so."""
        clock, process, guard, changes = make(max_memory_mb=1000)
        process.rss_mb = 699
        clock.advance(1)
        self.assertFalse(guard.paused)
        process.rss_mb = 700
        clock.advance(1)
        self.assertTrue(guard.paused)
        self.assertIn("memory 700/1000 MB", guard.reason)
        self.assertEqual(changes, [(True, guard.reason)])

    def test_hysteresis(self) -> None:
        """A paused node stays paused at 65 % and resumes only below 60 %."""
        clock, process, guard, changes = make(max_memory_mb=1000)
        process.rss_mb = 800
        clock.advance(1)
        process.rss_mb = 650
        clock.advance(1)
        self.assertTrue(guard.paused)
        self.assertIn("(65%)", guard.reason)
        process.rss_mb = 600
        clock.advance(1)
        self.assertTrue(guard.paused)
        process.rss_mb = 599
        clock.advance(1)
        self.assertFalse(guard.paused)
        self.assertIsNone(guard.reason)
        self.assertEqual([paused for paused, _ in changes], [True, False])
        self.assertEqual(changes[1], (False, None))

    def test_memory_off_when_zero(self) -> None:
        """MaxMemory 0 never pauses, whatever the RSS."""
        clock, process, guard, changes = make(max_memory_mb=0)
        process.rss_mb = 10**6
        clock.advance(5)
        self.assertFalse(guard.paused)
        self.assertEqual(changes, [])
        self.assertEqual(guard.snapshot()["rss_mb"], 10**6)

    def test_first_check_at_start(self) -> None:
        """start() checks at once, so a node over the limit starts paused."""
        clock = Clock()
        process = FakeProcess(rss_mb=900)
        guard = ResourceGuard(clock, 1000, 0, process=process)
        guard.start()
        self.assertTrue(guard.paused)


class CPUTests(SynchronousTestCase):
    def test_pauses_above_max_over_window(self) -> None:
        """The CPU average over the 5 s window above MaxCPU pauses the node."""
        clock, process, guard, changes = make(max_cpu_percent=50)
        burn(clock, process, 60, 4)
        self.assertFalse(guard.paused, "less than a full window is not judged")
        burn(clock, process, 60, 1)
        self.assertTrue(guard.paused)
        self.assertIn("cpu 60%", guard.reason)
        self.assertEqual(len(changes), 1)

    def test_average_not_instant(self) -> None:
        """A one-second spike does not pause when the 5 s average stays under MaxCPU."""
        clock, process, guard, changes = make(max_cpu_percent=55)
        burn(clock, process, 20, 8)
        burn(clock, process, 100, 1)
        self.assertFalse(guard.paused)
        self.assertAlmostEqual(guard.snapshot()["cpu_percent"], 36.0)
        burn(clock, process, 100, 1)
        self.assertFalse(guard.paused)
        self.assertAlmostEqual(guard.snapshot()["cpu_percent"], 52.0)
        burn(clock, process, 100, 1)
        self.assertTrue(guard.paused)

    def test_exactly_at_max_does_not_pause(self) -> None:
        """An average equal to MaxCPU is not above it."""
        clock, process, guard, _ = make(max_cpu_percent=50)
        burn(clock, process, 50, 10)
        self.assertFalse(guard.paused)

    def test_cpu_hysteresis(self) -> None:
        """A CPU pause ends only when the average is at or below 6/7 of MaxCPU."""
        clock, process, guard, changes = make(max_cpu_percent=70)
        burn(clock, process, 90, 6)
        self.assertTrue(guard.paused)
        burn(clock, process, 65, 5)
        self.assertTrue(guard.paused, "65% is under MaxCPU but above the resume level")
        burn(clock, process, 60, 5)
        self.assertFalse(guard.paused)
        self.assertEqual([p for p, _ in changes], [True, False])

    def test_cpu_off_when_zero(self) -> None:
        """MaxCPU 0 never pauses, but the average is still reported."""
        clock, process, guard, changes = make(max_cpu_percent=0)
        burn(clock, process, 400, 10)
        self.assertFalse(guard.paused)
        self.assertAlmostEqual(guard.snapshot()["cpu_percent"], 400.0)

    def test_both_reasons(self) -> None:
        """Memory and CPU pauses combine; the node resumes only when both clear."""
        clock, process, guard, changes = make(max_memory_mb=1000, max_cpu_percent=50)
        process.rss_mb = 800
        burn(clock, process, 90, 6)
        self.assertIn("memory", guard.reason)
        self.assertIn("cpu", guard.reason)
        process.rss_mb = 100
        clock.advance(1)
        self.assertTrue(guard.paused)
        self.assertNotIn("memory", guard.reason)
        burn(clock, process, 0, 6)
        self.assertFalse(guard.paused)
        self.assertEqual([p for p, _ in changes], [True, False])


class RobustnessTests(SynchronousTestCase):
    def test_errors_are_survived(self) -> None:
        """A failing reading is logged, keeps the last state, and the loop goes on."""
        clock, process, guard, changes = make(max_memory_mb=1000)
        process.rss_mb = 800
        clock.advance(1)
        process.fail_memory = True
        process.fail_cpu = True
        for _ in range(3):
            clock.advance(1)
        self.assertTrue(guard.paused)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 6)
        process.fail_memory = False
        process.fail_cpu = False
        process.rss_mb = 100
        clock.advance(1)
        self.assertFalse(guard.paused)

    def test_observer_errors_are_survived(self) -> None:
        """An observer that raises does not stop other observers or the checks."""
        clock, process, guard, changes = make(max_memory_mb=1000)

        def broken(paused: bool, reason: str | None) -> None:
            raise RuntimeError("observer bug")

        guard._observers.insert(0, broken)
        process.rss_mb = 800
        clock.advance(1)
        process.rss_mb = 100
        clock.advance(1)
        self.assertEqual([p for p, _ in changes], [True, False])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_stop_ends_checks(self) -> None:
        """After stop() no more readings are taken."""
        clock, process, guard, _ = make(max_memory_mb=1000)
        guard.stop()
        process.rss_mb = 900
        clock.advance(10)
        self.assertFalse(guard.paused)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_snapshot(self) -> None:
        """The snapshot carries state, reason, readings and limits."""
        clock, process, guard, _ = make(max_memory_mb=1000, max_cpu_percent=50)
        process.rss_mb = 750
        burn(clock, process, 10, 5)
        snap = guard.snapshot()
        self.assertEqual(
            {
                k: snap[k]
                for k in ("paused", "rss_mb", "cpu_percent", "max_memory_mb", "max_cpu_percent")
            },
            {
                "paused": True,
                "rss_mb": 750.0,
                "cpu_percent": 10.0,
                "max_memory_mb": 1000,
                "max_cpu_percent": 50,
            },
        )
        self.assertEqual(snap["reason"], guard.reason)

    def test_rejects_negative_limits(self) -> None:
        """Negative limits are refused with an error naming the setting."""
        clock = Clock()
        error = self.assertRaises(ValueError, ResourceGuard, clock, -1, 0, process=FakeProcess())
        self.assertIn("MaxMemory", str(error))
        error = self.assertRaises(ValueError, ResourceGuard, clock, 0, -5, process=FakeProcess())
        self.assertIn("MaxCPU", str(error))

    def test_default_process_is_psutil(self) -> None:
        """Without a process the guard reads this process through psutil."""
        import psutil

        guard = ResourceGuard(Clock(), 0, 0)
        self.assertIsInstance(guard.process, psutil.Process)
        guard.check()
        self.assertGreater(guard.snapshot()["rss_mb"], 0)
