"""
The figures of the failover scenario (bench/failover.py): the longest gap
without a delivery per job and cluster-wide, and the goal's verdict.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bench.failover import cluster_gap, job_gaps, verdict
from bench.receiver import Item


def arrival(job: str, at: float, slot: float | None = None) -> Item:
    slot = at if slot is None else slot
    return Item(at, "/cb/0", f"{job}-{slot}", job, slot, 1)


class JobGapTests(SynchronousTestCase):
    def test_steady_arrivals_give_the_period(self) -> None:
        """A job delivered every second has a longest gap of one second."""
        items = [arrival("a", 10.0 + k) for k in range(10)]
        self.assertEqual(job_gaps(items, ["a"], 10.0, 19.0), [1.0])

    def test_the_gap_around_a_kill_is_the_longest(self) -> None:
        """Arrivals at 10, 11, 12, then 14.5 (the kill), then every second: the gap is 2.5 s."""
        times = [10.0, 11.0, 12.0, 14.5, 15.0, 16.0]
        items = [arrival("a", t) for t in times]
        self.assertEqual(job_gaps(items, ["a"], 10.0, 16.0), [2.5])

    def test_edges_count(self) -> None:
        """Arrivals that stop early leave a gap up to the end of the stretch."""
        items = [arrival("a", 10.0), arrival("a", 11.0)]
        self.assertEqual(job_gaps(items, ["a"], 10.0, 20.0), [9.0])
        self.assertEqual(job_gaps([arrival("a", 18.0)], ["a"], 10.0, 20.0), [8.0])

    def test_a_job_without_arrivals_has_the_whole_stretch(self) -> None:
        """A job none of whose callbacks arrived has a gap as long as the stretch."""
        items = [arrival("a", 10.5)]
        self.assertEqual(job_gaps(items, ["a", "b"], 10.0, 14.0), [3.5, 4.0])

    def test_arrivals_outside_the_stretch_and_other_jobs_are_ignored(self) -> None:
        """Only the job's own arrivals inside [a, b] count."""
        items = [arrival("a", 5.0), arrival("a", 12.0), arrival("b", 11.0), arrival("x", 13.0)]
        self.assertEqual(job_gaps(items, ["a", "b"], 10.0, 14.0), [2.0, 3.0])

    def test_duplicates_and_late_catch_up_shorten_nothing_wrongly(self) -> None:
        """Two arrivals at the same instant (a duplicate) make a zero gap, not a negative one."""
        items = [arrival("a", 10.0), arrival("a", 12.0), arrival("a", 12.0, slot=11.0)]
        self.assertEqual(job_gaps(items, ["a"], 10.0, 13.0), [2.0])


class ClusterGapTests(SynchronousTestCase):
    def test_longest_silence_of_any_job(self) -> None:
        """The cluster-wide gap is the longest stretch in which no job's callback arrived."""
        items = [arrival("a", 10.0), arrival("b", 10.4), arrival("a", 11.9), arrival("b", 12.0)]
        self.assertAlmostEqual(cluster_gap(items, 10.0, 12.5), 1.5)

    def test_nothing_arrived(self) -> None:
        """With no arrival the gap is the whole stretch."""
        self.assertEqual(cluster_gap([], 3.0, 8.0), 5.0)


def trial(missed: int, p99: float) -> dict:
    return {"window": {"missed_slots": missed}, "job_gap_s": {"p99": p99}}


class VerdictTests(SynchronousTestCase):
    def test_met(self) -> None:
        """No missed slot and every trial's p99 gap at most 1.5 s meet the goal."""
        self.assertEqual(verdict([trial(0, 1.2), trial(0, 1.5)]), "met")

    def test_missed_slots_fail(self) -> None:
        """Any missed slot fails the goal, and the verdict counts them."""
        self.assertEqual(verdict([trial(2, 1.0), trial(1, 1.0)]), "not met: 3 missed slots")

    def test_a_long_gap_fails(self) -> None:
        """One trial's p99 gap over 1.5 s fails the goal, and the verdict names the worst."""
        self.assertEqual(
            verdict([trial(0, 1.0), trial(0, 2.25)]),
            "not met: worst per-job gap p99 2.25 s > 1.5 s",
        )
