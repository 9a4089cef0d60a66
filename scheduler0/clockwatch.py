"""
Notices when the wall clock steps, and keeps the reactor's timers on
elapsed time across the step.

Twisted's reactor keeps time with C{time.time}, the wall clock: a timer set
"in 1 s" is due at wall instant now + 1, so when NTP (or an operator) steps
the wall clock back 30 s every timer of the process waits 30 s more, and
when it steps it forward every timer is due at once. L{ClockWatch} compares
the wall clock with the elapsed clock (C{CLOCK_BOOTTIME}, monotonic and
counting a suspended machine's sleep, so a suspend is time that passed and
not a step) before every reactor turn. When their difference changes by
more than L{STEP_THRESHOLD_S} it moves every pending timer by the step, so
each still runs after the elapsed time it was set for, and reports the
step once (installed, the reactor reads the wall clock through
L{ClockWatch.seconds}, which takes a step in only at the next check, so the
timers one turn sets are all in one frame): one log event, the counts
L{scheduler0.metrics} shows, the C{clock} field of C{GET /healthcheck}, and
its listeners (the scheduler, which decides what the step means for slots).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger

from scheduler0.timeutil import format_instant, utc_from_timestamp

log = Logger()

#: A change of (wall clock - elapsed clock) larger than this, in seconds, is
#: a step. Both clocks are read within READ_SPREAD_S of each other, so
#: nothing but a step moves their difference by this much (NTP slews the
#: two alike). ntpd steps offsets above 0.128 s and slews smaller ones, so
#: a step NTP makes is seen; and it is under a fifth of the shortest Raft
#: election timeout, so timers a step makes early or late by less than
#: this start no election.
STEP_THRESHOLD_S = 0.1
#: Two readings of the elapsed clock around the wall clock's further apart
#: than this (the thread was preempted between them) are read again.
READ_SPREAD_S = 0.001
#: The skip reason of a slot whose instant lies in wall time a forward step
#: jumped over (see scheduler0.scheduler.service).
SKIP_CLOCK_STEPPED = "clock_stepped"

FORWARD = "forward"
BACKWARD = "backward"


def elapsed_clock() -> Callable[[], float]:
    """The process's elapsed clock: C{CLOCK_BOOTTIME} where there is one, else monotonic."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic
    clock_id: int = boottime

    def boot_seconds() -> float:
        return time.clock_gettime(clock_id)

    return boot_seconds


@attrs.frozen
class ClockStep:
    """
    The wall clock moved by C{size_s} (negative: back) without that time
    passing: it read C{before} and then C{after} (POSIX seconds) at one
    instant of elapsed time.
    """

    before: float
    after: float

    @property
    def size_s(self) -> float:
        return self.after - self.before

    @property
    def direction(self) -> str:
        return FORWARD if self.after > self.before else BACKWARD


#: What a step means for slots (see SchedulerService.clock_stepped), as its log event says it.
_MEANING = {
    BACKWARD: "slots already sent are not sent again: jobs wait for the clock to reach"
    " their next slot",
    FORWARD: "the time jumped over is no outage: of the slots due in it each job sends"
    " its first, the others are recorded skipped (clock_stepped)",
}


def _timed_calls(reactor: Any) -> list[Any]:
    """
    Every timer C{reactor} holds, cancelled ones included: a reactor keeps
    its pending timers in a heap ordered by due time, and moving all of
    them by one amount keeps that order (C{getDelayedCalls} leaves the
    cancelled ones out, and moving only the others could break the heap).
    """
    pending = getattr(reactor, "_pendingTimedCalls", None)
    if pending is not None:
        return [*pending, *getattr(reactor, "_newTimedCalls", ())]
    calls = getattr(reactor, "calls", None)  # task.Clock
    if calls is not None:
        return list(calls)
    return list(reactor.getDelayedCalls())


