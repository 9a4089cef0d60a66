"""
Whole-state images of the state machine: SQLite backups made inside the
pool or beside it from a reader connection, and restoring from one.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from typing import Any

from scheduler0.store.rows import _all
from scheduler0.store.schema import check_image, migrate_state


def _open_reader(txn: Any) -> sqlite3.Connection:
    """A new connection to this file holding a read transaction that begins now."""
    path = next(row[2] for row in _all(txn, "PRAGMA database_list") if row[1] == "main")
    reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        reader.execute("BEGIN")
        # The read transaction (and the version of the file it sees) starts
        # with the first read, not with BEGIN.
        reader.execute("SELECT value FROM meta WHERE key = 'applied_index'").fetchone()
    except BaseException:
        reader.close()
        raise
    return reader


def _image_of_reader(reader: sqlite3.Connection, path: str | None) -> bytes | None:
    """
    Copy the version of the file C{reader}'s read transaction sees (the
    backup uses a source connection's open transaction), then close it.
    """
    try:
        return _image(reader, path)
    finally:
        reader.close()


def _image(connection: sqlite3.Connection, path: str | None) -> bytes | None:
    """Back C{connection}'s database up into the file C{path}, or into bytes."""
    if path is not None:
        target = sqlite3.connect(path)
        try:
            connection.backup(target)
            # A rollback-journal file: reading it later (restoring from it in
            # place) creates no -wal or -shm files beside it.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
        return None
    with tempfile.TemporaryDirectory() as folder:
        copy = os.path.join(folder, "snapshot.db")
        _image(connection, copy)
        with open(copy, "rb") as f:
            return f.read()


def _snapshot_image(txn: Any, path: str | None = None) -> bytes | None:
    # txn is a DB-API cursor (or adbapi's proxy for one): .connection is sqlite3's.
    return _image(txn.connection, path)


def _restore_image(txn: Any, image: Any) -> None:
    path = getattr(image, "path", None)
    if path is not None:
        # An image on disk (a Raft snapshot file): copied from where it is.
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check_image(source, "the snapshot image")
            source.backup(txn.connection)
        finally:
            source.close()
    else:
        with tempfile.TemporaryDirectory() as folder:
            copy = os.path.join(folder, "snapshot.db")
            with open(copy, "wb") as f:
                f.write(image)
            source = sqlite3.connect(copy)
            try:
                check_image(source, "the snapshot image")
                source.backup(txn.connection)
            finally:
                source.close()
    # An image from an older release lacks the newer tables and columns.
    migrate_state(txn)
