"""
Durable Raft storage: log entries, hard state (term, vote, commit) and the
latest snapshot.

Two implementations share one interface:

- :class:`SqliteRaftStorage` -- a SQLite file in the data dir, WAL journal,
  ``synchronous=FULL``; each :meth:`save` of a Ready is one transaction, so one
  fsync covers a whole batch (group commit).  Large entries are stored
  compressed (a codec column per row; the wire and the core never see it).
  Its methods block: a Twisted adapter calls them from a worker thread, never
  on the reactor thread.  The snapshot image itself is a file beside it (a
  :class:`SnapshotFile`), read only when a chunk of it is sent, so a large
  state machine is not held in memory.
- :class:`MemoryRaftStorage` -- the simulated disk of the deterministic
  simulator.  :meth:`~MemoryRaftStorage.write` buffers, :meth:`~MemoryRaftStorage.sync`
  makes durable, :meth:`~MemoryRaftStorage.crash` loses everything not synced.

Both apply a Ready in the same order (``apply_ready``): snapshot, truncation,
entries, hard state, compaction.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
import zlib
from collections.abc import Callable
from typing import Protocol

import attrs

from scheduler0.raft.codec import decode_config, encode_config
from scheduler0.raft.core import BootState, Ready, SnapshotImage
from scheduler0.raft.messages import Entry, HardState, SnapshotMeta
from scheduler0.versions import UnsupportedVersion, migrate_schema
from scheduler0.walfile import WAL_LIMIT_BYTES, trim_wal


@attrs.frozen
class SnapshotFile:
    """
    A snapshot image kept on disk: measured and sliced like bytes (what the
    Raft core does with an image: send it in chunks), read only then.
    """

    path: str
    size: int

    @classmethod
    def at(cls, path: str) -> SnapshotFile:
        return cls(path, os.path.getsize(path))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a snapshot file is read by contiguous slices")
        start, stop, _ = key.indices(self.size)
        if stop <= start:
            return b""
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(stop - start)

    def __bytes__(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RaftStorage(Protocol):
    def load(self) -> BootState: ...

    def save(self, ready: Ready) -> None: ...

    def save_snapshot(self, meta: SnapshotMeta, data: SnapshotImage) -> None: ...


@attrs.define(eq=False)
class _Image:
    """A whole durable state, as the memory disk holds it."""

    hard_state: HardState = HardState()
    snapshot: SnapshotMeta | None = None
    snapshot_data: SnapshotImage | None = None
    entries: dict[int, Entry] = attrs.Factory(dict)

    def copy(self) -> _Image:
        return _Image(self.hard_state, self.snapshot, self.snapshot_data, dict(self.entries))

    def boot(self) -> BootState:
        base = self.snapshot.index if self.snapshot else 0
        entries = []
        index = base + 1
        while index in self.entries:
            entries.append(self.entries[index])
            index += 1
        return BootState(self.hard_state, self.snapshot, self.snapshot_data, tuple(entries))


def _apply_ready(image: _Image, ready: Ready) -> None:
    if ready.snapshot is not None:
        meta, data = ready.snapshot
        _apply_snapshot(image, meta, data, drop_entries=True)
    if ready.truncate_from:
        for index in [i for i in image.entries if i >= ready.truncate_from]:
            del image.entries[index]
    for entry in ready.entries:
        image.entries[entry.index] = entry
    if ready.hard_state is not None:
        image.hard_state = ready.hard_state
    if ready.compact_to:
        for index in [i for i in image.entries if i <= ready.compact_to]:
            del image.entries[index]


def _apply_snapshot(
    image: _Image, meta: SnapshotMeta, data: SnapshotImage, drop_entries: bool = False
) -> None:
    # A local snapshot keeps its trailing entries (compaction comes later, in a
    # Ready); an installed one replaces everything it covers.
    if image.snapshot is None or meta.index > image.snapshot.index:
        image.snapshot, image.snapshot_data = meta, data
        if drop_entries:
            for index in [i for i in image.entries if i <= meta.index]:
                del image.entries[index]


@attrs.define(eq=False)
class MemoryRaftStorage:
    """Simulated disk: buffered writes, explicit sync, crash loses the buffer."""

    _durable: _Image = attrs.Factory(_Image)
    _pending: list[Callable[[_Image], None]] = attrs.Factory(list)
    syncs: int = 0

    def load(self) -> BootState:
        """What a restarting node reads back (only synced data)."""
        return self._durable.boot()

    def preload(self, boot: BootState) -> None:
        """Start from given durable contents (for crafted test scenarios)."""
        self._durable = _Image(
            boot.hard_state, boot.snapshot, boot.snapshot_data, {e.index: e for e in boot.entries}
        )

    def write(self, ready: Ready) -> None:
        self._pending.append(lambda image: _apply_ready(image, ready))

    def write_snapshot(self, meta: SnapshotMeta, data: SnapshotImage) -> None:
        self._pending.append(lambda image: _apply_snapshot(image, meta, data))

    def sync(self) -> None:
        if self._pending:
            image = self._durable.copy()
            for op in self._pending:
                op(image)
            self._durable = image
            self._pending = []
            self.syncs += 1

    def unsynced(self) -> bool:
        return bool(self._pending)

    def crash(self) -> None:
        """Power loss: forget every write since the last sync."""
        self._pending = []

    def save(self, ready: Ready) -> None:
        if ready.must_sync():
            self.write(ready)
            self.sync()

    def save_snapshot(self, meta: SnapshotMeta, data: SnapshotImage) -> None:
        self.write_snapshot(meta, data)
        self.sync()

    def durable_entries(self) -> dict[int, Entry]:
        return dict(self._durable.entries)

    @property
    def durable_hard_state(self) -> HardState:
        return self._durable.hard_state


_SCHEMA = """
CREATE TABLE IF NOT EXISTS hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL, vote TEXT NOT NULL,
    commit_index INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL,
    request_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, term INTEGER NOT NULL,
    config BLOB NOT NULL,
    data BLOB NOT NULL);
