"""
How long a backup of N jobs takes to make and to restore, and how large it
is: a state file filled through the state machine's own commands, copied as
a node copies it, prepared, compressed, then restored into an empty folder.

    python -m bench.backup --jobs 100000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.secret_hash import SecretHasher
from scheduler0.store.backup import restore_backup, write_backup
from scheduler0.store.commands import Command
from scheduler0.store.state import StateStore

KEY = "bench-secret-key"
AT = "2026-01-01T00:00:00.000Z"
BATCH = 10_000


def _done(d: object) -> object:
    results: list = []
    d.addBoth(results.append)  # type: ignore[attr-defined]
    return results[0]


def fill(path: str, jobs: int) -> StateStore:
    """A state file with one project, C{jobs} jobs and their progress marks."""
    store = StateStore(SynchronousConnectionPool(path))
    _done(store.open())
    index = 0

    def apply(op: str, **args: object) -> None:
        nonlocal index
        index += 1
        result = _done(store.apply(index, Command(op, args)))
        assert getattr(result, "ok", False), result

    project = {"uuid": "p1", "name": "bench", "description": "", "created_at": AT}
    apply("create_project", project={**project, "updated_at": AT})
    credential = {
        "uuid": "c1",
        "api_key": "key1",
        "api_secret_hash": SecretHasher.from_secret_key(KEY).hash("secret"),
        "created_at": AT,
    }
    apply("create_credential", credential=credential)
    for start in range(0, jobs, BATCH):
        batch = [
            {
                "uuid": str(uuid.UUID(int=n + 1)),
                "project_uuid": "p1",
                "name": f"job {n}",
                "spec": "@every 1m",
                "callback_url": "http://127.0.0.1:3000/callback",
                "created_at": AT,
                "updated_at": AT,
            }
            for n in range(start, min(jobs, start + BATCH))
        ]
        apply("create_jobs", jobs=batch)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = fill(os.path.join(folder, "state.db"), args.jobs)
        state_bytes = os.path.getsize(os.path.join(folder, "state.db"))
        image = os.path.join(folder, "copy.db")
        backup = os.path.join(folder, "backup.s0")
        began = time.perf_counter()
        _done(store.snapshot(image))
        with open(backup, "wb") as target:
            header = write_backup(image, target, AT)
        made = time.perf_counter() - began
        began = time.perf_counter()
        restore_backup(backup, os.path.join(folder, "restored"), KEY)
        restored = time.perf_counter() - began
        print(
            f"jobs {header['jobs']}: state.db {state_bytes / 1e6:.1f} MB,"
            f" backup {os.path.getsize(backup) / 1e6:.1f} MB, made in {made:.2f} s,"
            f" restored in {restored:.2f} s"
        )


if __name__ == "__main__":
    main()
