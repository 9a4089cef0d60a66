"""
The real SQLite connection pool: one connection on one adbapi thread, so
SQLite never blocks the reactor and statements on a file run strictly in order.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.enterprise import adbapi

# A WAL file larger than this after a transaction is checkpointed and
# truncated at once (see CheckpointingPool), and SQLite truncates it to this
# size when it starts it over after a checkpoint. Small writes reach it
# every 500 pages (SQLite's automatic checkpoint comes at 1,000); a large
# transaction (a batch of 10,000 jobs writes 7-11 MB of pages to state.db
# and its command as much again to log.db) goes past it at once. Without
# this a WAL file keeps the size of the largest transaction ever written:
# one 3 MB batch of jobs left 18 MB of WAL files beside the databases.
WAL_LIMIT_BYTES = 2 * 1024 * 1024


def prepare_connection(connection: Any, synchronous: str = "FULL") -> None:
    """PRAGMAs for every store file: WAL, synchronous commits, foreign keys."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")


class CheckpointingPool(adbapi.ConnectionPool):
    """
    An adbapi pool that, after an interaction leaves the file's WAL larger
    than C{wal_limit} bytes, checkpoints it into the database and truncates
    it (on the pool's own thread and connection, right after the commit).
    A checkpoint that cannot finish (a reader holds an old snapshot, the
    disk is full) is left for the next time; nothing depends on it.
    """

    wal_path: str = ""
    wal_limit: int = WAL_LIMIT_BYTES
    #: Checkpoints made because the WAL passed its limit.
    truncations: int = 0

    def _runInteraction(self, interaction: Any, *args: Any, **kw: Any) -> Any:
        try:
            return super()._runInteraction(interaction, *args, **kw)
        finally:
            self._trim_wal()

    def _trim_wal(self) -> None:
        if not self.wal_path:
            return
        raw: Any = self.connectionFactory(self)._connection
        if trim_wal(raw, self.wal_path, self.wal_limit):
            self.truncations += 1


def trim_wal(connection: Any, wal_path: str, limit: int = WAL_LIMIT_BYTES) -> bool:
    """
    Checkpoint and truncate the WAL file at C{wal_path} of the sqlite3
    C{connection} if it is larger than C{limit} bytes; whether it was. Call
    it between transactions. A checkpoint that cannot finish (a reader holds
    an old snapshot, the disk is full) is left for the next call.
    """
    try:
        if os.path.getsize(wal_path) <= limit:
            return False
    except OSError:
        return False  # no WAL file (yet)
    try:
        # Wait briefly for a reader (a snapshot copy) rather than hold up the
        # next write; the next trim tries again.
        connection.execute("PRAGMA busy_timeout=100")
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            connection.execute("PRAGMA busy_timeout=5000")
    except Exception:
        return False  # e.g. the disk is full: the WAL stays until the next try
    return True


def _prepare_replayable(connection: Any) -> None:
    prepare_connection(connection, "NORMAL")


def _opener(prepare: Any, pragmas: tuple[str, ...]) -> Any:
    if not pragmas:
        return prepare

    def opened(connection: Any) -> None:
        prepare(connection)
        for pragma in pragmas:
            connection.execute(f"PRAGMA {pragma}")

    return opened


def connection_pool(
    path: str,
    reactor: Any = None,
    *,
    replayable: bool = False,
    pragmas: tuple[str, ...] = (),
    wal_limit: int = WAL_LIMIT_BYTES,
) -> adbapi.ConnectionPool:
    """
    An adbapi pool over the SQLite file at C{path} (one connection, one
    thread). Every commit is synced to disk, unless the file is
    C{replayable}: a state machine rebuilt from a durable log after a power
    loss (its applied index is in the same transactions) need not pay an
    fsync per command. A killed process loses nothing either way; WAL
    commits survive it. C{pragmas} are run on the connection after those.
    A WAL grown past C{wal_limit} bytes is checkpointed and truncated after
    the transaction that grew it (L{CheckpointingPool}).
    """
    extra: dict[str, Any] = {}
    if reactor is not None:
        extra["cp_reactor"] = reactor
    pool = CheckpointingPool(
        "sqlite3",
        path,
        cp_min=1,
        cp_max=1,
        check_same_thread=False,
        cp_openfun=_opener(_prepare_replayable if replayable else prepare_connection, pragmas),
        **extra,
    )
    pool.wal_path = "" if path == ":memory:" else path + "-wal"
    pool.wal_limit = wal_limit
    return pool
