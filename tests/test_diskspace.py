"""
Writes on a full disk, without a disk: the watcher of the data directory
(a fake statvfs on a task.Clock), the single-node proposer's refusals and
its retries, the Raft driver applying a failed entry again, and the
start-up check.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.diskspace import (
    BELOW_FLOOR,
    DISK_FULL,
    IO_ERROR,
    READ_ONLY,
    DataDirectoryUnusable,
    DiskWatcher,
    check_data_directory,
    storage_failure,
)
from scheduler0.errors import StoreUnavailable, WritesRefused
from scheduler0.store.commands import Command
from scheduler0.store.local import LocalProposer
from scheduler0.store.log import CommandLog
from scheduler0.store.state import StateStore
from tests.support.raft import Cluster
from tests.support.state import project

MB = 1024 * 1024
DATA = "/var/lib/scheduler0"


@attrs.frozen
class _Stat:
    f_bavail: int
    f_frsize: int
    f_flag: int


@attrs.define
class FakeDisk:
    """A statvfs whose free space and read-only flag the test sets."""

    free: int = 500 * MB
    read_only: bool = False
    asked: list[str] = attrs.field(factory=list)

    def __call__(self, path: str) -> _Stat:
        self.asked.append(path)
        return _Stat(self.free // 4096, 4096, os.ST_RDONLY if self.read_only else 0)


def messages(events: list[dict], start: str) -> list[str]:
    """The formatted log events that begin with C{start}."""
    from twisted.logger import formatEvent

    return [text for text in (formatEvent(e) for e in events) if text.startswith(start)]


class StorageFailureTests(SynchronousTestCase):
    def test_sqlite_and_os_errors_of_the_disk_are_recognised(self) -> None:
        """Full, read-only and I/O failures name their cause; other errors are not the disk's."""
        full = sqlite3.OperationalError("database or disk is full")
        self.assertEqual(storage_failure(full), DISK_FULL)
        readonly = sqlite3.OperationalError("attempt to write a readonly database")
        self.assertEqual(storage_failure(readonly), READ_ONLY)
        self.assertEqual(storage_failure(sqlite3.OperationalError("disk I/O error")), IO_ERROR)
        self.assertEqual(storage_failure(OSError(errno.ENOSPC, "No space left")), DISK_FULL)
        self.assertEqual(storage_failure(OSError(errno.EROFS, "Read-only")), READ_ONLY)
        self.assertIsNone(storage_failure(sqlite3.OperationalError("no such table: jobs")))
        self.assertIsNone(storage_failure(ValueError("database or disk is full")))


class DiskWatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.disk = FakeDisk()
        self.watcher = DiskWatcher(self.clock, DATA, 64 * MB, statvfs=self.disk)

    def test_writes_are_refused_below_the_floor_and_resume_above_it(self) -> None:
        """
        Below DataDirMinFreeMB writes are refused, naming the directory and its
        free space; one event says so however many samples see it, and one
        says when they resume.
        """
        with capturedLogs() as events:
            self.watcher.start()
            self.assertIsNone(self.watcher.refusal)
            self.disk.free = 10 * MB
            self.clock.pump([1.0] * 10)
            refusal = self.watcher.refusal
            assert refusal is not None
            self.assertEqual(refusal.cause, BELOW_FLOOR)
            self.assertIn(DATA, refusal.message)
            self.assertIn("10.0 MB free", refusal.message)
            self.assertIn("64.0 MB", refusal.message)
            self.disk.free = 200 * MB
            self.clock.pump([1.0] * 10)
            self.assertIsNone(self.watcher.refusal)
            self.watcher.stop()
        self.assertEqual(len(messages(events, "writes refused: ")), 1)
        self.assertEqual(len(messages(events, "writes resumed: ")), 1)

    def test_a_write_sees_the_disk_as_it_is_now(self) -> None:
        """C{writes_refused} samples the directory at once, between two timer samples."""
        self.watcher.start()
        self.disk.free = MB
        refusal = self.watcher.writes_refused()
        self.assertEqual(refusal.cause if refusal else None, BELOW_FLOOR)
        self.watcher.stop()

    def test_a_full_disk_refuses_until_space_is_actually_freed(self) -> None:
        """
        A write that failed for want of space refuses writes until more than
        a megabyte beyond what was free then is free, so a full disk does not
        flap between refused and resumed; then writes resume by themselves.
        """
        watcher = DiskWatcher(self.clock, DATA, 0, statvfs=self.disk)
        watcher.start()
        self.disk.free = 300 * 1024
        self.assertTrue(watcher.note_failure(sqlite3.OperationalError("database or disk is full")))
        self.assertEqual(watcher.refusal.cause if watcher.refusal else None, DISK_FULL)
        self.disk.free = 800 * 1024
        self.clock.advance(1)
        self.assertIsNotNone(watcher.refusal)
        self.disk.free = 20 * MB
        self.clock.advance(1)
        self.assertIsNone(watcher.refusal)
        self.assertFalse(watcher.note_failure(ValueError("not the disk")))
        watcher.stop()

    def test_a_read_only_file_system_refuses_writes(self) -> None:
        """A file system mounted read-only refuses writes whatever its free space."""
        self.watcher.start()
        self.disk.read_only = True
        self.clock.advance(1)
        self.assertEqual(self.watcher.refusal.cause if self.watcher.refusal else None, READ_ONLY)
        self.disk.read_only = False
        self.clock.advance(1)
        self.assertIsNone(self.watcher.refusal)
        self.watcher.stop()


