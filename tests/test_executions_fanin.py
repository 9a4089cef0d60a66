"""
The node-local execution store as the cluster's outbox: every write of a row
gets a new, growing seq; pending() hands out rows after a seq, forget() deletes
what was committed, and pruning waits for commits when asked to.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from scheduler0.store.executions import ExecutionStore, execution_row, plain_execution_row
from scheduler0.store.sqlite import connection_pool
from scheduler0.testing.sqlite_fake import SynchronousConnectionPool

T0 = "2026-01-01T00:00:00.000Z"
DAY = 86400.0


def record(eid: str, job_uuid: str = "j1", state: str = "running", **extra: Any) -> dict:
    value = {
        "execution_id": eid,
        "job_uuid": job_uuid,
        "project_uuid": "p1",
        "scheduled_at": T0,
        "state": state,
        "attempts": 1,
        "node_id": 3,
        "started_at": None,
        "finished_at": None,
        "status_code": None,
        "error": None,
        "skip_reason": None,
    }
    value.update(extra)
    return value


class OutboxTests(SynchronousTestCase):
    """pending, forget and seq on the synchronous pool over real files."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.clock = task.Clock()

    def result(self, d: Deferred) -> Any:
        return self.successResultOf(d)

    def store(self, name: str = "executions.db", **kw: Any) -> ExecutionStore:
        pool = SynchronousConnectionPool(os.path.join(self.directory, name))
        self.addCleanup(pool.close)
        store = ExecutionStore(pool, self.clock, **kw)
        self.result(store.open())
        return store

    def seqs(self, store: ExecutionStore) -> dict[str, int]:
        rows = self.result(store.pool.runQuery("SELECT execution_id, seq FROM executions"))
        return dict(rows)

    def test_every_write_gives_a_row_a_higher_seq(self) -> None:
        """Inserting and then updating a row gives it a new seq above every earlier one."""
        store = self.store()
        store.record(record("e1"))
        store.record(record("e2"))
        self.result(store.flush())
        first = self.seqs(store)
        self.assertEqual(sorted(first.values()), [1, 2])
        store.record(record("e1", state="succeeded", status_code=200))
        self.result(store.flush())
        self.assertEqual(self.seqs(store), {"e1": 3, "e2": first["e2"]})

    def test_pending_returns_rows_after_a_seq_in_order(self) -> None:
        """pending gives at most limit rows after after_seq, in seq order, and the last seq."""
        store = self.store()
        for eid in ("e1", "e2", "e3"):
            store.record(record(eid))
            self.result(store.flush())
        store.record(record("e1", state="failed", error="boom"))
        # Buffered, not yet flushed: pending writes it first.
        records, max_seq = self.result(store.pending(0, 10))
        self.assertEqual([r["execution_id"] for r in records], ["e2", "e3", "e1"])
        self.assertEqual(max_seq, 4)
        self.assertEqual(records[2], self.result(store.query(job_uuid="j1", state="failed"))[0][0])
        self.assertEqual(records[2]["node_id"], 3)
        records, max_seq = self.result(store.pending(2, 1))
        self.assertEqual(([r["execution_id"] for r in records], max_seq), (["e3"], 3))
        self.assertEqual(self.result(store.pending(4, 10)), ([], 4))
        self.failureResultOf(store.pending(-1, 10), ValueError)
        self.failureResultOf(store.pending(0, True), ValueError)

    def test_forget_keeps_rows_updated_after_they_were_pulled(self) -> None:
        """forget deletes rows up to a seq; a row written again since then stays."""
        store = self.store()
        store.record(record("e1"))
        store.record(record("e2"))
        records, pulled = self.result(store.pending(0, 100))
        self.assertEqual(len(records), 2)
        store.record(record("e1", state="succeeded"))
        self.assertEqual(self.result(store.forget(pulled)), 1)
        remaining, max_seq = self.result(store.pending(pulled, 100))
        self.assertEqual(
            [(r["execution_id"], r["state"]) for r in remaining], [("e1", "succeeded")]
        )
        self.assertEqual(self.result(store.forget(max_seq)), 1)
        self.assertEqual(self.result(store.query()), ([], 0))
        self.failureResultOf(store.forget("3"), ValueError)

    def test_the_seq_continues_after_reopening(self) -> None:
        """A reopened store numbers new writes after the highest seq in the file."""
        store = self.store()
        for eid in ("e1", "e2", "e3"):
            store.record(record(eid))
        self.result(store.flush())
        self.result(store.forget(1))
        self.result(store.close())
        reopened = self.store()
        reopened.record(record("e1"))
        self.assertEqual(self.result(reopened.pending(3, 10))[1], 4)
        # Even with every row forgotten, the seq does not go back.
        self.assertEqual(self.result(reopened.forget(4)), 3)
        self.result(reopened.close())
        emptied = self.store()
        emptied.record(record("e9"))
        self.assertEqual(self.result(emptied.pending(0, 10))[1], 5)

    def test_continue_after_moves_the_seq_forward_only(self) -> None:
        """After continue_after(n) the next write gets a seq above n; it never goes back."""
        store = self.store()
        store.continue_after(40)
        store.record(record("e1"))
        self.assertEqual(self.result(store.pending(40, 10))[1], 41)
        store.continue_after(7)
        store.record(record("e2"))
        self.assertEqual(self.result(store.pending(41, 10))[1], 42)
        self.assertRaises(ValueError, store.continue_after, "9")

    def test_pruning_waits_for_commits_when_retaining(self) -> None:
        """With retain_until_committed prune deletes nothing; without it, it prunes as before."""
        self.clock.advance(30 * DAY)
        retaining = self.store("a.db", history_per_job=1, retain_until_committed=True)
        pruning = self.store("b.db", history_per_job=1)
        for store in (retaining, pruning):
            store.record(record("e1", scheduled_at=T0))
            store.record(record("e2", scheduled_at="2026-01-01T00:01:00.000Z"))
        self.assertEqual(self.result(retaining.prune()), 0)
        self.assertEqual(self.result(retaining.query())[1], 2)
        self.assertEqual(self.result(pruning.prune()), 1)
        self.assertEqual(self.result(pruning.query())[1], 1)

    def test_an_old_file_gains_seq_and_its_rows_are_pending(self) -> None:
        """A file from before seq gets the column; its rows are pending in the order written."""
        path = os.path.join(self.directory, "old.db")
        connection = sqlite3.connect(path)
        connection.execute(
            """CREATE TABLE executions (
                execution_id TEXT PRIMARY KEY, job_uuid TEXT NOT NULL, project_uuid TEXT,
                scheduled_at TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
                node_id TEXT, started_at TEXT, finished_at TEXT, status_code INTEGER,
                error TEXT, skip_reason TEXT)"""
        )
        for eid in ("z", "a"):
            connection.execute(
                "INSERT INTO executions VALUES (?, 'j1', 'p1', ?, 'succeeded', 1, '3',"
                " NULL, NULL, 200, NULL, NULL)",
                (eid, T0),
            )
        connection.commit()
        connection.close()
        store = self.store("old.db")
        records, max_seq = self.result(store.pending(0, 10))
        self.assertEqual(([r["execution_id"] for r in records], max_seq), (["z", "a"], 2))
        indexes = self.result(
            store.pool.runQuery("SELECT name FROM sqlite_master WHERE type = 'index'")
        )
        self.assertIn(("executions_by_seq",), indexes)
        store.record(record("n"))
        self.assertEqual(self.result(store.pending(2, 10))[1], 3)


