"""
What authenticating one API request costs, first use and after, and what a
failed one costs:

    python -m bench.auth --requests 20000
    python -m bench.auth --flood [--seconds 10]

The real API object over a real SQLite state file; each request's headers
go through the same check the HTTP routes run. The first use of a
credential verifies its keyed hash; later ones are served from the
verified-credential cache. Failure cost, CPU per request in the same run:
an anonymous request (401), a wrong secret against a pbkdf2 hash as stored
before issue 17 (before), a wrong secret against the keyed hash with the
throttle off (after, unthrottled), and past the throttle (after, 429).

--flood starts a real node and floods it from 8 clients with wrong secrets
for a real key, then with unknown keys, beside a legitimate client
(harness/authflood.py): idle and flood p95, node CPU and requests/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from passlib.hash import pbkdf2_sha256
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, react
from twisted.web.http_headers import Headers

from bench.common import percentile
from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.api.app import SchedulerAPI
from scheduler0.api.errors import APIError
from scheduler0.api.limits import FailureThrottle
from scheduler0.api.routes import ROUTES
from scheduler0.store.local import LocalProposer
from scheduler0.store.log import CommandLog
from scheduler0.store.state import StateStore


class _Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.requestHeaders = Headers({k: [v] for k, v in headers.items()})


class _Admin:
    username = "admin"
    password = "not used here"
    secret_key = "bench secret key"


class _Defaults:
    catch_up_window_seconds = 60.0
    job_execution_timeout = 30.0
    job_execution_retry_max = 10
    job_execution_retry_delay = 1.0
    job_execution_retry_max_delay = 60.0
    http_executor_payload_max_size_mb = 2.0


def _fired(d: Deferred) -> object:
    box: list = []
    d.addBoth(box.append)
    if not box:
        raise RuntimeError("did not fire synchronously")
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def _cpu_per_request(api: SchedulerAPI, route, headers: dict[str, str], n: int) -> dict:
    """CPU and wall microseconds per authentication of C{headers}, which must fail."""
    request = _Request(headers)
    statuses: set[int] = set()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        try:
            _fired(Deferred.fromCoroutine(api.auth.authenticate(route, request)))
        except APIError as error:
            statuses.add(error.status)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "cpu_us": round(cpu / n * 1e6, 1),
        "wall_us": round(wall / n * 1e6, 1),
        "status": sorted(statuses),
    }


def failure_costs(api: SchedulerAPI, legacy_key: str, keyed_key: str, n: int) -> dict:
    """The cost of failed authentications of each kind, measured one after another."""
    route = next(r for r in ROUTES if r.handler == "list_projects")
    off = FailureThrottle(api.clock, allowed=0)
    on = FailureThrottle(api.clock)
    wrong = "not-the-secret"
    api.auth.throttle = off
    costs = {"anonymous 401": _cpu_per_request(api, route, {}, n)}
    # Before issue 17: a pbkdf2 hash checked for every wrong secret.
    costs["wrong secret, pbkdf2 (before)"] = _cpu_per_request(
        api, route, {"x-api-key": legacy_key, "x-secret-key": wrong}, max(1, n // 100)
    )
    costs["wrong secret, keyed, unthrottled"] = _cpu_per_request(
        api, route, {"x-api-key": keyed_key, "x-secret-key": wrong}, n
    )
    costs["unknown key, remembered"] = _cpu_per_request(
        api, route, {"x-api-key": "nobody", "x-secret-key": wrong}, n
    )
    api.auth.throttle = on
    costs["wrong secret, throttled 429 (after)"] = _cpu_per_request(
        api, route, {"x-api-key": keyed_key, "x-secret-key": wrong}, n
    )
    return costs


def flood(seconds: float) -> dict:
    """A real node flooded from 8 clients (harness/authflood.py), each kind in turn."""
    from bench.common import scratch_dir
    from harness.authflood import FLOOD_KINDS, flood_run, within_goal
    from harness.process import client_headers, prepare_single_node

    results: list[dict] = []

    async def go(reactor) -> None:
        with scratch_dir("bench-auth-flood") as folder:
            node = await prepare_single_node(reactor, folder)
            await node.start()
            try:
                headers = await client_headers(node)
                for kind in FLOOD_KINDS:
                    result = await flood_run(
                        reactor, node.url, node.pid, headers, kind, seconds=seconds
                    )
                    result["within_goal"] = within_goal(result)
                    results.append(result)
            finally:
                await node.stop()

    try:
        react(lambda r: Deferred.fromCoroutine(go(r)))
    except SystemExit as e:  # react always exits; go's failure is a non-zero code
        if e.code:
            raise
    return {"floods": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--flood", action="store_true", help="flood a real node instead")
    parser.add_argument("--seconds", type=float, default=10.0, help="per flood (--flood)")
    args = parser.parse_args()
    if args.flood:
        print(json.dumps(flood(args.seconds), indent=2))
        return
    clock = Clock()
    clock.advance(time.time())
    with tempfile.TemporaryDirectory() as folder:
        state = StateStore(SynchronousConnectionPool(os.path.join(folder, "state.db")))
        _fired(state.open())
        log = CommandLog(SynchronousConnectionPool(os.path.join(folder, "log.db")))
        _fired(log.open())
        proposer = LocalProposer(log, state, clock)
        _fired(proposer.start())
        api = SchedulerAPI(
            state=state,
            proposer=proposer,
            executions=None,
            scheduler=None,
            clock=clock,
            defaults=_Defaults(),
            admin=_Admin(),
            health=dict,
            verify_secret=pbkdf2_sha256.verify,
        )
        proposer.subscribe(api.on_applied)
        credential = _fired(api.create_credential())
        # A credential stored as before issue 17 (pbkdf2), never used (so never upgraded).
        api.credential_routes.hash_secret = pbkdf2_sha256.hash
        legacy = _fired(api.create_credential())
        api.credential_routes.hash_secret = api.auth.hasher.hash
        route = next(r for r in ROUTES if r.handler == "list_projects")
        request = _Request(
            {"x-api-key": credential["api_key"], "x-secret-key": credential["api_secret"]}
        )

        def once() -> float:
            started = time.perf_counter()
            _fired(Deferred.fromCoroutine(api.auth.authenticate(route, request)))
            return (time.perf_counter() - started) * 1000

        first = once()
        timings = [once() for _ in range(args.requests)]
        failures = failure_costs(api, legacy["api_key"], credential["api_key"], args.requests)
    print(
        json.dumps(
            {
                "first_use_ms": round(first, 2),
                "after_first_use_ms": {
                    "mean": round(sum(timings) / len(timings), 4),
                    "p50": round(percentile(timings, 50), 4),
                    "p99": round(percentile(timings, 99), 4),
                },
                "requests": args.requests,
                "failure_cost_per_request": failures,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
