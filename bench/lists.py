"""
What a page of the dashboard's jobs list costs the state store at a million
jobs: the first page, a deep page by cursor and by offset, and pages found by
name prefix (GET /jobs?name_prefix=), alone and within a project.

    python -m bench.lists [--jobs 1000000] [--repeat 5]

The jobs are written straight into a fresh state.db (the schema of this
release, its indexes included; not through the API, which bench/scale.py
measures), named "<word>-<number>" with 26 words, in 10 projects. Each
figure is the median of C{--repeat} reads of one page of 50 with its total,
through L{StateStore.list_jobs} on a synchronous connection: SQLite time
only, no HTTP. Printed as JSON, with the MiB the jobs table and each of
its indexes take (SQLite's dbstat).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from typing import Any

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.model import JOB_COLUMNS
from scheduler0.store.state import StateStore

WORDS = [f"{letter}word" for letter in "abcdefghijklmnopqrstuvwxyz"]
PROJECTS = 10
PAGE = 50


def _fired(d: Any) -> Any:
    results: list = []
    d.addBoth(results.append)
    (result,) = results
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def _fill(store: StateStore, jobs: int) -> None:
    """C{jobs} jobs and their projects, in creation order, in batches."""
    connection = store.pool._connection
    stamp = "2026-01-02T03:04:05.678Z"
    with connection:
        for p in range(PROJECTS):
            connection.execute(
                "INSERT INTO projects (uuid, name, description, created_at, updated_at)"
                " VALUES (?, ?, '', ?, ?)",
                (_project(p), f"project-{p}", stamp, stamp),
            )
    defaults: dict[str, Any] = {
        "spec": "@hourly",
        "callback_url": "http://127.0.0.1:9/cb",
        "data": "null",
        "timezone": "UTC",
        "execution_type": "http",
        "catch_up_window_s": 60.0,
        "timeout_s": 30.0,
        "retry_max": 0,
        "updated_at": stamp,
        "anchor_at": stamp,
        "owner": 1,
        "retry_delay_s": 1.0,
        "retry_max_delay_s": 60.0,
        "concurrency_policy": "allow",
        "coalesce": 0,
    }
    columns = [c for c in JOB_COLUMNS if c in defaults or c in _VARYING]
    insert = f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    batch = 50_000
    for start in range(0, jobs, batch):
        rows = []
        for i in range(start, min(jobs, start + batch)):
            values = {
                **defaults,
                "uuid": _uuid(i),
                "project_uuid": _project(i % PROJECTS),
                "name": f"{WORDS[i % len(WORDS)]}-{i:07d}",
                "paused": int(i % 10 == 0),
                # One job a millisecond, so creation order is the uuid's.
                "created_at": _instant(i),
            }
            rows.append(tuple(values[c] for c in columns))
        with connection:
            connection.executemany(insert, rows)


_VARYING = ("uuid", "project_uuid", "name", "paused", "created_at")


def _uuid(i: int) -> str:
    """A job's uuid, as long as the API's, in creation order."""
    return str(uuid.UUID(int=(1 << 96) + i))


def _project(p: int) -> str:
    return str(uuid.UUID(int=p + 1))


def _instant(i: int) -> str:
    seconds, millis = divmod(i, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"2026-01-{1 + hours // 24:02d}T{hours % 24:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"
    )


def _median_ms(repeat: int, read: Any) -> tuple[float, Any]:
    times = []
    answer = None
    for _ in range(repeat):
        began = time.perf_counter()
        answer = read()
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 2), answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-lists-")
    try:
        _run(args, os.path.join(folder, "state.db"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(args: argparse.Namespace, path: str) -> None:
    store = StateStore(SynchronousConnectionPool(path))
    _fired(store.open())
    began = time.perf_counter()
    _fill(store, args.jobs)
    filled_s = round(time.perf_counter() - began, 1)
    deep = int(args.jobs * 0.9)
    after = (_instant(deep - 1), _uuid(deep - 1))
    selective = f"{WORDS[12]}-{deep:07d}"[:-2]  # 100 numbers, the few of them under this word
    cases: dict[str, dict[str, Any]] = {
        "first page": {},
        f"page at {deep:,} by cursor": {"after": after},
        f"page at {deep:,} by offset": {"offset": deep},
        f"name_prefix {selective!r}": {"name_prefix": selective},
        f"name_prefix {WORDS[3] + '-'!r} (1/26 of the jobs)": {"name_prefix": WORDS[3] + "-"},
        f"name_prefix {WORDS[3] + '-'!r} by cursor at 90%": {
            "name_prefix": WORDS[3] + "-",
            "after": after,
        },
        f"one project, name_prefix {selective!r}": {
            "project_uuid": _project(3),
            "name_prefix": selective,
        },
        f"one project, name_prefix {WORDS[3] + '-'!r}": {
            "project_uuid": _project(3),
            "name_prefix": WORDS[3] + "-",
        },
        "paused, name_prefix 'a'": {"paused": True, "name_prefix": "a"},
    }
    figures = {}
    for label, filters in cases.items():
        ms, (items, total) = _median_ms(
            args.repeat, lambda f=filters: _fired(store.list_jobs(limit=PAGE + 1, **f))
        )
        figures[label] = {"ms": ms, "rows": len(items[:PAGE]), "total": total}
    connection = store.pool._connection
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    sizes = {
        name: round(pages * page_size / 2**20, 1)
        for name, pages in connection.execute(
            "SELECT name, COUNT(*) FROM dbstat WHERE name LIKE 'jobs%' GROUP BY name"
        )
    }
    print(
        json.dumps(
            {
                "jobs": args.jobs,
                "fill_s": filled_s,
                "page": PAGE,
                "figures": figures,
                "mib_by_table_and_index": sizes,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
