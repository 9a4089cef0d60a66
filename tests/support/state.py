"""
Real state files in a temporary directory, driven through the synchronous
pool (L{StateCase}), the rows to apply to them, and the tables of the files
written before ownership existed.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.store.commands import Command, Result
from scheduler0.store.state import StateStore

T0 = "2026-01-01T00:00:00.000Z"
T1 = "2026-01-01T00:01:00.000Z"


def project(uuid: str = "p1", name: str = "alpha") -> dict:
    return {"uuid": uuid, "name": name, "description": "", "created_at": T0, "updated_at": T0}


def job(uuid: str, project_uuid: str = "p1", created_at: str = T0) -> dict:
    return {
        "uuid": uuid,
        "project_uuid": project_uuid,
        "name": f"job {uuid}",
        "spec": "@every 1m",
        "callback_url": "http://127.0.0.1/cb",
        "created_at": created_at,
        "updated_at": created_at,
    }


def member(node_id: int, address: str | None = None) -> dict:
    return {
        "node_id": node_id,
        "address": address or f"http://n{node_id}:7070",
        "raft_address": f"n{node_id}:7071",
    }


def jobs_named(prefix: str, count: int, created_at: str = T0) -> list[dict]:
    return [job(f"{prefix}{i:03d}", created_at=created_at) for i in range(count)]


class StateCase(SynchronousTestCase):
    """A temporary directory of state files and helpers to apply commands in order."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.indexes: dict[int, int] = {}

    def result(self, d: Deferred) -> Any:
        return self.successResultOf(d)

    def store(self, name: str = "state.db") -> StateStore:
        pool = SynchronousConnectionPool(os.path.join(self.directory, name))
        self.addCleanup(pool.close)
        store = StateStore(pool)
        self.result(store.open())
        return store

    def apply(self, store: StateStore, op: str, **args: Any) -> Result:
        index = self.indexes.get(id(store), 0) + 1
        self.indexes[id(store)] = index
        return self.result(store.apply(index, Command(op, args)))

    def ok(self, store: StateStore, op: str, **args: Any) -> Any:
        result = self.apply(store, op, **args)
        self.assertTrue(result.ok, result)
        return result.value

    def seeded(self, *node_ids: int) -> StateStore:
        store = self.store()
        self.ok(store, "create_project", project=project())
        if node_ids:
            self.ok(store, "set_members", members=[member(n) for n in node_ids])
        return store

    def counted(self, store: StateStore) -> dict:
        """Owner counts worked out from the jobs themselves, to check the kept ones."""

        def read(txn: Any) -> dict:
            txn.execute("SELECT owner, COUNT(*) FROM jobs GROUP BY owner")
            return dict(txn.fetchall())

        return self.result(store.pool.runInteraction(read))


OLD_JOBS = """CREATE TABLE jobs (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES projects (uuid),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    callback_url TEXT NOT NULL,
    data TEXT NOT NULL,
    timezone TEXT NOT NULL,
    execution_type TEXT NOT NULL,
    paused INTEGER NOT NULL,
    catch_up_window_s REAL NOT NULL,
    timeout_s REAL NOT NULL,
    retry_max INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    anchor_at TEXT NOT NULL)"""
OLD_PROJECTS = """CREATE TABLE projects (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL)"""
