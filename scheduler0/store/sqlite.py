"""
The real SQLite connection pool: one connection on one adbapi thread, so
SQLite never blocks the reactor and statements on a file run strictly in order.
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi

from scheduler0.walfile import WAL_LIMIT_BYTES, trim_wal


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
