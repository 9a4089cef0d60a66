"""
The node-local execution store as every node's own history: files written
by the release that pulled every record into the cluster open and keep their
rows; reads of one state go through an index; each node prunes its own.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.store.executions import (
    WRITER_BEHIND_RECORDS,
    WRITER_BEHIND_S,
    ExecutionStore,
)
from scheduler0.store.sqlite import connection_pool
from scheduler0.values import execution_row, plain_execution_row

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
        "response_body": None,
    }
    value.update(extra)
    return value


class LocalHistoryTests(SynchronousTestCase):
    """A node's own records on the synchronous pool over real files."""

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

    def indexes(self, store: ExecutionStore) -> set[str]:
        rows = self.result(
            store.pool.runQuery("SELECT name FROM sqlite_master WHERE type = 'index'")
        )
        return {row[0] for row in rows}

    def test_a_file_of_the_fan_in_release_opens_with_its_rows(self) -> None:
        """
        An executions.db written by the release that pulled records into the
        cluster (a seq column, its index, an outbox table) opens: its rows
        stay readable, the seq index is dropped (it cost every write) and
        new records are written beside them.
        """
        path = os.path.join(self.directory, "old.db")
        connection = sqlite3.connect(path)
        connection.execute(
            """CREATE TABLE executions (
                execution_id TEXT PRIMARY KEY, job_uuid TEXT NOT NULL, project_uuid TEXT,
                scheduled_at TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
                node_id TEXT, started_at TEXT, finished_at TEXT, status_code INTEGER,
                error TEXT, skip_reason TEXT, seq INTEGER)"""
        )
        connection.execute("CREATE INDEX executions_by_seq ON executions (seq)")
        connection.execute("CREATE TABLE outbox (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        connection.execute("INSERT INTO outbox VALUES ('last_seq', 2)")
        for seq, eid in enumerate(("z", "a"), 1):
            connection.execute(
                "INSERT INTO executions VALUES (?, 'j1', 'p1', ?, 'succeeded', 1, '3',"
                " NULL, NULL, 200, NULL, NULL, ?)",
                (eid, T0, seq),
            )
        connection.commit()
        connection.close()
        store = self.store("old.db")
        self.assertNotIn("executions_by_seq", self.indexes(store))
        self.assertIn("executions_by_failure_id", self.indexes(store))
        self.assertNotIn("executions_by_time", self.indexes(store))
        store.record(
            record("n", scheduled_at="2026-01-01T00:00:01.000Z", response_body="down for repairs")
        )
        items, total = self.result(store.query(job_uuid="j1"))
        self.assertEqual(([r["execution_id"] for r in items], total), (["n", "z", "a"], 3))
        self.assertEqual(items[1]["node_id"], 3)
        # The column added since (response_body) is there, empty for the old rows.
        self.assertEqual([r["response_body"] for r in items], ["down for repairs", None, None])

    def plan(self, store: ExecutionStore, state: str | None, column: str = "state") -> str:
        def read(txn: Any) -> str:
            where = f" WHERE {column} = ?" if state is not None else ""
            txn.execute(
                f"EXPLAIN QUERY PLAN SELECT execution_id FROM executions{where}"
                " ORDER BY scheduled_at DESC, execution_id DESC LIMIT 50",
                (state,) if state is not None else (),
            )
            return " ".join(str(row[-1]) for row in txn.fetchall())

        return self.result(store.pool.runInteraction(read))

    def test_failures_and_skips_are_read_through_an_index(self) -> None:
        """
        GET /executions?state=failed (or skipped) walks executions_by_failure_id,
        which holds only those rows; other states go through the time index.
        Pages of failures, of a project and of everything are read in their
        order, without sorting every record that shares an instant.
        """
        store = self.store()
        self.assertIn("executions_by_failure_id", self.plan(store, "failed"))
        self.assertIn("executions_by_failure_id", self.plan(store, "skipped"))
        self.assertNotIn("executions_by_failure", self.plan(store, "succeeded"))
        for plan in (
            self.plan(store, "failed"),
            self.plan(store, None),
            self.plan(store, "p1", column="project_uuid"),
        ):
            self.assertNotIn("TEMP B-TREE", plan)
        store.record(record("e1", state="failed"))
        store.record(record("e2", state="succeeded"))
        store.record(record("e3", state="skipped", skip_reason="queue_full"))
        for state, expected in (("failed", ["e1"]), ("skipped", ["e3"]), ("succeeded", ["e2"])):
            items, total = self.result(store.query(state=state))
            self.assertEqual(([r["execution_id"] for r in items], total), (expected, 1))

    def test_a_record_written_again_replaces_the_row_whatever_changed(self) -> None:
        """
        The second write of a row (its outcome) replaces every column; when
        an indexed one changed too (not the usual case), the whole row still is.
        """
        store = self.store()
        store.record(record("e1", state="running"))
        self.result(store.flush())
        store.record(record("e1", state="failed", status_code=500, error="boom"))
        store.record(record("e2", state="running"))
        self.result(store.flush())
        items, _ = self.result(store.query(job_uuid="j1"))
        self.assertEqual(
            {r["execution_id"]: (r["state"], r["status_code"]) for r in items},
            {"e1": ("failed", 500), "e2": ("running", None)},
        )
        moved = record("e1", job_uuid="j2", scheduled_at="2026-01-01T00:00:09.000Z")
        store.record(moved)
        store.record(record("e2", state="succeeded", status_code=200))
        self.result(store.flush())
        self.assertEqual(
            [
                (r["execution_id"], r["scheduled_at"])
                for r in self.result(store.query(job_uuid="j2"))[0]
            ],
            [("e1", "2026-01-01T00:00:09.000Z")],
        )
        self.assertEqual(self.result(store.query(job_uuid="j1"))[0][0]["state"], "succeeded")

    def test_records_are_pruned_per_job(self) -> None:
        """Every node prunes its own records to history_per_job per job (failures kept)."""
        self.clock.advance(30 * DAY)
        store = self.store(history_per_job=1)
        store.record(record("e1", scheduled_at=T0))
        store.record(record("e2", scheduled_at="2026-01-01T00:01:00.000Z"))
        self.assertEqual(self.result(store.prune()), 1)
        self.assertEqual(
            [r["execution_id"] for r in self.result(store.query())[0]],
            ["e2"],
        )


class RealPoolLocalHistoryTests(TestCase):
    """The node's own records on the real threaded adbapi pool."""

    timeout = 30

    async def test_records_written_and_read_back_on_the_real_pool(self) -> None:
        """Buffered records are written before a read; a later version replaces a row."""
        directory = self.mktemp()
        os.makedirs(directory)
        pool = connection_pool(os.path.join(directory, "executions.db"))
        store = ExecutionStore(pool, task.Clock())
        await store.open()
        self.addCleanup(store.close)
        for eid in ("e1", "e2", "e3"):
            store.record(record(eid))
        store.record(record("e1", state="succeeded"))
        items, total = await store.query(state="running")
        self.assertEqual((sorted(r["execution_id"] for r in items), total), (["e2", "e3"], 2))
        latest = await store.latest_per_job(["j1", "j9"])
        self.assertEqual(list(latest), ["j1"])


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


class HeldPool:
    """A real pool whose interactions wait until the test lets each one run."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.held: list[tuple[Any, tuple, Deferred]] = []

    def runInteraction(self, fn: Any, *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.held.append((fn, args, d))
        return d

    def runQuery(self, *args: Any) -> Deferred:
        return self.inner.runQuery(*args)

    def release(self) -> None:
        fn, args, d = self.held.pop(0)
        self.inner.runInteraction(fn, *args).chainDeferred(d)


class OneWriteAtATimeTests(SynchronousTestCase):
    """A node that cannot write as fast as it fires writes bigger batches, not a queue."""

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        inner = SynchronousConnectionPool(os.path.join(directory, "executions.db"))
        self.addCleanup(inner.close)
        self.pool = HeldPool(inner)
        self.clock = task.Clock()
        self.store = ExecutionStore(self.pool, self.clock)
        opened = self.store.open()
        while self.pool.held:
            self.pool.release()
        self.successResultOf(opened)

    def test_records_buffered_during_a_write_go_in_one_write_after_it(self) -> None:
        """
        While a write is going on, later flushes start none; once it is done,
        everything buffered meanwhile is written in one more transaction, and
        each flush fires once its records are written.
        """
        self.store.record(record("e1"))
        first = self.store.flush()
        self.store.record(record("e2"))
        second = self.store.flush()
        self.store.record(record("e3"))
        third = self.store.flush()
        self.assertEqual(len(self.pool.held), 1)
        self.assertNoResult(second)
        self.pool.release()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertNoResult(third)
        (held,) = self.pool.held
        self.assertEqual(sorted(row[0] for row in held[1][0]), ["e2", "e3"])
        self.pool.release()
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(self.store.flush_count, 2)

    def test_a_failed_write_fails_its_waiters_and_keeps_the_records(self) -> None:
        """A write that fails keeps its records for the next flush; who waited is told."""
        self.store.record(record("e1"))
        first = self.store.flush()
        self.store.record(record("e2"))
        second = self.store.flush()
        fn, args, d = self.pool.held.pop(0)
        d.errback(sqlite3.OperationalError("disk I/O error"))
        self.failureResultOf(first, sqlite3.OperationalError)
        # The next write carries both records again.
        (held,) = self.pool.held
        self.assertEqual(sorted(row[0] for row in held[1][0]), ["e1", "e2"])
        fn, args, d = self.pool.held.pop(0)
        d.errback(sqlite3.OperationalError("disk I/O error"))
        self.failureResultOf(second, sqlite3.OperationalError)
        third = self.store.flush()
        self.pool.release()
        self.successResultOf(third)
        read = self.store.query()
        self.pool.release()
        self.assertEqual(self.successResultOf(read)[1], 2)

    def shed(self, job_uuid: str, second: int) -> dict:
        at = f"2026-01-01T00:00:{second:02d}.000Z"
        return record(
            f"{job_uuid}-{second}",
            job_uuid,
            state="skipped",
            attempts=0,
            scheduled_at=at,
            skip_reason="overloaded",
        )

    def rows(self) -> dict[str, tuple]:
        read = self.store.query(limit=100)
        while self.pool.held:
            self.pool.release()
        items, _ = self.successResultOf(read)
        return {item["execution_id"]: item for item in items}

    def test_behind_only_while_a_write_goes_on_too_long(self) -> None:
        """The writer is behind once its write has gone on for more than WRITER_BEHIND_S."""
        self.assertFalse(self.store.behind())
        self.store.record(record("e1"))
        self.store.flush()
        self.assertFalse(self.store.behind())
        self.clock.advance(WRITER_BEHIND_S + 0.1)
        self.assertTrue(self.store.behind())
        self.assertFalse(self.store.backlogged())
        self.pool.release()
        self.assertFalse(self.store.behind())

    def test_shed_slots_of_a_job_fold_into_its_latest_while_behind(self) -> None:
        """
        While the writer is behind, the slots a job shed are recorded as one
        row: the latest, whose error says how many earlier ones (since when)
        it stands for. Records of sent slots, and shed ones while the writer
        keeps up, each keep their own row.
        """
        self.store.record(self.shed("j1", 1), trusted=True)
        self.store.flush()
        self.clock.advance(WRITER_BEHIND_S + 0.1)
        for second in (2, 3, 4):
            self.store.record(self.shed("j1", second), trusted=True)
        self.store.record(self.shed("j2", 2), trusted=True)
        self.store.record(
            record("sent-5", "j1", scheduled_at="2026-01-01T00:00:05.000Z"), trusted=True
        )
        self.assertEqual(self.store.folded, 2)
        self.store.flush()
        self.pool.release()
        (held,) = self.pool.held
        self.assertEqual(sorted(row[0] for row in held[1][0]), ["j1-4", "j2-2", "sent-5"])
        self.pool.release()
        # Not behind any more: each shed slot is a row again.
        self.store.record(self.shed("j1", 6), trusted=True)
        self.store.record(self.shed("j1", 7), trusted=True)
        rows = self.rows()
        self.assertEqual(sorted(rows), ["j1-1", "j1-4", "j1-6", "j1-7", "j2-2", "sent-5"])
        self.assertEqual(
            rows["j1-4"]["error"],
            "2 earlier slots of this job since 2026-01-01T00:00:02.000Z were skipped"
            " (overloaded) too; recorded in this one while the node's record writer was behind",
        )
        self.assertEqual(rows["j1-4"]["skip_reason"], "overloaded")
        self.assertIsNone(rows["j2-2"]["error"])
        self.assertIsNone(rows["j1-6"]["error"])
        self.assertEqual(self.store.folded, 2)

    def test_too_many_waiting_records_count_as_behind(self) -> None:
        """
        More than WRITER_BEHIND_RECORDS waiting for the next write is behind
        too, and backlogged (the node should send less); a write that is
        only slow is not backlogged.
        """
        self.store.record(record("e0"))
        self.store.flush()
        for n in range(WRITER_BEHIND_RECORDS):
            self.store.record(record(f"e{n + 1}"), trusted=True)
        self.assertFalse(self.store.behind())
        self.assertFalse(self.store.backlogged())
        self.store.record(record("last"), trusted=True)
        self.assertTrue(self.store.behind())
        self.assertTrue(self.store.backlogged())


class PeriodicPruneTests(SynchronousTestCase):
    """A full prune first and once a day; in between only the jobs written since the last."""

    def test_only_jobs_written_since_the_last_prune_are_pruned_between_full_ones(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        pool = SynchronousConnectionPool(os.path.join(directory, "executions.db"))
        self.addCleanup(pool.close)
        clock = task.Clock()
        clock.advance(30 * DAY)
        store = ExecutionStore(pool, clock, history_per_job=1)
        self.successResultOf(store.open())

        def slot(n: int) -> str:
            return f"2026-01-01T00:00:{n:02d}.000Z"

        for n in range(3):
            store.record(record(f"a{n}", "ja", scheduled_at=slot(n)))
            store.record(record(f"b{n}", "jb", scheduled_at=slot(n)))
        self.assertEqual(self.successResultOf(store.prune_periodically()), 4)  # full
        store.record(record("a3", "ja", scheduled_at=slot(3)))
        # Written behind the store's back (as if before a restart): only a full prune sees it.
        store.record(record("b9", "jb", scheduled_at=slot(9)))
        self.successResultOf(store.flush())
        store._written_jobs.discard("jb")
        clock.advance(60)
        self.assertEqual(self.successResultOf(store.prune_periodically()), 1)  # ja only
        self.assertEqual(self.successResultOf(store.query(job_uuid="jb"))[1], 2)
        clock.advance(DAY)
        self.assertEqual(self.successResultOf(store.prune_periodically()), 1)  # full: jb
        self.assertEqual(self.successResultOf(store.query(job_uuid="jb"))[1], 1)
