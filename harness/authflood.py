"""
A flood of failed authentications against a real node, beside a legitimate
client: used by tests/test_auth_flood.py (a few seconds) and by
C{python -m bench auth --flood} (longer).

The flooding clients run in a process of their own (this module run as a
script), so the legitimate client's latency is the node's, not that of a
load generator sharing its reactor. Each of C{clients} flooding clients
sends C{GET /projects} one request after another on its own kept-alive
connection, with either a real API key and a
wrong secret (C{wrong_secret}) or a new random key each time
(C{unknown_key}). Meanwhile the legitimate client sends its own
C{GET /projects} one after another on its own connection; its latencies are
compared with the same client's on the idle node just before. The node's CPU
is read from C{/proc/<pid>/stat} over the flood.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, gatherResults

FLOOD_KINDS = ("wrong_secret", "unknown_key")


def percentile(values: list[float], pct: float) -> float:
    """The C{pct} percentile of C{values} (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process C{pid} so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(reactor: Any) -> tuple[Any, Any]:
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    return HTTPClient(Agent(reactor, pool=pool)), pool


async def _get(http: Any, url: str, headers: dict[str, str]) -> int:
    response = await http.get(url, headers=headers)
    await response.content()
    return int(response.code)


async def legit_latencies(
    http: Any, url: str, headers: dict[str, str], *, count: int = 0, until: float = 0.0
) -> list[float]:
    """
    Milliseconds of sequential C{GET /projects} with good credentials:
    C{count} of them, or as many as fit before C{until} (time.monotonic).
    """
    timings: list[float] = []
    while (count and len(timings) < count) or (not count and time.monotonic() < until):
        started = time.perf_counter()
        code = await _get(http, url + "/projects", headers)
        timings.append((time.perf_counter() - started) * 1000)
        if code != 200:
            raise RuntimeError(f"the legitimate client got {code}")
    return timings


async def _flood_one(
    http: Any, url: str, api_key: str, kind: str, until: float, statuses: Counter
) -> None:
    while time.monotonic() < until:
        key = api_key if kind == "wrong_secret" else secrets.token_urlsafe(24)
        headers = {"x-api-key": key, "x-secret-key": "wrong-" + secrets.token_hex(4)}
        statuses[await _get(http, url + "/projects", headers)] += 1


async def _flood(reactor: Any, url: str, api_key: str, kind: str, seconds: float, clients: int):
    """The flooding clients, in this process: their statuses by code."""
    flooders = [_client(reactor) for _ in range(clients)]
    statuses: Counter = Counter()
    until = time.monotonic() + seconds
    try:
        await gatherResults(
            [
                Deferred.fromCoroutine(_flood_one(http, url, api_key, kind, until, statuses))
                for http, _ in flooders
            ],
            consumeErrors=True,
        )
    finally:
        for _, pool in flooders:
            await pool.closeCachedConnections()
    return statuses


async def flood_run(
    reactor: Any,
    url: str,
    pid: int,
    headers: dict[str, str],
    kind: str,
    *,
    seconds: float,
    clients: int = 8,
    idle_requests: int = 200,
) -> dict[str, Any]:
    """
    One flood of C{kind} for C{seconds} from C{clients} clients (in a child
    process) beside the legitimate client: its idle and flood p50/p95, the
    node's CPU (percent of one core) and requests/s over the flood, and the
    flood's statuses.
    """
    from twisted.internet.utils import getProcessOutputAndValue

    if kind not in FLOOD_KINDS:
        raise ValueError(f"kind: one of {FLOOD_KINDS}, not {kind!r}")
    legit, legit_pool = _client(reactor)
    try:
        await legit_latencies(legit, url, headers, count=20)  # warm: connection, caches
        idle = await legit_latencies(legit, url, headers, count=idle_requests)
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        argv = [__file__, url, headers["x-api-key"], kind, str(seconds), str(clients)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        flooding = getProcessOutputAndValue(sys.executable, argv, env=env, reactor=reactor)
        # The flooders need a moment to start: measure while they run.
        await legit_latencies(legit, url, headers, until=time.monotonic() + 0.5)
        busy = await legit_latencies(legit, url, headers, until=started + seconds)
        out, err, code = await flooding
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        await legit_pool.closeCachedConnections()
    if code:
        raise RuntimeError(f"the flooding process failed: {err.decode()[-2000:]}")
    statuses = json.loads(out)
    total = sum(statuses.values())
    return {
        "kind": kind,
        "clients": clients,
        "seconds": round(elapsed, 2),
        "idle_p50_ms": round(percentile(idle, 50), 2),
        "idle_p95_ms": round(percentile(idle, 95), 2),
        "flood_p50_ms": round(percentile(busy, 50), 2),
        "flood_p95_ms": round(percentile(busy, 95), 2),
        "legit_requests": len(busy),
        "flood_requests_per_s": round(total / elapsed, 1),
        "node_cpu_percent": round(100 * cpu / elapsed, 1),
        "statuses": statuses,
    }


def within_goal(result: dict[str, Any]) -> bool:
    """The issue's goal: flood p95 within 3x the idle p95 plus 5 ms."""
    return bool(result["flood_p95_ms"] <= 3 * result["idle_p95_ms"] + 5)


def _main(argv: list[str]) -> None:
    """Flood: URL API_KEY KIND SECONDS CLIENTS; print the statuses as JSON."""
    from twisted.internet.task import react

    url, api_key, kind, seconds, clients = argv

    async def go(reactor: Any) -> None:
        statuses = await _flood(reactor, url, api_key, kind, float(seconds), int(clients))
        print(json.dumps({str(code): n for code, n in sorted(statuses.items())}))

    react(lambda reactor: Deferred.fromCoroutine(go(reactor)))


if __name__ == "__main__":
    _main(sys.argv[1:])