class FullDiskState:
    """A StateStore whose apply fails as SQLite does on a full disk while C{failing}."""

    def __init__(self, inner: StateStore):
        self.inner = inner
        self.failing = False
        self.attempts = 0

    def apply(self, index: int, command: Command) -> Deferred:
        self.attempts += 1
        if self.failing:
            return Deferred.fromCoroutine(self._fail())
        return self.inner.apply(index, command)

    async def _fail(self) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ProposerOnAFullDiskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.disk = FakeDisk()
        self.watcher = DiskWatcher(self.clock, DATA, 64 * MB, statvfs=self.disk)
        self.real = StateStore(SynchronousConnectionPool(":memory:"))
        self.successResultOf(self.real.open())
        self.state = FullDiskState(self.real)
        self.log = CommandLog(SynchronousConnectionPool(":memory:"))
        self.successResultOf(self.log.open())
        self.proposer = LocalProposer(self.log, self.state, self.clock, disk=self.watcher)  # type: ignore[arg-type]
        self.successResultOf(self.proposer.start())

    def create(self, uuid: str, name: str) -> Deferred:
        return self.proposer.propose(Command("create_project", {"project": project(uuid, name)}))

    def test_a_write_below_the_floor_is_refused_before_the_log(self) -> None:
        """
        Below the floor a write fails with WritesRefused naming the directory
        and its free space, and neither the log nor the state changed; once
        space returns the next write succeeds without a restart.
        """
        self.disk.free = 5 * MB
        refused = self.failureResultOf(self.create("p1", "a"), WritesRefused).value
        self.assertIn(DATA, str(refused))
        self.assertIn("5.0 MB free", str(refused))
        self.assertEqual((refused.data_dir, refused.free_bytes), (DATA, 5 * MB))
        self.assertEqual(self.successResultOf(self.log.last_index()), 0)
        self.assertEqual(self.successResultOf(self.real.applied_index()), 0)
        self.disk.free = 500 * MB
        self.assertTrue(self.successResultOf(self.create("p1", "a")).ok)
        self.assertEqual(self.successResultOf(self.real.applied_index()), 1)

    def test_an_apply_that_failed_is_applied_again_when_space_returns(self) -> None:
        """
        A command appended whose apply then fails on a full disk stays in the
        log: its writer gets a 503-kind error (it will be applied), later
        writes get WritesRefused, and once space returns the command is
        applied on the clock, in order, and writes resume without a restart.
        One event says the apply failed, however many attempts follow.
        """
        with capturedLogs() as events:
            self.disk.free = 100 * 1024
            self.state.failing = True
            # The floor is met when the write arrives; the disk fills under it.
            self.watcher.floor_bytes = 0
            first = self.failureResultOf(self.create("p1", "a"), StoreUnavailable).value
            self.assertNotIsInstance(first, WritesRefused)
            self.assertIn("in the command log", str(first))
            self.failureResultOf(self.create("p2", "b"), WritesRefused)
            self.assertEqual(self.successResultOf(self.log.last_index()), 1)
            self.clock.pump([1.0] * 30)
            self.assertGreater(self.state.attempts, 5)
            self.assertEqual(self.successResultOf(self.real.applied_index()), 0)
            self.state.failing = False
            self.disk.free = 500 * MB
            self.clock.pump([1.0] * 6)
        self.assertEqual(self.successResultOf(self.real.applied_index()), 1)
        self.assertEqual(self.successResultOf(self.real.get_project("p1"))["name"], "a")
        self.assertTrue(self.successResultOf(self.create("p2", "b")).ok)
        self.assertEqual(self.successResultOf(self.real.applied_index()), 2)
        self.assertEqual(len(messages(events, "applying command 1 failed")), 1)
        self.assertEqual(len(messages(events, "writes refused: ")), 1)

    def test_stopping_ends_the_retries(self) -> None:
        """A proposer stalled on a failed apply stops at once; a restart replays the entry."""
        self.state.failing = True
        self.failureResultOf(self.create("p1", "a"), StoreUnavailable)
        self.successResultOf(self.proposer.stop())
        self.state.failing = False
        again = LocalProposer(self.log, self.real, self.clock)
        self.successResultOf(again.start())
        self.assertEqual(self.successResultOf(self.real.applied_index()), 1)


