"""Tests for L{scheduler0.store.sqlite}: the PRAGMAs each kind of store file gets; WAL trimming."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from scheduler0.store.sqlite import connection_pool
from scheduler0.walfile import WAL_LIMIT_BYTES

# PRAGMA synchronous values.
NORMAL, FULL = 1, 2


class PoolTests(TestCase):
    async def pragmas(self, **options: bool) -> tuple:
        pool = connection_pool(os.path.join(self.mktemp() + ".db"), reactor, **options)
        self.addCleanup(pool.close)

        def read(txn):
            values = []
            for name in ("journal_mode", "synchronous", "foreign_keys"):
                txn.execute(f"PRAGMA {name}")
                values.append(txn.fetchone()[0])
            return tuple(values)

        return await pool.runInteraction(read)

    async def test_store_files_sync_every_commit(self) -> None:
        """A store file is WAL with every commit synced (synchronous=FULL)."""
        self.assertEqual(await self.pragmas(), ("wal", FULL, 1))

    async def test_replayable_files_skip_the_commit_fsync(self) -> None:
        """A state machine rebuilt from a durable log is WAL with synchronous=NORMAL."""
        self.assertEqual(await self.pragmas(replayable=True), ("wal", NORMAL, 1))

    async def test_a_large_transaction_does_not_leave_a_large_wal(self) -> None:
        """
        A transaction that grows the WAL past the pool's limit is followed by
        a checkpoint that truncates it; smaller ones leave it be.
        """
        path = os.path.join(self.mktemp() + ".db")
        pool = connection_pool(path, reactor)
        self.addCleanup(pool.close)
        await pool.runOperation("CREATE TABLE t (v BLOB)")
        await pool.runOperation("INSERT INTO t VALUES (?)", (b"x" * 1000,))
        self.assertEqual(pool.truncations, 0)
        await pool.runOperation("INSERT INTO t VALUES (?)", (b"y" * (3 * WAL_LIMIT_BYTES),))
        self.assertEqual(pool.truncations, 1)
        self.assertLessEqual(os.path.getsize(path + "-wal"), WAL_LIMIT_BYTES)
        rows = await pool.runQuery("SELECT length(v) FROM t")
        self.assertEqual(rows, [(1000,), (3 * WAL_LIMIT_BYTES,)])
