"""
A linearizability checker for register histories, in the style of
Wing & Gong's search with Lowe's/Porcupine's memoisation.

A history is a list of :class:`~harness.raftsim.Operation`-like
objects with ``kind`` ("put"/"get"), ``key``, ``value``, ``output``, ``call``
and ``ret`` (ints on one clock; ``ret`` None means the outcome is unknown, so
the operation may take effect at any point after its call, or never) and
``failed`` (certainly no effect; ignored).  Registers are independent, so the
history is split per key and each part is checked alone, which keeps the
search small.

The search linearizes one operation at a time: an operation may go next only
if it was called before every remaining operation returned.  Visited
(linearized-set, register value) pairs are cached, so each is explored once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

_INFINITY = float("inf")


@attrs.frozen
class CheckResult:
    ok: bool
    #: The key whose sub-history is not linearizable (when not ok).
    key: str | None = None
    explored: int = 0


def check_history(history: Iterable[Any]) -> CheckResult:
    """Whether the whole history is linearizable (checked key by key)."""
    by_key: dict[str, list[Any]] = defaultdict(list)
    for op in history:
        if op.failed:
            continue
        if op.kind not in ("put", "get"):
            raise ValueError(f"operation kind must be 'put' or 'get', not {op.kind!r}")
        if op.kind == "get" and op.ret is None:
            continue  # a read with no answer constrains nothing
        by_key[op.key].append(op)
    explored = 0
    for key in sorted(by_key):
        ok, n = _check_register(by_key[key])
        explored += n
        if not ok:
            return CheckResult(False, key, explored)
    return CheckResult(True, None, explored)


def _check_register(ops: Sequence[Any]) -> tuple[bool, int]:
    n = len(ops)
    calls = [op.call for op in ops]
    rets = [_INFINITY if op.ret is None else op.ret for op in ops]
    full = (1 << n) - 1
    seen: set[tuple[int, object]] = set()
    stack: list[tuple[int, object]] = [(0, None)]
    explored = 0
    while stack:
        done, value = stack.pop()
        if done == full:
            return True, explored
        if (done, value) in seen:
            continue
        seen.add((done, value))
        explored += 1
        remaining = [i for i in range(n) if not done >> i & 1]
        horizon = min(rets[i] for i in remaining)
        for i in remaining:
            if calls[i] > horizon:
                continue
            op = ops[i]
            if op.kind == "put":
                stack.append((done | 1 << i, op.value))
            elif op.output == value:
                stack.append((done | 1 << i, value))
    return False, explored
