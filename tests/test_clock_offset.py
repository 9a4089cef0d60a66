"""
Unit tests of the clock offset estimate (scheduler0.cluster.clock_offset):
readings from lease answers, the offset worked out from this node's own
clocks when asked, and the verdict against the bound.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.cluster.clock_offset import MAX_ROUND_TRIP_S, WINDOW, ClockOffset


class ClockOffsetTests(SynchronousTestCase):
    def test_an_answer_places_the_leaders_clock_half_a_round_trip_back(self) -> None:
        """
        The leader stamped its answer about halfway between the request
        leaving and the answer arriving: a node whose wall clock read 2 s
        more than the leader's at that instant has an offset of +2 s.
        """
        estimate = ClockOffset(0.5)
        self.assertIsNone(estimate.offset(1000.0, 10.0))
        # Sent at monotonic 10.0, answered at 10.2; the leader read 5000.1.
        estimate.reading(1, 5000.1, 10.0, 10.2)
        # At monotonic 10.2 the leader's clock reads 5000.2; this node's 5002.2.
        self.assertAlmostEqual(estimate.offset(5002.2, 10.2), 2.0)
        # Later, with both clocks running on, the same offset.
        self.assertAlmostEqual(estimate.offset(5012.2, 20.2), 2.0)

    def test_a_step_of_the_nodes_own_clock_shows_at_once(self) -> None:
        """
        The offset is worked out from the node's clocks when asked, so a
        step of its wall clock shows without another answer.
        """
        estimate = ClockOffset(0.5)
        estimate.reading(1, 5000.0, 10.0, 10.0)
        self.assertAlmostEqual(estimate.offset(5001.0, 11.0), 0.0)
        self.assertAlmostEqual(estimate.offset(5006.0, 11.0), 5.0)
        self.assertAlmostEqual(estimate.offset(4996.0, 11.0), -5.0)

    def test_the_fastest_answer_of_the_window_is_trusted(self) -> None:
        """
        Of the last WINDOW answers, the one with the shortest round trip
        wins (a slow answer's error is up to half its round trip); answers
        slower than MAX_ROUND_TRIP_S or from before they were sent are not used.
        """
        estimate = ClockOffset(0.5)
        # A slow answer: the leader answered at once, so this one says +0.3 s.
        estimate.reading(1, 100.0, 0.0, 0.6)
        self.assertAlmostEqual(estimate.offset(100.6, 0.6), 0.3)
        # A quick one (true offset 0).
        estimate.reading(1, 101.01, 1.0, 1.02)
        self.assertAlmostEqual(estimate.offset(101.02, 1.02), 0.0)
        # Slower ones after it do not displace it.
        estimate.reading(1, 102.0, 2.0, 2.5)
        self.assertAlmostEqual(estimate.offset(103.0, 3.0), 0.0)
        estimate.reading(1, 900.0, 3.0, 3.0 + MAX_ROUND_TRIP_S + 0.1)
        estimate.reading(1, 900.0, 5.0, 4.0)
        self.assertAlmostEqual(estimate.offset(104.0, 4.0), 0.0)
        # Once WINDOW newer answers came, the old quick one is forgotten.
        for n in range(WINDOW):
            estimate.reading(1, 200.0 + n + 0.05, 100.0 + n, 100.1 + n)
        self.assertAlmostEqual(estimate.offset(300.0, 200.0), 0.0)

    def test_another_leaders_clock_starts_over(self) -> None:
        """A reading from a new leader replaces the old leader's readings."""
        estimate = ClockOffset(0.5)
        estimate.reading(1, 100.0, 0.0, 0.0)
        estimate.reading(2, 103.0, 1.0, 1.0)
        self.assertAlmostEqual(estimate.offset(101.0, 1.0), -2.0)

    def test_the_verdict_changes_beyond_the_bound_and_back_within_most_of_it(self) -> None:
        """
        Out of bounds beyond the bound, either way; agreeing again only
        within 80 % of it (no flapping at the edge); an unknown offset
        changes nothing; a node that leads is the reference.
        """
        estimate = ClockOffset(0.5)
        self.assertIsNone(estimate.judge(100.0, 0.0))
        estimate.reading(1, 100.0, 0.0, 0.0)
        self.assertIsNone(estimate.judge(100.5, 0.0))
        self.assertFalse(estimate.skewed)
        self.assertIs(estimate.judge(99.49, 0.0), True)
        self.assertTrue(estimate.skewed)
        self.assertIsNone(estimate.judge(105.0, 0.0))
        self.assertIsNone(estimate.judge(100.45, 0.0))
        self.assertTrue(estimate.skewed)
        self.assertIs(estimate.judge(100.39, 0.0), False)
        self.assertFalse(estimate.skewed)
        self.assertIs(estimate.judge(110.0, 0.0), True)
        self.assertTrue(estimate.reference())
        self.assertFalse(estimate.skewed)
        self.assertEqual(estimate.last_offset, 0.0)
        self.assertIsNone(estimate.offset(110.0, 0.0))
        self.assertFalse(estimate.reference())
