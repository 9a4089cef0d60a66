"""
The C{propose(command)} seam over Raft: the same interface as the
single-node L{scheduler0.store.local.LocalProposer}, so the API and the
scheduler do not know which one they talk to.

A command is encoded once by the proposer, replicated as one log entry, and
applied by every node to its own SQLite state machine in log order, with the
log index as the applied index (stored in the same transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from scheduler0.raft.core import LEADER
from scheduler0.raft.driver import RaftDriver
from scheduler0.raft.messages import Entry
from scheduler0.store.apply import entry_version_after
from scheduler0.store.commands import Command, Op, Result, Subscriber, Subscribers
from scheduler0.versions import (
    FIRST_ENTRY_VERSION,
    EntryVersionTooLow,
    UnsupportedVersion,
    at_entry,
)

log = Logger()


@attrs.define(eq=False)
class RaftProposer:
    """Replicate commands through a L{RaftDriver} and apply them to C{state}."""

    state: Any
    # Set once the node has wired the driver (it needs this proposer's hooks).
    driver: RaftDriver | None = None
    #: The log index of the entry being applied (subscribers may read it).
    applying_index: int = 0
    #: Told when an apply fails for want of disk (scheduler0.diskspace).
    disk: Any = None
    #: Called once with the reason when this node meets an entry or a
    #: snapshot it does not understand: the node stops (it never applies it).
    halt: Callable[[UnsupportedVersion], None] | None = None
    #: The entry version the cluster writes, as the state applied here says
    #: (read at start, followed through set_entry_version and snapshots).
    entry_version: int = FIRST_ENTRY_VERSION
    #: Why this node stopped applying (None: it did not).
    halted: str | None = None
    _subscribers: Subscribers = attrs.field(factory=Subscribers)

    @property
    def is_leader(self) -> bool:
        return self.driver is not None and self.driver.core.role == LEADER

    @property
    def applied_index(self) -> int:
        return self.driver.applied_index if self.driver is not None else 0

    def propose(self, command: Command) -> Deferred[Any]:
        """
        Commit C{command} through Raft; fire with its result once applied on
        this node. A command of a newer entry version than the cluster writes
        (as applied here) fails with L{EntryVersionTooLow}: a member may not
        read it (the API checks first; this is the leader's own check).
        """
        assert self.driver is not None
        if command.version > self.entry_version and command.op != Op.SET_ENTRY_VERSION:
            return fail(EntryVersionTooLow(command.op, command.version, self.entry_version))
        return self.driver.propose(command.to_bytes(), command.request_id or "")

    def read_barrier(self) -> Deferred[int]:
        """Fire once a local read would see every write acknowledged before it."""
        assert self.driver is not None
        return self.driver.read_barrier()

    def subscribe(self, fn: Subscriber, ops: Collection[str] | None = None) -> None:
        """
        Call C{fn(command, result)} after each apply of one of C{ops} (None:
        of every command); its exceptions are logged.
        """
        self._subscribers.add(fn, ops)

    async def apply_entry(self, entry: Entry) -> Result:
        """
        The driver's apply hook: one committed entry into the state machine.
        An entry of a newer release (L{UnsupportedVersion}: its version, or
        an op this release has no handler for) is not applied: the node
        halts, and the driver applies nothing after it.
        """
        try:
            command = Command.from_bytes(entry.data)
            result: Result = await self.state.apply(entry.index, command)
        except UnsupportedVersion as e:
            raise self._halt(at_entry(entry.index, e)) from None
        except Exception as e:
            # The driver applies the entry again; the disk watcher refuses
            # new writes meanwhile when the disk was the cause.
            if self.disk is not None:
                self.disk.note_failure(e)
            raise
        if result.duplicate:
            # Already applied before a restart: nothing changed now.
            return result
        self.applying_index = entry.index
        raised = entry_version_after(command, result)
        if raised is not None:
            self.entry_version = raised
        self._subscribers.tell(command, result)
        return result

    def _halt(self, error: UnsupportedVersion) -> UnsupportedVersion:
        """Stop this node for C{error} (once); C{error} is raised on."""
        if self.halted is None:
            self.halted = str(error)
            if self.halt is not None:
                self.halt(error)
            else:
                log.critical("{reason}", reason=str(error))
        return error

    def apply_hook(self, entry: Entry) -> Deferred:
        return Deferred.fromCoroutine(self.apply_entry(entry))

    def snapshot_hook(self) -> Deferred:
        """The driver's snapshot hook: the state machine as bytes."""
        return self.state.snapshot()

    async def restore_entry(self, image: bytes) -> None:
        try:
            await self.state.restore(image)
        except UnsupportedVersion as e:
            raise self._halt(UnsupportedVersion(f"a snapshot from the leader: {e}")) from None
        self.entry_version = await self.state.entry_version()
        # Everything may have changed: observers must reload what they hold.
        self._subscribers.tell(Command(Op.STATE_RESTORED, {}), Result.success(None))

    def restore_hook(self, image: bytes) -> Deferred:
        """The driver's restore hook: replace the state machine with a leader's snapshot."""
        return Deferred.fromCoroutine(self.restore_entry(image))
