"""
Which due slots a node past its capacity still sends.

A node that cannot send all that falls due must not fall further and
further behind (every slot late, leases and Raft heartbeats late,
elections): it sends what it can on time and records the rest as
C{skipped} with the reason C{overloaded}, at the earliest point and so at a
small part of the cost of sending it. The scheduler sheds a slot

  - when it reaches the slot more than L{LATE_S} after the slot became
    ready (the timer heap itself is behind), before building anything for
    it; and
  - when it hands a delivery over while the queue of that delivery's
    callback URL holds one that became ready more than L{GATE_S} ago (the
    executor is behind).

Both only while the node is busy: its reactor thread used more than
L{BUSY} of the last L{CONTROL_S} on the CPU. A queue that grows behind a
slow callback endpoint on an idle node is that endpoint's business, not
overload, and is left alone.

A slot becomes ready at its instant, or later when the node could not fire
it then (its jobs being loaded, no lease, the job just taken over): a slot
late for a restart, a missing lease or a move is not late for load. Nor is
one late for a stall (see L{scheduler0.timeutil.StallWatch}): a timer that
ran late while the reactor's thread was off the CPU was held up by a
stopped process, a suspended machine or a clock that jumped.
"""

from __future__ import annotations

from collections.abc import Callable
from time import thread_time

import attrs

from scheduler0.timeutil import STALL_S, StallWatch

#: A slot the timer heap reaches this long after it became ready is shed.
LATE_S = 1.0
#: A delivery is shed when its URL's queue holds one ready this long ago.
GATE_S = 0.5
#: How often the node looks at how busy its reactor thread is.
CONTROL_S = 0.5
#: The share of that time on the CPU above which the node is busy.
BUSY = 0.8


@attrs.define
class Admission:
    """Whether the node sheds now, and what it shed."""

    #: True while the reactor thread is busy (it may shed).
    busy: bool = False
    #: Slots shed since the node started.
    shed: int = 0
    #: The reactor thread's CPU seconds (replaced in tests).
    cpu: Callable[[], float] = thread_time
    _window_start: float | None = None
    _window_cpu: float = 0.0
    _stalls: StallWatch = attrs.field(
        default=attrs.Factory(lambda self: StallWatch(STALL_S, self.cpu), takes_self=True)
    )

    def timer_ran(self, due: float, now: float) -> bool:
        """
        A timer due at C{due} ran at C{now}: was it held up by a stall
        (more than L{STALL_S} late, the thread off the CPU as long)?
        """
        return self._stalls.stalled(now) and now - due > STALL_S

    def steer(self, now: float) -> None:
        """Look again at how busy the reactor thread is, once a period has passed."""
        start = self._window_start
        cpu = self.cpu()
        if start is None or now < start:
            self._window_start, self._window_cpu = now, cpu
            return
        elapsed = now - start
        if elapsed < CONTROL_S:
            return
        self.busy = (cpu - self._window_cpu) > BUSY * elapsed
        self._window_start, self._window_cpu = now, cpu