@attrs.define(eq=False)
class ClockWatch:
    """
    Compares the wall clock with the elapsed clock at every L{check} and
    reports each step of the wall clock once (see the module's docstring).
    """

    #: The reactor whose timers are moved with a step (C{IReactorTime}).
    reactor: Any
    wall: Callable[[], float] = time.time
    elapsed: Callable[[], float] = attrs.field(factory=elapsed_clock)
    threshold_s: float = STEP_THRESHOLD_S
    #: Called with each L{ClockStep}, after the timers were moved.
    listeners: list[Callable[[ClockStep], None]] = attrs.field(factory=list)
    #: Steps seen, by direction.
    steps: dict[str, int] = attrs.field(factory=lambda: {FORWARD: 0, BACKWARD: 0})
    #: The last step (None: none since the node started).
    last: ClockStep | None = None
    _offset: float | None = None
    _original: Any = None
    _wrapper: Any = None

    def read(self) -> tuple[float, float]:
        """The wall clock and the elapsed clock, read at (nearly) one instant."""
        for _ in range(3):
            first = self.elapsed()
            wall = self.wall()
            second = self.elapsed()
            if second - first <= READ_SPREAD_S:
                break
        return wall, (first + second) / 2

    def check(self) -> ClockStep | None:
        """Look at the clocks; the step seen since the last look, if any."""
        wall, elapsed = self.read()
        offset = wall - elapsed
        previous, self._offset = self._offset, offset
        if previous is None or abs(offset - previous) <= self.threshold_s:
            return None
        step = ClockStep(before=wall - (offset - previous), after=wall)
        self._stepped(step)
        return step

    def _stepped(self, step: ClockStep) -> None:
        size = step.size_s
        for call in _timed_calls(self.reactor):
            call.time += size
        self.steps[step.direction] += 1
        self.last = step
        log.warn(
            "the wall clock stepped {direction} by {magnitude:.3f} s (from {before} to {after});"
            " timers keep their elapsed time; {meaning}",
            event="clock_step",
            meaning=_MEANING[step.direction],
            direction=step.direction,
            size=size,
            magnitude=abs(size),
            before=format_instant(utc_from_timestamp(step.before)),
            after=format_instant(utc_from_timestamp(step.after)),
        )
        for listener in self.listeners:
            try:
                listener(step)
            except Exception:
                log.failure("a clock step listener {listener!r} failed", listener=listener)

    def snapshot(self) -> dict[str, Any]:
        """The C{clock} field of C{GET /healthcheck}."""
        last = self.last
        return {
            "last_step_s": None if last is None else round(last.size_s, 3),
            "at": None if last is None else format_instant(utc_from_timestamp(last.after)),
            "steps": dict(self.steps),
        }

    def seconds(self) -> float:
        """
        The wall clock as the reactor reads it once installed: as it read at
        the last L{check}, advanced by the elapsed clock. A step is taken
        in only at the next check, before the next turn of the reactor, so
        every timer a turn sets is in the frame of the timers set before it,
        and the check moves them all alike.
        """
        offset = self._offset
        if offset is None:
            return self.wall()
        return self.elapsed() + offset

    def install(self) -> None:
        """
        Check before every turn of the reactor (nothing of it runs between
        the check and the timers it may move), and read the wall clock as
        L{seconds} does.
        """
        self.check()
        reactor: Any = self.reactor
        run = getattr(reactor, "runUntilCurrent", None)
        if run is None or self._original is not None:
            return
        self._original = (run, reactor.seconds)

        def run_until_current() -> None:
            if self._original is not None:
                try:
                    self.check()
                except Exception:
                    log.failure("checking the clocks failed")
            run()

        self._wrapper = (run_until_current, self.seconds)
        reactor.runUntilCurrent = run_until_current
        reactor.seconds = self.seconds

    def uninstall(self) -> None:
        """
        Stop checking before the reactor's turns (and give the reactor back
        what it had before, unless something replaced it since).
        """
        if self._original is None or self._wrapper is None:
            return
        reactor: Any = self.reactor
        for name, original, wrapper in zip(
            ("runUntilCurrent", "seconds"), self._original, self._wrapper, strict=True
        ):
            if vars(reactor).get(name) != wrapper:
                continue
            # The reactor's own method: removing the wrapper uncovers it.
            its_own = getattr(original, "__self__", None) is reactor
            if its_own:
                delattr(reactor, name)
            else:
                setattr(reactor, name, original)
        self._original = None
        self._wrapper = None
