"""The same storage contract run against the simulated disk and SQLite."""

from __future__ import annotations

import os
import random
import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.raft.codec import encode_config
from scheduler0.raft.core import RaftNode, RaftSettings, Ready
from scheduler0.raft.messages import ClusterConfig, Entry, HardState, SnapshotMeta
from scheduler0.raft.storage import (
    COMPRESS_FROM_BYTES,
    MemoryRaftStorage,
    SnapshotFile,
    SqliteRaftStorage,
)
from scheduler0.walfile import WAL_LIMIT_BYTES

CONFIG = ClusterConfig(frozenset({"a", "b"}), frozenset({"c"}))


def ready(**changes: object) -> Ready:
    fields: dict[str, object] = dict(
        hard_state=None,
        snapshot=None,
        truncate_from=0,
        entries=(),
        compact_to=0,
        messages=(),
        committed=(),
        results=(),
        want_snapshot=False,
    )
    fields.update(changes)
    return Ready(**fields)  # type: ignore[arg-type]


def entries(term: int, lo: int, hi: int) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, 0, b"d%d" % i, f"r{i}") for i in range(lo, hi + 1))


class StorageContract:
    """Mixed into a SynchronousTestCase that defines ``make()`` and ``reopen()``."""

    def make(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def reopen(self, storage):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def test_empty_storage_boots_empty(self) -> None:
        """A new store holds no hard state, snapshot or entries."""
        boot = self.make().load()
        self.assertEqual((boot.hard_state, boot.snapshot, boot.entries), (HardState(), None, ()))

    def test_entries_and_hard_state_survive_reopen(self) -> None:
        """What save() wrote is what load() reads after a restart."""
        store = self.make()
        store.save(ready(hard_state=HardState(3, "b", 2), entries=entries(3, 1, 4)))
        boot = self.reopen(store).load()
        self.assertEqual(boot.hard_state, HardState(3, "b", 2))
        self.assertEqual(boot.entries, entries(3, 1, 4))

    def test_truncation_replaces_the_suffix(self) -> None:
        """truncate_from deletes the old suffix before new entries are written."""
        store = self.make()
        store.save(ready(entries=entries(1, 1, 5)))
        store.save(ready(truncate_from=3, entries=entries(2, 3, 3)))
        self.assertEqual(self.reopen(store).load().entries, entries(1, 1, 2) + entries(2, 3, 3))

    def test_compaction_drops_entries_up_to_index(self) -> None:
        """compact_to removes covered entries; a snapshot covers the rest of the boot."""
        store = self.make()
        store.save(ready(entries=entries(1, 1, 6)))
        store.save_snapshot(SnapshotMeta(4, 1, CONFIG), b"state")
        store.save(ready(compact_to=2))
        boot = self.reopen(store).load()
        self.assertEqual(boot.snapshot, SnapshotMeta(4, 1, CONFIG))
        self.assertEqual(bytes(boot.snapshot_data), b"state")
        self.assertEqual(boot.entries, entries(1, 5, 6))

    def test_installed_snapshot_replaces_covered_entries(self) -> None:
        """A snapshot received from the leader drops every entry it covers."""
        store = self.make()
        store.save(ready(entries=entries(1, 1, 3)))
        store.save(ready(snapshot=(SnapshotMeta(10, 2, CONFIG), b"s"), truncate_from=11))
        boot = self.reopen(store).load()
        self.assertEqual((boot.snapshot.index, boot.entries), (10, ()))

    def test_older_snapshot_does_not_replace_newer(self) -> None:
        """Saving a snapshot older than the stored one is a no-op."""
        store = self.make()
        store.save_snapshot(SnapshotMeta(5, 1, CONFIG), b"new")
        store.save_snapshot(SnapshotMeta(3, 1, CONFIG), b"old")
        self.assertEqual(bytes(self.reopen(store).load().snapshot_data), b"new")

    def test_core_restarts_from_storage(self) -> None:
        """
        A core fed by the storage's boot state resumes term, vote and log;
        its commit index is the one written with the last synced batch (a
        change of commit alone is not synced).
        """
        store = self.make()
        node = RaftNode.create(
            "a", ClusterConfig(frozenset({"a"})), settings=RaftSettings(), rng=random.Random(0)
        )
        for _ in range(30):
            node.tick()
        while node.has_ready():
            r = node.ready()
            store.save(r)
            node.advance(r)
        node.propose(b"x")
        while node.has_ready():
            r = node.ready()
            store.save(r)
            node.advance(r)
        again = RaftNode.create(
            "a", ClusterConfig(frozenset({"a"})), boot=self.reopen(store).load()
        )
        self.assertEqual((again.term, again.vote, again.last_index, again.commit), (1, "a", 2, 1))


class MemoryStorageTests(StorageContract, SynchronousTestCase):
    def make(self) -> MemoryRaftStorage:
        return MemoryRaftStorage()

    def reopen(self, storage: MemoryRaftStorage) -> MemoryRaftStorage:
        storage.crash()
        return storage

    def test_crash_loses_unsynced_writes(self) -> None:
        """Writes not yet synced vanish on crash; synced ones stay."""
        store = MemoryRaftStorage()
        store.write(ready(entries=entries(1, 1, 2)))
        store.sync()
        store.write(ready(hard_state=HardState(2, "a", 0), entries=entries(2, 3, 3)))
        self.assertTrue(store.unsynced())
        store.crash()
        boot = store.load()
        self.assertEqual((boot.hard_state, boot.entries), (HardState(), entries(1, 1, 2)))


class SqliteStorageTests(StorageContract, SynchronousTestCase):
    def make(self) -> SqliteRaftStorage:
        self.path = os.path.join(self.mktemp() + ".db")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        store = SqliteRaftStorage(self.path)
        self.addCleanup(store.close)
        return store

    def reopen(self, storage: SqliteRaftStorage) -> SqliteRaftStorage:
        storage.close()
        store = SqliteRaftStorage(self.path)
        self.addCleanup(store.close)
        return store

    def test_uses_wal_and_full_sync(self) -> None:
        """The log database runs in WAL mode with synchronous=FULL."""
        store = self.make()
        self.assertEqual(store._db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(store._db.execute("PRAGMA synchronous").fetchone()[0], 2)

    def test_a_large_batch_does_not_leave_a_large_wal(self) -> None:
        """
        A transaction that grows the WAL past its limit is checkpointed into
        the file and the WAL truncated; its entries are durable all the same.
        """
        store = self.make()
        self.assertEqual(
            store._db.execute("PRAGMA journal_size_limit").fetchone()[0], WAL_LIMIT_BYTES
        )
        noise = random.Random(16)
        big = tuple(Entry(1, i, 0, noise.randbytes(100_000), f"r{i}") for i in range(1, 31))
        store.save(ready(entries=big))
        self.assertEqual(store.truncations, 1)
        self.assertLessEqual(os.path.getsize(self.path + "-wal"), WAL_LIMIT_BYTES)
        store.save(ready(entries=entries(1, 31, 32)))
        self.assertEqual(store.truncations, 1)
        self.assertEqual(self.reopen(store).load().entries, big + entries(1, 31, 32))

    def test_large_entries_are_compressed_at_rest_and_old_rows_still_read(self) -> None:
        """
        An entry's data past COMPRESS_FROM_BYTES is stored zlib-compressed
        (codec 1), a small one as it is (codec 0); a file from before the
        codec column gets it, its rows read as stored as they are, and both
        kinds load back as the data the core gave.
        """
        self.path = os.path.join(self.mktemp() + ".db")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        old = sqlite3.connect(self.path)
        old.executescript(
            "CREATE TABLE entries (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,"
            " kind INTEGER NOT NULL, data BLOB NOT NULL, request_id TEXT NOT NULL);"
        )
        plain = b'{"op":"create_jobs","args":{}}' * 100
        old.execute("INSERT INTO entries VALUES (1, 1, 0, ?, 'r1')", (plain,))
        old.commit()
        old.close()
        store = SqliteRaftStorage(self.path)
        self.addCleanup(store.close)
        large, small = plain * 10, b"x" * (COMPRESS_FROM_BYTES - 1)
        store.save(ready(entries=(Entry(1, 2, 0, large, "r2"), Entry(1, 3, 0, small, "r3"))))
        stored = store._db.execute("SELECT idx, codec, length(data) FROM entries").fetchall()
        self.assertEqual([(idx, codec) for idx, codec, _ in stored], [(1, 0), (2, 1), (3, 0)])
        self.assertLess(stored[1][2], len(large) / 10)
        loaded = self.reopen(store).load().entries
        self.assertEqual([e.data for e in loaded], [plain, large, small])

    def test_failed_batch_is_rolled_back_whole(self) -> None:
        """A batch that fails midway leaves nothing of itself behind."""
        store = self.make()
        store.save(ready(entries=entries(1, 1, 2)))
        broken = Entry(1, 3, 0, b"x", None)  # type: ignore[arg-type]
        bad = ready(hard_state=HardState(5, "x", 0), entries=(broken,))
        self.assertRaises(sqlite3.IntegrityError, store.save, bad)
        boot = store.load()
        self.assertEqual((boot.hard_state, boot.entries), (HardState(), entries(1, 1, 2)))

    def test_a_snapshot_image_is_a_file_read_only_by_the_slices_asked_for(self) -> None:
        """
        The image lives in a file of the snapshot folder: load() gives an
        object that measures and slices like the bytes, without reading
        them all; the file is made durable and recorded where it was made.
        """
        store = self.make()
        capture = store.capture_path()
        image = bytes(range(256)) * 40
        with open(capture, "wb") as f:
            f.write(image)
        store.save_snapshot(SnapshotMeta(7, 2, CONFIG), SnapshotFile.at(capture))
        data = self.reopen(store).load().snapshot_data
        self.assertIsInstance(data, SnapshotFile)
        self.assertEqual(data.path, capture)
        self.assertEqual(len(data), len(image))
        self.assertEqual(data[1000:3000], image[1000:3000])
        self.assertEqual(data[len(image) - 5 : len(image) + 100], image[-5:])
        self.assertEqual(data[5:5], b"")

    def test_only_the_recorded_snapshot_file_is_kept(self) -> None:
        """
        A newer snapshot (taken here or installed from the leader) removes
        the older file, and a start removes captures that were never
        recorded (a crash while copying).
        """
        store = self.make()
        store.save_snapshot(SnapshotMeta(3, 1, CONFIG), b"first")
        (first,) = os.listdir(store.snapshot_folder)
        store.save(ready(snapshot=(SnapshotMeta(9, 2, CONFIG), b"installed"), truncate_from=10))
        (second,) = os.listdir(store.snapshot_folder)
        self.assertNotEqual(first, second)
        with open(store.capture_path(), "wb") as f:
            f.write(b"half a copy")
        reopened = self.reopen(store)
        self.assertEqual(bytes(reopened.load().snapshot_data), b"installed")
        self.assertEqual(os.listdir(reopened.snapshot_folder), [second])

    def test_a_log_from_before_snapshot_files_still_boots(self) -> None:
        """A snapshot row holding its image (the old layout) loads as those bytes."""
        store = self.make()
        store.close()
        db = sqlite3.connect(self.path)
        db.execute("DROP TABLE snapshot")
        db.execute(
            "CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL,"
            " term INTEGER NOT NULL, config BLOB NOT NULL, data BLOB NOT NULL)"
        )
        db.execute(
            "INSERT INTO snapshot VALUES (1, 4, 1, ?, ?)",
            (encode_config(CONFIG), b"old image"),
        )
        db.commit()
        db.close()
        boot = self.reopen(store).load()
        self.assertEqual((boot.snapshot.index, boot.snapshot_data), (4, b"old image"))