"""


def _create_schema(db: sqlite3.Connection) -> None:
    """Create what is missing, adding new columns to the tables of older files."""
    db.executescript(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(snapshot)")}
    if "file" not in columns:
        # Files from before snapshot files kept the image in the row.
        db.execute("ALTER TABLE snapshot ADD COLUMN file TEXT")
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    if "codec" not in columns:
        # Files from before entries were compressed at rest.
        db.execute(f"ALTER TABLE entries ADD COLUMN codec INTEGER NOT NULL DEFAULT {CODEC_PLAIN}")


#: The steps of raft.db's schema, in order (L{migrate_schema}; its C{PRAGMA
#: user_version} is how many it had): step 0 brings the file of any release
#: before schema versions (version 0) to this layout. The entries' data are
#: commands, versioned on their own (L{scheduler0.versions.ENTRY_VERSION}).
_STEPS = (_create_schema,)
RAFT_SCHEMA_VERSION = len(_STEPS)


# How an entry's data is stored (the entries table's codec column): as it is,
# or zlib-compressed. Only at rest: the wire and the core see the data as it
# is, so peers of any release read what this one sends. Rows from before the
# column read as stored as they are.
CODEC_PLAIN = 0
CODEC_ZLIB = 1
#: Data shorter than this is stored as it is (heartbeat-sized commands gain nothing).
COMPRESS_FROM_BYTES = 512
ZLIB_LEVEL = 1


def stored_data(data: bytes) -> tuple[bytes, int]:
    """An entry's data as it is stored, and its codec."""
    if len(data) < COMPRESS_FROM_BYTES:
        return data, CODEC_PLAIN
    return zlib.compress(data, ZLIB_LEVEL), CODEC_ZLIB


def loaded_data(blob: bytes, codec: int) -> bytes:
    """An entry's data from its stored form (L{stored_data})."""
    if codec == CODEC_PLAIN:
        return blob
    if codec == CODEC_ZLIB:
        return zlib.decompress(blob)
    raise ValueError(f"raft log entry stored with an unknown codec {codec}")


