"""
The resource guard: it watches this process's memory and CPU use and says
when the node should stop taking new executions (MaxMemory, MaxCPU).

Both limits use hysteresis so the node does not flap at the threshold:
- memory (RSS): pause at >= 70 % of MaxMemory, resume below 60 %;
- CPU (percent of one core, averaged over the last C{cpu_window_s} seconds of
  clock time from the process's user+system CPU times): pause above MaxCPU,
  resume at or below 6/7 of MaxCPU (about 85.7 %, the same 60:70 ratio as
  memory). The CPU average only counts once a full window has been observed,
  so a start-up burst before the window fills cannot pause the node.
A limit of 0 turns that check off.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()

MEMORY_PAUSE_FRACTION = 0.70
MEMORY_RESUME_FRACTION = 0.60
CPU_RESUME_FRACTION = MEMORY_RESUME_FRACTION / MEMORY_PAUSE_FRACTION

_MB = 1024 * 1024


def _default_process() -> Any:
    import psutil

    return psutil.Process()


@attrs.define(eq=False)
class ResourceGuard:
    """
    Sample the process every C{interval_s} on the injected clock and keep
    C{paused}/C{reason} up to date; observers hear every pause/resume change.
    """

    clock: IReactorTime
    max_memory_mb: float
    max_cpu_percent: float
    process: Any = None
    interval_s: float = 1.0
    cpu_window_s: float = 5.0

    _memory_paused: bool = attrs.field(default=False, init=False)
    _cpu_paused: bool = attrs.field(default=False, init=False)
    _memory_reason: str | None = attrs.field(default=None, init=False)
    _cpu_reason: str | None = attrs.field(default=None, init=False)
    _rss_mb: float = attrs.field(default=0.0, init=False)
    _cpu_percent: float = attrs.field(default=0.0, init=False)
    _samples: deque[tuple[float, float]] = attrs.field(factory=deque, init=False)
    _observers: list[Callable[[bool, str | None], None]] = attrs.field(factory=list, init=False)
    _loop: LoopingCall | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if self.max_memory_mb < 0:
            raise ValueError(f"MaxMemory must not be negative, got {self.max_memory_mb!r}")
        if self.max_cpu_percent < 0:
            raise ValueError(f"MaxCPU must not be negative, got {self.max_cpu_percent!r}")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s!r}")
        if self.cpu_window_s <= 0:
            raise ValueError(f"cpu_window_s must be positive, got {self.cpu_window_s!r}")
        if self.process is None:
            self.process = _default_process()

    # -- state ---------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether the node should refuse new executions now."""
        return self._memory_paused or self._cpu_paused

    @property
    def reason(self) -> str | None:
        """Why the node is paused, for humans; C{None} while not paused."""
        reasons = [r for r in (self._memory_reason, self._cpu_reason) if r is not None]
        return "; ".join(reasons) if reasons else None

    def snapshot(self) -> dict[str, Any]:
        """The guard's state and last readings, for C{/healthcheck}."""
        return {
            "paused": self.paused,
            "reason": self.reason,
            "rss_mb": round(self._rss_mb, 1),
            "cpu_percent": round(self._cpu_percent, 1),
            "max_memory_mb": self.max_memory_mb,
            "max_cpu_percent": self.max_cpu_percent,
        }

    def add_observer(self, fn: Callable[[bool, str | None], None]) -> None:
        """Call C{fn(paused, reason)} on every change between paused and running."""
        self._observers.append(fn)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Take a first sample now, then one every C{interval_s}."""
        if self._loop is not None and self._loop.running:
            return
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.interval_s, now=True)

    def stop(self) -> None:
        """Stop sampling; the last state stays readable."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    # -- checks --------------------------------------------------------------

    def check(self) -> None:
        """Sample memory and CPU once and update the state; never raises."""
        was_paused = self.paused
        try:
            self._check_memory()
        except Exception:
            log.failure("resource guard: reading memory use failed; keeping the last state")
        try:
            self._check_cpu()
        except Exception:
            log.failure("resource guard: reading CPU use failed; keeping the last state")
        if self.paused != was_paused:
            self._notify()

    def _check_memory(self) -> None:
        self._rss_mb = float(self.process.memory_info().rss) / _MB
        limit = self.max_memory_mb
        if not limit:
            self._memory_paused = False
            self._memory_reason = None
            return
        share = self._rss_mb / limit
        if self._memory_paused:
            if share < MEMORY_RESUME_FRACTION:
                self._memory_paused = False
        elif share >= MEMORY_PAUSE_FRACTION:
            self._memory_paused = True
        self._memory_reason = (
            f"memory {self._rss_mb:.0f}/{limit:g} MB ({share * 100:.0f}%): pauses at >= "
            f"{MEMORY_PAUSE_FRACTION * 100:.0f}%, resumes below {MEMORY_RESUME_FRACTION * 100:.0f}%"
            if self._memory_paused
            else None
        )

    def _check_cpu(self) -> None:
        times = self.process.cpu_times()
        now = float(self.clock.seconds())
        used = float(times.user) + float(times.system)
        samples = self._samples
        samples.append((now, used))
        # Keep the newest sample that is at least one window old as the base.
        while len(samples) > 2 and samples[1][0] <= now - self.cpu_window_s:
            samples.popleft()
        base_at, base_used = samples[0]
        span = now - base_at
        if span <= 0:
            return
        self._cpu_percent = max(0.0, (used - base_used) / span * 100.0)
        limit = self.max_cpu_percent
        if not limit:
            self._cpu_paused = False
            self._cpu_reason = None
            return
        # Judge only a full window (with half an interval of slack for timer jitter).
        if span < self.cpu_window_s - self.interval_s / 2:
            return
        average = self._cpu_percent
        if self._cpu_paused:
            if average <= limit * CPU_RESUME_FRACTION:
                self._cpu_paused = False
        elif average > limit:
            self._cpu_paused = True
        self._cpu_reason = (
            f"cpu {average:.0f}% ({self.cpu_window_s:g} s average): pauses above {limit:g}%, "
            f"resumes at <= {limit * CPU_RESUME_FRACTION:.1f}%"
            if self._cpu_paused
            else None
        )

    def _notify(self) -> None:
        paused, reason = self.paused, self.reason
        if paused:
            log.warn("resource guard: pausing new executions ({reason})", reason=reason)
        else:
            log.info("resource guard: resuming new executions")
        for fn in list(self._observers):
            try:
                fn(paused, reason)
            except Exception:
                log.failure("resource guard observer failed")
