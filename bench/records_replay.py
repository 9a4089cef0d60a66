"""
A node's executions.db at its steady state, without the rest of the node:
the write pattern of 8,000 jobs @every 1s (8,000 executions/s; --jobs), one
flush every 0.25 s of simulated time (~2,000 records), 10 % of executions
written twice ("running", then the outcome a flush later), the periodic prune
every 60 s of simulated time, over a file prefilled to 100 records per job
(--history). bench cpu starts from an empty file and runs under a minute, so
it never sees the pruning nor a file this size.

CPU is this thread's (time.thread_time) around each flush and prune: the
synchronous pool runs the interactions inline, as the node's adbapi thread
would. Prints JSON: write, prune and total us of CPU per execution.

    python -m bench.records_replay DIR [--seconds 120]
    PYTHONPATH=<other tree> python -m bench.records_replay DIR   # the same on another commit
"""

import argparse
import json
import os
import time
import uuid

from twisted.internet import task

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.service import EXECUTIONS_PRAGMAS
from scheduler0.store.executions import ExecutionStore
from scheduler0.store.sqlite import prepare_connection
from scheduler0.timeutil import format_instant, utc_from_timestamp

T0 = 1767225600.0
NS = uuid.UUID("00000000-0000-0000-0000-000000000001")


def opener(connection):
    prepare_connection(connection)
    for pragma in EXECUTIONS_PRAGMAS:
        connection.execute(f"PRAGMA {pragma}")


def rec(job, project, slot, state, **kw):
    at = format_instant(utc_from_timestamp(T0 + slot))
    r = {
        "execution_id": str(uuid.uuid5(NS, f"{job}/{at}")),
        "job_uuid": job,
        "project_uuid": project,
        "scheduled_at": at,
        "state": state,
        "attempts": 1,
        "node_id": 1,
        "started_at": at,
        "finished_at": None if state == "running" else at,
        "status_code": None if state == "running" else 200,
        "error": None,
        "skip_reason": None,
    }
    r.update(kw)
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--jobs", type=int, default=8000)
    p.add_argument("--history", type=int, default=100)
    p.add_argument("--seconds", type=int, default=120)
    p.add_argument("--prefill", type=int, default=None, help="records per job before t=0")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    path = os.path.join(a.dir, "executions.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    jobs = [str(uuid.uuid4()) for _ in range(a.jobs)]
    projects = [f"p{i % 20}" for i in range(a.jobs)]
    clock = task.Clock()
    clock.advance(T0)
    pool = SynchronousConnectionPool(path, openfun=opener)
    store = ExecutionStore(pool, clock, history_per_job=a.history, flush_delay=0.25)
    store.open()
    started = time.monotonic()
    # Prefill: history_per_job slots per job, before t = 0 (not measured).
    for s in range(-(a.history if a.prefill is None else a.prefill), 0):
        for i, job in enumerate(jobs):
            store.record(rec(job, projects[i], s + (i % 4) * 0.25, "succeeded"), trusted=True)
        if s % 5 == 0:
            store.flush()
    store.flush()
    pool._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    prefill_s = time.monotonic() - started
    rows = pool._connection.execute("SELECT COUNT(*) FROM executions").fetchone()[0]
    # The start-up prune (a full one in either tree), measured on its own.
    c0, w0 = time.thread_time(), time.monotonic()
    periodic = getattr(store, "prune_periodically", store.prune)
    first = store.prune() if not hasattr(store, "prune_periodically") else periodic()
    full_prune = {
        "cpu_s": time.thread_time() - c0,
        "wall_s": time.monotonic() - w0,
        "rows": rows,
        "deleted": first.result,
    }
    write_cpu = prune_cpu = 0.0
    executions = 0
    prunes = []
    pending = []  # "running" records whose outcome goes in the next flush
    w_start = time.monotonic()
    quarter = 0
    while quarter < a.seconds * 4:
        t = quarter * 0.25
        for r in pending:
            r = dict(r, state="succeeded", finished_at=r["started_at"], status_code=200)
            store.record(r, trusted=True)
        pending = []
        phase = quarter % 4
        for i in range(phase, a.jobs, 4):
            job = jobs[i]
            slot = int(t) + phase * 0.25
            if i % 10 == 0:
                r = rec(job, projects[i], slot, "running")
                pending.append(r)
            else:
                r = rec(job, projects[i], slot, "succeeded")
            store.record(r, trusted=True)
            executions += 1
        c = time.thread_time()
        store.flush()
        write_cpu += time.thread_time() - c
        clock.advance(0.25)
        quarter += 1
        if quarter % (60 * 4) == 0:
            c, w = time.thread_time(), time.monotonic()
            d = periodic()
            prunes.append(
                {
                    "cpu_s": time.thread_time() - c,
                    "wall_s": time.monotonic() - w,
                    "deleted": d.result,
                }
            )
            prune_cpu += time.thread_time() - c
    c = time.thread_time()
    store.flush()
    write_cpu += time.thread_time() - c
    wall = time.monotonic() - w_start
    out = {
        "rows_at_start": rows,
        "prefill_s": round(prefill_s, 1),
        "startup_full_prune": full_prune,
        "executions": executions,
        "write_us_per_exec": round(1e6 * write_cpu / executions, 2),
        "prune_us_per_exec": round(1e6 * prune_cpu / executions, 2),
        "total_us_per_exec": round(1e6 * (write_cpu + prune_cpu) / executions, 2),
        "prunes": prunes,
        "wall_s": round(wall, 1),
        "file_mb": round(os.path.getsize(path) / 1e6, 1),
    }
    print(json.dumps(out, indent=1))
    pool.close()


if __name__ == "__main__":
    main()
