"""
The real SQLite connection pool: one connection on one adbapi thread, so
SQLite never blocks the reactor and statements on a file run strictly in order.
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi


def prepare_connection(connection: Any, synchronous: str = "FULL") -> None:
    """PRAGMAs for every store file: WAL, synchronous commits, foreign keys."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA foreign_keys=ON")


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
    path: str, reactor: Any = None, *, replayable: bool = False, pragmas: tuple[str, ...] = ()
) -> adbapi.ConnectionPool:
    """
    An adbapi pool over the SQLite file at C{path} (one connection, one
    thread). Every commit is synced to disk, unless the file is
    C{replayable}: a state machine rebuilt from a durable log after a power
    loss (its applied index is in the same transactions) need not pay an
    fsync per command. A killed process loses nothing either way; WAL
    commits survive it. C{pragmas} are run on the connection after those.
    """
    extra: dict[str, Any] = {}
    if reactor is not None:
        extra["cp_reactor"] = reactor
    return adbapi.ConnectionPool(
        "sqlite3",
        path,
        cp_min=1,
        cp_max=1,
        check_same_thread=False,
        cp_openfun=_opener(_prepare_replayable if replayable else prepare_connection, pragmas),
        **extra,
    )
