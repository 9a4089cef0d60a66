"""
Can this node store writes now? The data directory's free space against a
floor (C{DataDirMinFreeMB}, like etcd's space quota alarm: writes are
refused before the disk is actually full), and what SQLite said when a
write failed (a full or read-only disk).

L{DiskWatcher} samples C{statvfs} of the data directory on a timer driven
by the reactor's clock (and again whenever a write asks), keeps whether
writes are refused and why, and logs one event per change of that state.
The proposers ask it before they append a command (L{WritesRefused}, which
the API answers with 507) and tell it what failed.
L{check_data_directory} is the same judgement once, at start-up, plus a
probe write: a node whose disk cannot take its records does not start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from scheduler0.errors import WritesRefused

log = Logger()

_MB = 1024 * 1024

#: Seconds between two samples of the data directory's free space.
CHECK_INTERVAL_S = 1.0
#: After a write failed for want of space, writes resume only once this
#: much more is free than there was then (and the floor is met), so a disk
#: that is still full does not flap between refused and resumed per write.
RESUME_MARGIN_BYTES = 1 * _MB

#: Why writes are refused (the C{cause} of L{Refusal}).
BELOW_FLOOR = "below_floor"
DISK_FULL = "disk_full"
READ_ONLY = "read_only"
IO_ERROR = "io_error"

# statvfs's f_flag bit of a file system mounted read-only.
_ST_RDONLY = getattr(os, "ST_RDONLY", 1)
_NAMES = {
    BELOW_FLOOR: "its free space is below DataDirMinFreeMB",
    DISK_FULL: "the disk is full",
    READ_ONLY: "the file system is read-only",
    IO_ERROR: "the disk failed a write",
}


def megabytes(count: int) -> str:
    """C{count} bytes as MB with one decimal, for people."""
    return f"{count / _MB:.1f} MB"


def storage_failure(error: BaseException) -> str | None:
    """
    The cause (L{DISK_FULL}, L{READ_ONLY}, L{IO_ERROR}) when C{error} is a
    write the disk could not take; None for any other error.
    """
    if isinstance(error, OSError):
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return DISK_FULL
        if error.errno == errno.EROFS:
            return READ_ONLY
        if error.errno == errno.EIO:
            return IO_ERROR
        return None
    if isinstance(error, sqlite3.Error):
        text = str(error).lower()
        if "database or disk is full" in text:
            return DISK_FULL
        if "readonly" in text or "read-only" in text:
            return READ_ONLY
        if "disk i/o error" in text:
            return IO_ERROR
    return None


@attrs.frozen
class Refusal:
    """Why writes are refused now: the cause and the free space seen then."""

    cause: str
    data_dir: str
    free_bytes: int
    floor_bytes: int

    @property
    def message(self) -> str:
        """One sentence naming the data directory, its free space and the cause."""
        floor = f" (DataDirMinFreeMB: {megabytes(self.floor_bytes)})" if self.floor_bytes else ""
        return (
            f"the data directory {self.data_dir} cannot store writes: {_NAMES[self.cause]}; "
            f"{megabytes(self.free_bytes)} free{floor}"
        )

    def error(self) -> WritesRefused:
        """The failure a refused write gets (the API answers 507)."""
        return WritesRefused(
            f"this write was not stored and changed nothing: {self.message}",
            data_dir=self.data_dir,
            free_bytes=self.free_bytes,
            floor_bytes=self.floor_bytes,
            cause=self.cause,
        )


@attrs.define(eq=False)
class DiskWatcher:
    """
    Whether writes to the data directory C{path} are refused now, from its
    free space against C{floor_bytes} and from write failures it is told of.
    """

    clock: IReactorTime
    path: str
    floor_bytes: int
    statvfs: Callable[[str], Any] = os.statvfs
    interval_s: float = CHECK_INTERVAL_S
    _refusal: Refusal | None = attrs.field(default=None, init=False)
    #: Free bytes needed before writes resume after a failed write.
    _resume_at: int = attrs.field(default=0, init=False)
    _free: int = attrs.field(default=0, init=False)
    _read_only: bool = attrs.field(default=False, init=False)
    _loop: LoopingCall | None = attrs.field(default=None, init=False)
    _observers: list[Callable[[Refusal | None], None]] = attrs.field(factory=list, init=False)

    def start(self) -> None:
        """Sample now and then every C{interval_s} on the clock."""
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.interval_s, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def observe(self, fn: Callable[[Refusal | None], None]) -> None:
        """Call C{fn(refusal or None)} at each change between refused and resumed."""
        self._observers.append(fn)

    @property
    def free_bytes(self) -> int:
        """Free bytes in the data directory at the last sample (for non-root users)."""
        return self._free

    @property
    def refusal(self) -> Refusal | None:
        """Why writes are refused now, as of the last sample (None: they are not)."""
        return self._refusal

    def writes_refused(self) -> Refusal | None:
        """Sample the data directory now; why writes are refused (None: they are not)."""
        self.check()
        return self._refusal

    def check(self) -> None:
        """One sample of the data directory; a change of state is logged once."""
        try:
            stat = self.statvfs(self.path)
        except OSError as e:
            # The directory itself is gone or unreadable: nothing can be stored.
            self._change(Refusal(storage_failure(e) or IO_ERROR, self.path, 0, self.floor_bytes))
            return
        self._free = int(stat.f_bavail) * int(stat.f_frsize)
        self._read_only = bool(int(stat.f_flag) & _ST_RDONLY)
        self._change(self._judge())

    def note_failure(self, error: BaseException) -> bool:
        """
        A write to the data directory failed with C{error}: True (and writes
        refused until space returns) when the disk was the cause.
        """
        cause = storage_failure(error)
        if cause is None:
            return False
        try:
            stat = self.statvfs(self.path)
            self._free = int(stat.f_bavail) * int(stat.f_frsize)
        except OSError:
            pass
        self._resume_at = max(self._resume_at, self._free + RESUME_MARGIN_BYTES)
        if cause == READ_ONLY:
            self._read_only = True
        self._change(Refusal(cause, self.path, self._free, self.floor_bytes))
        return True

    def _judge(self) -> Refusal | None:
        free, floor = self._free, self.floor_bytes
        if self._read_only:
            return Refusal(READ_ONLY, self.path, free, floor)
        current = self._refusal
        if current is not None and current.cause in (DISK_FULL, IO_ERROR):
            if free < self._resume_at or free < floor:
                return attrs.evolve(current, free_bytes=free)
        if free < floor:
            return Refusal(BELOW_FLOOR, self.path, free, floor)
        return None

    def _change(self, refusal: Refusal | None) -> None:
        before = self._refusal
        self._refusal = refusal
        if (before is None) == (refusal is None):
            return
        if refusal is not None:
            log.warn("writes refused: {message}", message=refusal.message)
        else:
            self._resume_at = 0
            log.info(
                "writes resumed: the data directory {path} has {free} free",
                path=self.path,
                free=megabytes(self._free),
            )
        for fn in self._observers:
            fn(refusal)


class DataDirectoryUnusable(Exception):
    """The data directory cannot take this node's records: it must not start."""


def check_data_directory(
    path: str, floor_bytes: int, statvfs: Callable[[str], Any] = os.statvfs
) -> None:
    """
    Raise L{DataDirectoryUnusable} (one line naming C{path} and the cause)
    unless the directory exists or can be made, has at least C{floor_bytes}
    free, and takes a probe write synced to disk. Run at start-up, before
    the node loads or sends anything.
    """
    probe = os.path.join(path, ".write-probe")
    try:
        os.makedirs(path, exist_ok=True)
        stat = statvfs(path)
        free = int(stat.f_bavail) * int(stat.f_frsize)
        if int(stat.f_flag) & _ST_RDONLY:
            raise DataDirectoryUnusable(
                f"the data directory {path} is on a read-only file system; "
                "this node cannot record what it does, so it does not start"
            )
        if free < floor_bytes:
            raise DataDirectoryUnusable(
                f"the data directory {path} has {megabytes(free)} free, below DataDirMinFreeMB "
                f"({megabytes(floor_bytes)}); free some space (or lower DataDirMinFreeMB) "
                "and start again"
            )
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        raise DataDirectoryUnusable(
            f"the data directory {path} cannot be written ({e.strerror or e}); "
            "this node cannot record what it does, so it does not start"
        ) from None
