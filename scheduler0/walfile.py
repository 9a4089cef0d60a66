"""
The size of SQLite's write-ahead log files: how large one may grow past a
transaction before it is checkpointed and truncated. Shared by the node's
stores (L{scheduler0.store.sqlite}) and the Raft log
(L{scheduler0.raft.storage}), which know nothing of each other.
"""

from __future__ import annotations

import os
from typing import Any

# A WAL file larger than this after a transaction is checkpointed and
# truncated at once (see scheduler0.store.sqlite.CheckpointingPool), and SQLite truncates it to this
# size when it starts it over after a checkpoint. Small writes reach it
# every 500 pages (SQLite's automatic checkpoint comes at 1,000); a large
# transaction (a batch of 10,000 jobs writes 7-11 MB of pages to state.db
# and its command as much again to log.db) goes past it at once. Without
# this a WAL file keeps the size of the largest transaction ever written:
# one 3 MB batch of jobs left 18 MB of WAL files beside the databases.
WAL_LIMIT_BYTES = 2 * 1024 * 1024


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