@attrs.define(eq=False)
class SqliteRaftStorage:
    """
    Raft log + hard state + snapshot metadata in one SQLite file (blocking
    calls); the snapshot image in a file of the C{<path>.snapshots} folder,
    named in the snapshot row.
    """

    path: str
    #: A WAL file larger than this after a transaction is checkpointed and truncated.
    wal_limit: int = WAL_LIMIT_BYTES
    _db: sqlite3.Connection = attrs.field(init=False)
    #: Checkpoints made because the WAL passed C{wal_limit}.
    truncations: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # As the store's files: a WAL past this is checkpointed and truncated
        # after the transaction that grew it (L{_trim_wal}), and SQLite cuts it
        # back to this size when it starts it over.
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        try:
            migrate_schema(self._db, _STEPS, _create_schema, self.path)
        except UnsupportedVersion:
            self._db.close()
            raise

    def _trim_wal(self) -> None:
        """
        Checkpoint and truncate the WAL once a transaction left it past
        C{wal_limit}: otherwise it keeps the size of the largest batch of
        entries ever written (SQLite reuses a WAL file, it does not shrink it).
        """
        if trim_wal(self._db, self.path + "-wal", self.wal_limit):
            self.truncations += 1

    @property
    def snapshot_folder(self) -> str:
        return self.path + ".snapshots"

    def capture_path(self) -> str:
        """A new file name in the snapshot folder for the state machine to copy itself to."""
        os.makedirs(self.snapshot_folder, exist_ok=True)
        return os.path.join(self.snapshot_folder, f"snapshot-{uuid.uuid4().hex}.db")

    def close(self) -> None:
        self._db.close()

    def load(self) -> BootState:
        row = self._db.execute(
            "SELECT term, vote, commit_index FROM hard_state WHERE id = 1"
        ).fetchone()
        hard = HardState(*row) if row else HardState()
        snap_row = self._db.execute(
            "SELECT idx, term, config, data, file FROM snapshot WHERE id = 1"
        ).fetchone()
        snapshot = None
        data: SnapshotImage | None = None
        base = 0
        if snap_row:
            snapshot = SnapshotMeta(snap_row[0], snap_row[1], decode_config(snap_row[2]))
            if snap_row[4]:
                data = SnapshotFile.at(os.path.join(self.snapshot_folder, snap_row[4]))
            else:
                data = bytes(snap_row[3])
            base = snapshot.index
        self._remove_unused_files(snap_row[4] if snap_row else None)
        entries = []
        expected = base + 1
        for idx, term, kind, blob, request_id, codec in self._db.execute(
            "SELECT idx, term, kind, data, request_id, codec FROM entries"
            " WHERE idx > ? ORDER BY idx",
            (base,),
        ):
            if idx != expected:
                break
            entries.append(Entry(term, idx, kind, loaded_data(bytes(blob), codec), request_id))
            expected += 1
        return BootState(hard, snapshot, data, tuple(entries))

    def save(self, ready: Ready) -> None:
        """Apply one Ready's persistence in a single durable transaction."""
        if not ready.must_sync():
            return
        db = self._db
        file_name = None
        if ready.snapshot is not None:
            file_name = self._write_file(ready.snapshot[1])
        rows = [
            (e.index, e.term, e.kind, *stored_data(e.data), e.request_id) for e in ready.entries
        ]
        db.execute("BEGIN IMMEDIATE")
        try:
            if ready.snapshot is not None:
                self._put_snapshot(ready.snapshot[0], file_name, drop_entries=True)
            if ready.truncate_from:
                db.execute("DELETE FROM entries WHERE idx >= ?", (ready.truncate_from,))
            if rows:
                db.executemany(
                    "INSERT OR REPLACE INTO entries (idx, term, kind, data, codec, request_id)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            if ready.hard_state is not None:
                h = ready.hard_state
                db.execute(
                    "INSERT OR REPLACE INTO hard_state (id, term, vote, commit_index)"
                    " VALUES (1, ?, ?, ?)",
                    (h.term, h.vote, h.commit),
                )
            if ready.compact_to:
                db.execute("DELETE FROM entries WHERE idx <= ?", (ready.compact_to,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._trim_wal()
        if file_name is not None:
            self._remove_unused_files(self._current_file())

    def save_snapshot(self, meta: SnapshotMeta, data: SnapshotImage) -> None:
        """
        Durably record a locally taken snapshot: C{data} is a L{SnapshotFile}
        in the snapshot folder (made durable and named in place), or bytes.
        """
        file_name = self._write_file(data)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._put_snapshot(meta, file_name)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._trim_wal()
        self._remove_unused_files(self._current_file())

    def _write_file(self, data: SnapshotImage) -> str:
        """The name of a durable file in the snapshot folder holding C{data}."""
        folder = self.snapshot_folder
        if isinstance(data, SnapshotFile) and os.path.dirname(data.path) == folder:
            _fsync_file(data.path)
        else:
            path = self.capture_path()
            with open(path, "wb") as f:
                f.write(data if isinstance(data, bytes) else bytes(data))
                f.flush()
                os.fsync(f.fileno())
            data = SnapshotFile.at(path)
        _fsync_dir(folder)
        return os.path.basename(data.path)

    def _current_file(self) -> str | None:
        row = self._db.execute("SELECT file FROM snapshot WHERE id = 1").fetchone()
        return row[0] if row else None

    def _remove_unused_files(self, keep: str | None) -> None:
        """Delete the folder's files but C{keep}: older snapshots, captures never recorded."""
        folder = self.snapshot_folder
        if not os.path.isdir(folder):
            return
        for name in os.listdir(folder):
            if keep is None or not name.startswith(keep):
                try:
                    os.unlink(os.path.join(folder, name))
                except FileNotFoundError:
                    pass

    def _put_snapshot(
        self, meta: SnapshotMeta, file_name: str | None, drop_entries: bool = False
    ) -> None:
        row = self._db.execute("SELECT idx FROM snapshot WHERE id = 1").fetchone()
        if row and row[0] >= meta.index:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO snapshot (id, idx, term, config, data, file)"
            " VALUES (1, ?, ?, ?, ?, ?)",
            (meta.index, meta.term, encode_config(meta.config), b"", file_name),
        )
        if drop_entries:
            self._db.execute("DELETE FROM entries WHERE idx <= ?", (meta.index,))