class RealPoolOutboxTests(TestCase):
    """The outbox on the real threaded adbapi pool."""

    timeout = 30

    async def test_pending_and_forget_on_the_real_pool(self) -> None:
        """Records written through the real pool are pending in seq order and forgotten by seq."""
        directory = self.mktemp()
        os.makedirs(directory)
        pool = connection_pool(os.path.join(directory, "executions.db"))
        store = ExecutionStore(pool, task.Clock(), retain_until_committed=True)
        await store.open()
        self.addCleanup(store.close)
        for eid in ("e1", "e2", "e3"):
            store.record(record(eid))
        records, max_seq = await store.pending(0, 2)
        self.assertEqual(([r["execution_id"] for r in records], max_seq), (["e1", "e2"], 2))
        store.record(record("e1", state="succeeded"))
        self.assertEqual(await store.forget(max_seq), 1)
        records, max_seq = await store.pending(max_seq, 10)
        self.assertEqual(
            [(r["execution_id"], r["state"]) for r in records],
            [("e3", "running"), ("e1", "succeeded")],
        )
        self.assertEqual(max_seq, 4)


class PlainRowTests(SynchronousTestCase):
    """The fast record check agrees with the full one."""

    def test_plain_rows_equal_checked_rows_or_defer_to_them(self) -> None:
        """plain_execution_row gives execution_row's row, or None for anything unusual."""
        plain = [
            record("e1"),
            record("e2", attempts=None, state="failed", error="boom", status_code=500),
            {"execution_id": "e3", "job_uuid": "j", "scheduled_at": T0},
            record("e4", started_at=T0, finished_at="2026-01-01T00:00:01.250Z", node_id="7"),
            record("e5", attempts=0.0),
        ]
        for value in plain:
            self.assertEqual(plain_execution_row(value), execution_row(value), value)
        unusual = [
            record("e1", scheduled_at="2026-01-01T00:00:00Z"),
            record("e1", scheduled_at=1767225600.0),
            record("e1", attempts=1.5),
            record("e1", attempts=True),
            record("e1", state="exploded"),
            record("e1", node_id=2**64),
            record("e1", error=["x"]),
            record("e1", colour="red"),
            record("e1", started_at="soon"),
            {"execution_id": "e1", "job_uuid": 5, "scheduled_at": T0},
            ["e1"],
        ]
        for value in unusual:
            self.assertIsNone(plain_execution_row(value), value)
        self.assertEqual(execution_row(unusual[0])[3], "2026-01-01T00:00:00.000Z")
