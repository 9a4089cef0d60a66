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
  - while the node is busy, when it hands a delivery over while the queue
    of that delivery's callback URL holds one that became ready more than
    L{GATE_S} ago (the executor is behind).

Busy: in the last L{CONTROL_S} the reactor thread was on the CPU more than
L{BUSY} of the time, or ran one of the scheduler's timers more than
L{BUSY_LAG_S} late (it was behind: working, or waiting for a CPU on a
machine with more work than cores), or the records of the slots it sent
piled up faster than they could be written (see
L{scheduler0.store.executions.ExecutionStore.backlogged}). A queue that grows behind a slow
callback endpoint on an idle node is that endpoint's business, not
overload, and is left alone.

A slot becomes ready at its instant moved on by the time the node lost to
other things since (see SchedulerService._ready): its jobs being loaded
after a restart or a restore, gaps without a lease, stalls (see
L{scheduler0.timeutil.StallWatch}: a timer that ran late while the reactor
thread was off the CPU and used almost none was held up by a stopped
process, a suspended machine or a clock that jumped), and, for a job it
took over, the take-over. Only the time that is left counts as load, so
catching up after any of those is never shed unless the node then falls
behind by itself.
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
#: A timer of the scheduler this late makes the node busy too.
BUSY_LAG_S = 0.1


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
    _window_lag: float = 0.0
    _stalls: StallWatch = attrs.field(
        default=attrs.Factory(lambda self: StallWatch(STALL_S, self.cpu), takes_self=True)
    )

    def timer_ran(self, due: float, now: float) -> bool:
        """
        A timer due at C{due} ran at C{now}: was it held up by a stall
        (more than L{STALL_S} late, the thread off the CPU as long)?
        """
        late = now - due
        if self._stalls.stalled(now) and late > STALL_S:
            return True
        if late > self._window_lag:
            self._window_lag = late
        return False

    def steer(self, now: float, writer_behind: Callable[[], bool] | None = None) -> None:
        """
        Look again at how busy the reactor thread is, once a period has
        passed; a C{writer_behind} that answers True (the node's execution
        records are written slower than they are made) makes it busy too.
        """
        start = self._window_start
        cpu = self.cpu()
        if start is None or now < start:
            self._window_start, self._window_cpu = now, cpu
            return
        elapsed = now - start
        if elapsed < CONTROL_S:
            return
        self.busy = (
            (cpu - self._window_cpu) > BUSY * elapsed
            or self._window_lag > BUSY_LAG_S
            or (writer_behind is not None and writer_behind())
        )
        self._window_start, self._window_cpu, self._window_lag = now, cpu, 0.0
