"""
How far this node's wall clock is from its leader's (issue 16).

Handovers in a cluster happen at instants of wall time, and every node
fires its own jobs by its own wall clock, so the nodes must agree on it.
The leader is the reference: every lease answer it sends (over the Raft
link or peer HTTP) carries its wall time. A follower notes, on its
monotonic clock, when the request left and when the answer came, and
keeps, per answer, the leader's wall time as an offset from its own
monotonic clock, NTP-style: the leader read its clock about half a round
trip before the answer arrived, so at monotonic instant C{m} the leader's
wall clock reads about C{m + base}, where
C{base = leader_time - (sent + received) / 2}. Of the last L{WINDOW}
answers the one with the shortest round trip is trusted (its error is at
most half its round trip; a slow answer's is larger), like NTP's clock
filter.

The offset is then C{own wall time - (monotonic now + base)}: positive
when this node's clock is ahead of the leader's. It is worked out whenever
it is asked, from this node's clocks at that moment, so a step of this
node's own wall clock shows at once, without waiting for the next answer;
a step of the leader's clock shows once its answers outnumber the older
ones in the window (L{WINDOW} answers at most: under 2 s at the 0.1 s
renewal interval).

This module is pure: times are passed in.
"""

from __future__ import annotations

from collections import deque

import attrs

#: Lease answers whose readings are kept; the one with the shortest round trip is trusted.
WINDOW = 16
#: An answer slower than this says too little about the leader's clock and is not used.
MAX_ROUND_TRIP_S = 1.0
#: A node out of bounds agrees again once its offset is within this share of
#: the bound (a clock hovering at the bound does not flap in and out).
AGREE_FRACTION = 0.8


@attrs.define(eq=False)
class ClockOffset:
    """
    A follower's estimate of its clock offset from its leader's, and whether
    it is beyond C{bound_s} (a node out of bounds does not fire).
    """

    bound_s: float
    #: (round trip, base) of the last answers of the current leader.
    _readings: deque[tuple[float, float]] = attrs.field(factory=lambda: deque(maxlen=WINDOW))
    _leader: int | None = None
    #: The trusted reading's base (None: no reading of this leader yet).
    _base: float | None = None
    #: Is the node's clock out of bounds (as last judged)?
    skewed: bool = False
    #: The offset when it was last judged (None: unknown).
    last_offset: float | None = None

    def reading(self, leader: int, leader_time: float, sent: float, received: float) -> None:
        """
        An answer of C{leader} stamped C{leader_time} (its wall clock), to a
        request that left at monotonic C{sent} and was answered at C{received}.
        """
        if leader != self._leader:
            # Another leader's clock: the readings of the last one say nothing of it.
            self._leader = leader
            self._readings.clear()
            self._base = None
        round_trip = received - sent
        if not 0 <= round_trip <= MAX_ROUND_TRIP_S:
            return
        self._readings.append((round_trip, leader_time - (sent + received) / 2))
        self._base = min(self._readings)[1]

    def offset(self, wall: float, monotonic: float) -> float | None:
        """This node's wall clock minus its leader's, now (None: unknown)."""
        if self._base is None:
            return None
        return wall - (monotonic + self._base)

    def judge(self, wall: float, monotonic: float) -> bool | None:
        """
        Judge the offset now; return the new verdict when it changed (True:
        out of bounds, False: agrees again), else None. An unknown offset
        leaves the verdict as it was.
        """
        offset = self.offset(wall, monotonic)
        self.last_offset = offset
        if offset is None:
            return None
        if not self.skewed and abs(offset) > self.bound_s:
            self.skewed = True
            return True
        if self.skewed and abs(offset) <= self.bound_s * AGREE_FRACTION:
            self.skewed = False
            return False
        return None

    def reference(self) -> bool:
        """
        This node leads: it is the reference, offset 0. Return True when
        that ends an out-of-bounds verdict.
        """
        self._leader = None
        self._readings.clear()
        self._base = None
        self.last_offset = 0.0
        was = self.skewed
        self.skewed = False
        return was
