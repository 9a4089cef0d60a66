"""
A synchronous stand-in for C{adbapi.ConnectionPool} over SQLite.

Interactions run inline on one connection and return already-fired Deferreds,
with adbapi's transaction rules: commit when the interaction returns, roll back
when it raises. The store test suite runs against this and the real pool.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from scheduler0.store.sqlite import prepare_connection


class SynchronousConnectionPool:
    """One SQLite connection (a file path or C{":memory:"}) driven inline."""

    def __init__(self, path: str, openfun: Callable[[Any], None] | None = prepare_connection):
        self.path = path
        self.interactions = 0
        self._connection: sqlite3.Connection | None = sqlite3.connect(path, check_same_thread=False)
        if openfun is not None:
            openfun(self._connection)

    def runInteraction(self, interaction: Callable[..., Any], *args: Any, **kw: Any) -> Deferred:
        """Run C{interaction(cursor, ...)} in a transaction; commit or roll back."""
        if self._connection is None:
            return fail(RuntimeError("connection pool is closed"))
        self.interactions += 1
        connection = self._connection
        cursor = connection.cursor()
        try:
            result = interaction(cursor, *args, **kw)
            cursor.close()
            connection.commit()
        except BaseException:
            connection.rollback()
            return fail()
        return succeed(result)

    def runQuery(self, sql: str, *args: Any) -> Deferred:
        """Execute one statement and fire with all its rows."""

        def query(cursor: Any) -> list:
            cursor.execute(sql, *args)
            return cursor.fetchall()

        return self.runInteraction(query)

    def runOperation(self, sql: str, *args: Any) -> Deferred:
        """Execute one statement and fire with None."""

        def operation(cursor: Any) -> None:
            cursor.execute(sql, *args)

        return self.runInteraction(operation)

    def close(self) -> None:
        """Close the connection; later interactions fail."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
