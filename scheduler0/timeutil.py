"""
One textual form for instants everywhere: RFC 3339 in UTC with milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from time import thread_time


def utc_from_timestamp(seconds: float) -> datetime:
    """The aware UTC datetime for POSIX C{seconds}."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def format_instant(instant: datetime) -> str:
    """Render an aware datetime as C{YYYY-MM-DDTHH:MM:SS.mmmZ} in UTC."""
    instant = instant.astimezone(UTC)
    # Not strftime("%Y"): glibc writes the year 437 as "437", which no
    # parser reads back and which sorts wrongly as text.
    return (
        f"{instant.year:04d}-{instant.month:02d}-{instant.day:02d}T"
        f"{instant.hour:02d}:{instant.minute:02d}:{instant.second:02d}."
        f"{instant.microsecond // 1000:03d}Z"
    )


def parse_instant(text: str) -> datetime:
    """
    Parse an RFC 3339 instant (with C{Z} or a numeric offset) into an aware
    UTC datetime; raise C{ValueError} for anything else, naive times included.
    """
    if not isinstance(text, str):
        raise ValueError("instant must be a string")
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    parsed = datetime.fromisoformat(candidate)
    if parsed.tzinfo is None:
        raise ValueError(f"instant {text!r} has no UTC offset")
    return parsed.astimezone(UTC)


#: Off the CPU this long between two looks is a stall, not a busy thread.
STALL_S = 1.0
#: ... while using less than this share of it on the CPU.
STALL_CPU_SHARE = 0.25


class StallWatch:
    """
    Tells a stall from a busy reactor. Between two looks, a thread that was
    working used CPU for much of the time that passed (all of it, or its
    share of a machine with more work than cores); one that spent more than
    C{threshold} seconds off the CPU and used almost none was stopped
    (SIGSTOP, a suspended machine), idle, or saw its clock jump -- its
    lateness is not load.
    """

    def __init__(self, threshold: float = STALL_S, cpu: Callable[[], float] = thread_time) -> None:
        self.threshold = threshold
        #: The thread's CPU seconds (replaced in tests).
        self.cpu = cpu
        self._at = -float("inf")
        self._cpu = 0.0

    def stalled(self, now: float) -> bool:
        """Was this thread off the CPU for more than C{threshold} since the last look?"""
        cpu = self.cpu()
        used = cpu - self._cpu
        passed = now - self._at
        self._at, self._cpu = now, cpu
        return passed - used > self.threshold and used < STALL_CPU_SHARE * passed