class DriverApplyRetryTests(SynchronousTestCase):
    def test_a_follower_applies_a_failed_entry_again_and_skips_nothing(self) -> None:
        """
        A follower whose state machine fails an entry applies it again, in
        order, once it can; nothing after it is applied before it, and one
        event says it failed.
        """
        failing = {"on": False}
        follower = {"id": ""}
        applied: list[bytes] = []

        def apply_for(node_id: str) -> Any:
            def apply(entry: Any) -> str:
                if node_id == follower["id"]:
                    if failing["on"]:
                        raise sqlite3.OperationalError("database or disk is full")
                    applied.append(entry.data)
                return "ok"

            return apply

        with capturedLogs() as events:
            cluster = Cluster(apply_for=apply_for)
            leader = cluster.leader()
            follower["id"] = next(i for i, d in cluster.drivers.items() if d is not leader)
            failing["on"] = True
            for n in range(3):
                self.successResultOf(_settled(leader.propose(f"w{n}".encode()), cluster))
            cluster.run(3)
            self.assertEqual(applied, [])
            failing["on"] = False
            cluster.run(6)
        self.assertEqual(applied, [b"w0", b"w1", b"w2"])
        self.assertEqual(len(messages(events, "applying entry ")), 1)


def _settled(d: Deferred, cluster: Cluster) -> Deferred:
    cluster.run(0.5)
    return d


class StartupCheckTests(SynchronousTestCase):
    def test_a_directory_below_the_floor_does_not_start(self) -> None:
        """Below DataDirMinFreeMB the start-up check says so in one line naming the directory."""
        path = self.mktemp()
        with self.assertRaises(DataDirectoryUnusable) as caught:
            check_data_directory(path, 64 * MB, statvfs=FakeDisk(free=3 * MB))
        text = str(caught.exception)
        self.assertIn(path, text)
        self.assertIn("3.0 MB free", text)
        self.assertNotIn("\n", text)

    def test_a_read_only_directory_does_not_start(self) -> None:
        """A read-only file system fails the start-up check, naming the directory."""
        path = self.mktemp()
        with self.assertRaises(DataDirectoryUnusable) as caught:
            check_data_directory(path, 0, statvfs=FakeDisk(read_only=True))
        self.assertIn(path, str(caught.exception))
        self.assertIn("read-only", str(caught.exception))

    def test_a_directory_that_cannot_be_made_does_not_start(self) -> None:
        """A data directory that cannot be made or written fails the check with the OS's reason."""
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        with self.assertRaises(DataDirectoryUnusable) as caught:
            check_data_directory(os.path.join(blocker, "data"), 0)
        self.assertIn("cannot be written", str(caught.exception))

    def test_a_writable_directory_passes_and_keeps_no_probe(self) -> None:
        """A writable directory with room passes; the probe file is gone afterwards."""
        path = self.mktemp()
        check_data_directory(path, 0)
        self.assertEqual(os.listdir(path), [])
