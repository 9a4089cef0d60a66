"""
Limits that keep one client from starving the others: a cap on how deeply a
JSON body nests, checked before it is parsed, and a token-bucket rate limit
per credential.
"""

from __future__ import annotations

import math
import re
from itertools import accumulate

import attrs
from twisted.internet.interfaces import IReactorTime

# A JSON string, escapes included. Possessive repeats keep a long string (or
# a long run of backslashes) linear. An unterminated string does not match,
# so brackets after its opening quote are counted: a stricter answer for a
# body that is malformed anyway.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)

# Every byte that is not a bracket, to be deleted with bytes.translate.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

# The change in depth for each byte value that survives the deletion.
_STEP = [0] * 256
for _opening in b"[{":
    _STEP[_opening] = 1
for _closing in b"]}":
    _STEP[_closing] = -1


def json_depth_problem(raw: bytes, max_depth: int) -> str | None:
    """
    Why C{raw} nests arrays and objects deeper than C{max_depth} levels, or
    C{None} when it does not.

    This runs before C{json.loads}, whose parser recurses once per level, so
    a hostile body nested a hundred thousand deep is refused in linear time
    without recursing. Brackets inside strings do not count. The scan does
    not validate the JSON; the parser still does that.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return None
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return None
    deepest = max(accumulate(map(_STEP.__getitem__, brackets)))
    if deepest > max_depth:
        return f"body: nested deeper than {max_depth} levels"
    return None


@attrs.define(eq=False)
class RateLimiter:
    """
    A token bucket per key (a client credential's API key, or the admin
    user): each holds up to C{burst} tokens, refilled at C{rate} per second,
    and each request takes one. A C{rate} of 0 turns the limit off.

    Memory stays bounded by the keys seen recently: a bucket left alone long
    enough to refill is the same as a new one, so it is dropped.
    """

    clock: IReactorTime
    rate: float
    burst: int
    # key -> (tokens, time of the last take), oldest take first.
    _buckets: dict[str, tuple[float, float]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate: must be 0 (off) or more, not {self.rate!r}")
        if self.rate > 0 and self.burst < 1:
            raise ValueError(f"burst: must be at least 1, not {self.burst!r}")

    def take(self, key: str) -> float | None:
        """
        Take a token for one request by C{key}: C{None} when the request may
        go ahead, otherwise the whole number of seconds (at least 1) until a
        token is free, for a 429's C{Retry-After}.
        """
        if self.rate <= 0:
            return None
        now = self.clock.seconds()
        self._prune(now)
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        # A clock stepped back gives no tokens rather than taking some.
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return None
        self._buckets[key] = (tokens, now)
        wait = (1 - tokens) / self.rate
        # Allow for float error so an exact 1 s does not round up to 2.
        return float(max(1, math.ceil(wait - 1e-9)))

    def _prune(self, now: float) -> None:
        """
        Drop buckets not used for as long as a refill from empty takes. The
        dict keeps the most recently used key last, so these are a prefix:
        each bucket is dropped once, which keeps C{take} O(1) amortized.
        """
        refill = self.burst / self.rate
        buckets = self._buckets
        while buckets:
            key = next(iter(buckets))
            if now - buckets[key][1] < refill:
                return
            del buckets[key]

    def __len__(self) -> int:
        """How many buckets are held (for tests and metrics)."""
        return len(self._buckets)


@attrs.define
class _Scope:
    """One scope's recent failures, how long it is throttled, and whether its burst was logged."""

    failures: list[float] = attrs.field(factory=list)
    blocked_until: float = 0.0
    last: float = 0.0
    logged: bool = False


@attrs.define(eq=False)
class FailureThrottle:
    """
    Failed authentications per scope (a source address, an API key): the
    C{allowed}-th failure within C{window} seconds throttles the scope for
    C{window} seconds. Throttled requests are refused (429) without hashing
    or reading anything, and are not counted as failures, so a flood gets
    at most C{allowed} costly answers per scope and window.

    A burst (failures and refusals with no pause of a window between them)
    is reported once, when it first throttles. Memory stays bounded:
    scopes quiet for a window are dropped, and past C{max_scopes} the
    least recently seen go first.
    """

    clock: IReactorTime
    allowed: int = 5
    window: float = 10.0
    max_scopes: int = 100_000
    # The scope seen least recently first.
    _scopes: dict[str, _Scope] = attrs.field(init=False, factory=dict)

    def wait(self, scope: str) -> float | None:
        """
        C{None} when C{scope} may try to authenticate, else the whole
        number of seconds (at least 1) until it may, for C{Retry-After}.
        """
        if self.allowed <= 0:
            return None
        held = self._scopes.get(scope)
        if held is None:
            return None
        now = self.clock.seconds()
        left = held.blocked_until - now
        if left <= 0:
            return None
        held.last = now
        return float(max(1, math.ceil(left - 1e-9)))

    def failed(self, scope: str) -> bool:
        """
        Count one failure of C{scope}; True when it starts a throttled
        burst (to be logged once). An C{allowed} of 0 turns the throttle off.
        """
        if self.allowed <= 0:
            return False
        now = self.clock.seconds()
        self._prune(now)
        held = self._scopes.pop(scope, None) or _Scope()
        held.failures = [t for t in held.failures if now - t < self.window]
        held.failures.append(now)
        held.last = now
        self._scopes[scope] = held
        if len(held.failures) < self.allowed:
            return False
        held.failures = []
        held.blocked_until = now + self.window
        first, held.logged = not held.logged, True
        return first

    def _prune(self, now: float) -> None:
        """Drop scopes quiet for a window (mostly a prefix), and the oldest past the cap."""
        scopes = self._scopes
        while scopes:
            scope = next(iter(scopes))
            held = scopes[scope]
            quiet = now - held.last >= self.window and held.blocked_until <= now
            if not quiet and len(scopes) < self.max_scopes:
                return
            del scopes[scope]

    def __len__(self) -> int:
        """How many scopes are held (for tests)."""
        return len(self._scopes)
