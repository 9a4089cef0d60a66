"""
What authenticating one API request costs, first use and after:

    python -m bench.auth --requests 20000

The real API object over a real SQLite state file (pbkdf2-sha256 hashes as
the node stores them); each request's headers go through the same check the
HTTP routes run. The first use of a credential verifies its hash; later ones
are served from the verified-credential cache.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from passlib.hash import pbkdf2_sha256
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from bench.common import percentile
from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.api.app import SchedulerAPI
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
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
            hash_secret=pbkdf2_sha256.hash,
            verify_secret=pbkdf2_sha256.verify,
        )
        proposer.subscribe(api.on_applied)
        credential = _fired(api.create_credential())
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
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
