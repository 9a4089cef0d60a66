"""
The durable local command log: an ordered list of commands in its own SQLite
file. An entry is committed once C{append}'s transaction is; the state machine
catches up from here after a crash.

An entry is stored compressed (zlib, behind a one-byte marker): a batch of
jobs is mostly repeated JSON keys and values and shrinks about tenfold, and
it stays in the file until compaction. Entries written before that are plain
JSON, which always begins with C{"{"}, and still read.
"""

from __future__ import annotations

import zlib
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed

from scheduler0.store.commands import Command
from scheduler0.versions import UnsupportedVersion, at_entry, migrate_schema

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, command BLOB NOT NULL)",
    # last_index survives compaction, so indexes never restart after truncation.
    "CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO log_meta (key, value) VALUES ('last_index', 0)",
)


#: The first byte of an entry that is a command's JSON compressed with zlib.
ZLIB_MARKER = b"\x01"
#: zlib's fastest levels shrink a batch of jobs almost as much as the
#: default level at a third of its time.
ZLIB_LEVEL = 1


def encode_entry(payload: bytes) -> bytes:
    """A command's JSON bytes as they are stored: the marker, then compressed."""
    return ZLIB_MARKER + zlib.compress(payload, ZLIB_LEVEL)


def decode_entry(raw: bytes) -> Command:
    """
    The command of a stored entry: compressed (L{encode_entry}) or plain JSON
    (written before entries were compressed). C{ValueError} when neither.
    """
    if raw[:1] == ZLIB_MARKER:
        try:
            raw = zlib.decompress(raw[1:])
        except zlib.error as e:
            raise ValueError(f"compressed command log entry is corrupt: {e}") from e
    return Command.from_bytes(raw)


def _create_schema(txn: Any) -> None:
    for statement in _SCHEMA:
        txn.execute(statement)


#: The steps of log.db's schema, in order (L{migrate_schema}): step 0 is the
#: layout of the releases before schema versions (version 0).
_STEPS = (_create_schema,)
LOG_SCHEMA_VERSION = len(_STEPS)


def _migrate(txn: Any) -> None:
    migrate_schema(txn, _STEPS, _create_schema)


def _last_index(txn: Any) -> int:
    txn.execute("SELECT value FROM log_meta WHERE key = 'last_index'")
    return txn.fetchone()[0]


def _append(txn: Any, payloads: list[bytes]) -> list[int]:
    first = _last_index(txn) + 1
    indexes = list(range(first, first + len(payloads)))
    # Compressed here, on the pool's thread (zlib lets go of the GIL), not on
    # the reactor's.
    txn.executemany(
        "INSERT INTO log (idx, command) VALUES (?, ?)",
        [(index, encode_entry(payload)) for index, payload in zip(indexes, payloads, strict=True)],
    )
    txn.execute(
        "UPDATE log_meta SET value = ? WHERE key = 'last_index'", (first + len(payloads) - 1,)
    )
    return indexes


def _advance_to(txn: Any, index: int) -> None:
    txn.execute("UPDATE log_meta SET value = MAX(value, ?) WHERE key = 'last_index'", (index,))


def _entries_after(txn: Any, index: int, limit: int) -> list[tuple[int, Command]]:
    txn.execute("SELECT idx, command FROM log WHERE idx > ? ORDER BY idx LIMIT ?", (index, limit))
    entries = []
    for idx, raw in txn.fetchall():
        try:
            entries.append((idx, decode_entry(bytes(raw))))
        except UnsupportedVersion as e:
            raise at_entry(idx, e, "command log entry") from None
    return entries


@attrs.define(eq=False)
class CommandLog:
    """Commands in index order, appended in batches (group commit)."""

    pool: Any
    # Bytes of commands appended since this object was made, before they are
    # compressed (the proposer compacts by size too: a few huge commands are
    # as heavy as many small to replay).
    appended_bytes: int = 0

    def open(self) -> Deferred:
        """Create the log tables if they are missing (or migrate them)."""
        return self.pool.runInteraction(_migrate)

    def close(self) -> Deferred:
        """Release the connection pool."""
        self.pool.close()
        return succeed(None)

    def append(self, commands: list[Command]) -> Deferred:
        """Durably append C{commands} in one transaction; fire with their indexes."""
        payloads = [command.to_bytes() for command in commands]
        if not payloads:
            return succeed([])
        self.appended_bytes += sum(len(payload) for payload in payloads)
        return self.pool.runInteraction(_append, payloads)

    def entries_after(self, index: int, limit: int = 1000) -> Deferred:
        """Up to C{limit} (index, command) pairs with index greater than C{index}."""
        return self.pool.runInteraction(_entries_after, index, limit)

    def last_index(self) -> Deferred:
        """The index of the newest entry ever appended (0 for an empty log)."""
        return self.pool.runInteraction(_last_index)

    def truncate_before(self, index: int) -> Deferred:
        """Drop entries with an index below C{index} (they are applied: compaction)."""
        return self.pool.runOperation("DELETE FROM log WHERE idx < ?", (index,))

    def advance_to(self, index: int) -> Deferred:
        """
        Make the next appended index greater than C{index}: used when the state
        is ahead of this log (a lost or replaced log file), so new commands are
        not mistaken for already-applied ones.
        """
        return self.pool.runInteraction(_advance_to, index)
