"""
The real SQLite connection pool: one connection on one adbapi thread, so
SQLite never blocks the reactor and statements on a file run strictly in order.
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi


def prepare_connection(connection: Any) -> None:
    """PRAGMAs for every store file: WAL, fully synchronous commits, foreign keys."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")


def connection_pool(path: str, reactor: Any = None) -> adbapi.ConnectionPool:
    """An adbapi pool over the SQLite file at C{path} (one connection, one thread)."""
    extra: dict[str, Any] = {}
    if reactor is not None:
        extra["cp_reactor"] = reactor
    return adbapi.ConnectionPool(
        "sqlite3",
        path,
        cp_min=1,
        cp_max=1,
        check_same_thread=False,
        cp_openfun=prepare_connection,
        **extra,
    )
