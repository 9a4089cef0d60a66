"""
What the audit log costs the state machine (issue 19): apply N
update_project commands to a state file on disk, alternately without audit
metadata and with it (the log trimmed to KEEP records, so every apply past
KEEP also deletes the oldest), and print the median time per apply of each.

    python -m bench.audit_apply [N] [KEEP] [ROUNDS]     (default 5000 1000 3)

Not part of `python -m bench all`: a spot check of one handler's cost.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.store.audit import audit_stamp
from scheduler0.store.commands import Command
from scheduler0.store.state import StateStore

T = "2026-01-02T03:04:05.678Z"


def _fired(d: Any) -> Any:
    results: list = []
    d.addBoth(results.append)
    return results[0]


def one_run(count: int, keep: int, audited: bool) -> float:
    """Seconds per apply of C{count} commands on a fresh state file."""
    path = os.path.join(tempfile.mkdtemp(), "state.db")
    state = StateStore(SynchronousConnectionPool(path))
    _fired(state.open())
    project = {"uuid": "p", "name": "p", "description": "", "created_at": T, "updated_at": T}
    _fired(state.apply(1, Command("create_project", {"project": project})))
    stamp = audit_stamp(at=T, actor="c", via=1, method="PATCH", route="/projects/<uuid>", keep=keep)
    start = time.perf_counter()
    for n in range(count):
        args = {"uuid": "p", "changes": {"description": f"d{n}"}, "updated_at": T}
        audit = stamp if audited else None
        _fired(state.apply(n + 2, Command("update_project", args, version=2, audit=audit)))
    return (time.perf_counter() - start) / count


def main(argv: list[str]) -> None:
    count = int(argv[0]) if argv else 5000
    keep = int(argv[1]) if len(argv) > 1 else 1000
    rounds = int(argv[2]) if len(argv) > 2 else 3
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for audited in (False, True):
            times[audited].append(one_run(count, keep, audited))
    for audited in (False, True):
        runs = ", ".join(f"{t * 1e6:.0f}" for t in times[audited])
        median = statistics.median(times[audited]) * 1e6
        print(
            f"audit {'on ' if audited else 'off'}: median {median:.0f} us per apply"
            f" (runs: {runs} us; {count} applies, keep {keep})"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
