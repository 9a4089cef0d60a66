"""
Bounded waits for real-process tests: poll a condition on the reactor until
it holds or a deadline passes. Never a fixed sleep.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from twisted.internet.defer import Deferred, TimeoutError

T = TypeVar("T")


def _later(clock: Any, seconds: float) -> Deferred:
    d: Deferred = Deferred()
    clock.callLater(seconds, d.callback, None)
    return d


@overload
async def wait_for(
    clock: Any,
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def wait_for(
    clock: Any,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def wait_for(
    clock: Any,
    probe: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """
    Call C{probe} every C{interval} seconds until it returns something true
    (awaiting it if it is awaitable; an exception counts as false), and
    return that; raise C{TimeoutError} naming C{what} after C{timeout}.
    """
    deadline = clock.seconds() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
        except Exception as e:  # the thing polled may not be up yet
            last_error = e
        if clock.seconds() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})"
            )
        await _later(clock, interval)
