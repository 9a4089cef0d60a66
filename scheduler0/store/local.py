"""
The single-node proposer: append to the local log, then apply to the state,
strictly in order. A replicated proposer replaces it behind the same seam.
"""

from __future__ import annotations

from collections.abc import Collection

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from scheduler0.errors import StoreUnavailable
from scheduler0.store.commands import Command, Result, Subscriber, Subscribers
from scheduler0.store.log import CommandLog
from scheduler0.store.state import StateStore

_logger = Logger()


@attrs.define(eq=False)
class LocalProposer:
    """
    Commit commands through a local L{CommandLog} into a L{StateStore}.

    Proposals that arrive while an append is in flight wait and go together in
    the next append transaction (group commit), so one fsync serves many writes.
    """

    log: CommandLog
    state: StateStore
    clock: IReactorTime
    compact_every: int = 10000
    # ... or once this many bytes were appended since the last compaction.
    compact_bytes: int = 64 * 1024 * 1024
    is_leader: bool = True
    leader_address: str | None = None
    append_count: int = attrs.field(default=0, init=False)
    applied_index: int = attrs.field(default=0, init=False)
    _pending: list = attrs.field(factory=list, init=False)
    _subscribers: Subscribers = attrs.field(factory=Subscribers, init=False)
    _draining: Deferred | None = attrs.field(default=None, init=False)
    _running: bool = attrs.field(default=False, init=False)
    _stopped: bool = attrs.field(default=False, init=False)
    _broken: BaseException | None = attrs.field(default=None, init=False)
    _compacted_through: int = attrs.field(default=0, init=False)
    _compacted_at_bytes: int = attrs.field(default=0, init=False)

    def start(self) -> Deferred:
        """Apply log entries the state has not seen (a crash between append and apply)."""
        return Deferred.fromCoroutine(self._replay())

    async def _replay(self) -> None:
        applied = await self.state.applied_index()
        last = await self.log.last_index()
        if last < applied:
            _logger.warn(
                "command log ends at {last} but state applied {applied}; advancing the log",
                last=last,
                applied=applied,
            )
            await self.log.advance_to(applied)
        replayed = 0
        while True:
            entries = await self.log.entries_after(applied)
            if not entries:
                break
            for index, command in entries:
                result = await self.state.apply(index, command)
                if not result.duplicate:
                    self._notify(command, result)
                applied = index
                replayed += 1
        if replayed:
            _logger.info("replayed {count} command(s) from the log", count=replayed)
        self._compacted_through = applied
        self.applied_index = applied

    def propose(self, command: Command) -> Deferred:
        """Commit C{command}; fire with its L{Result} once applied."""
        if self._stopped:
            return fail(StoreUnavailable("the store is stopping"))
        if self._broken is not None:
            return fail(StoreUnavailable(f"the store failed: {self._broken}"))
        waiting: Deferred = Deferred()
        self._pending.append((command, waiting))
        if not self._running:
            self._running = True
            draining = Deferred.fromCoroutine(self._drain())
            if self._running:  # still going: an append or apply is in flight
                self._draining = draining
        return waiting

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._commit(batch)
        finally:
            self._running = False
            self._draining = None

    async def _commit(self, batch: list[tuple[Command, Deferred]]) -> None:
        if self._broken is not None:
            for _, waiting in batch:
                waiting.errback(StoreUnavailable(f"the store failed: {self._broken}"))
            return
        self.append_count += 1
        try:
            indexes = await self.log.append([command for command, _ in batch])
        except Exception as e:
            _logger.failure("appending {count} command(s) failed", Failure(), count=len(batch))
            for _, waiting in batch:
                waiting.errback(StoreUnavailable(f"could not append to the command log: {e}"))
            return
        for position, (index, (command, waiting)) in enumerate(zip(indexes, batch, strict=True)):
            try:
                result = await self.state.apply(index, command)
            except Exception as e:
                # The log holds commands the state could not take; stop taking
                # more so nothing is applied out of order. A restart replays.
                self._broken = e
                _logger.failure("applying command {index} failed", Failure(), index=index)
                waiting.errback(StoreUnavailable(f"could not apply command {index}: {e}"))
                for _, later in batch[position + 1 :]:
                    later.errback(StoreUnavailable(f"the store failed: {e}"))
                return
            self.applied_index = index
            if not result.duplicate:
                self._notify(command, result)
            waiting.callback(result)
        await self._maybe_compact(indexes[-1])

    async def _maybe_compact(self, applied: int) -> None:
        if self.compact_every <= 0:
            return
        appended = getattr(self.log, "appended_bytes", 0)
        if (
            applied - self._compacted_through < self.compact_every
            and appended - self._compacted_at_bytes < self.compact_bytes
        ):
            return
        try:
            # The state file may not sync its commits (it is replayable from
            # this log): make them durable before the log forgets them.
            await self.state.make_durable()
            await self.log.truncate_before(applied + 1)
            self._compacted_through = applied
            self._compacted_at_bytes = appended
        except Exception:
            _logger.failure("compacting the command log failed")

    def _notify(self, command: Command, result: Result) -> None:
        self._subscribers.tell(command, result)

    def subscribe(self, fn: Subscriber, ops: Collection[str] | None = None) -> None:
        """
        Call C{fn(command, result)} after each apply of one of C{ops} (None:
        of every command); its exceptions are logged.
        """
        self._subscribers.add(fn, ops)

    def stop(self) -> Deferred:
        """Refuse new proposals and fire once in-flight ones are done."""
        self._stopped = True
        return Deferred.fromCoroutine(self._wait_idle())

    async def _wait_idle(self) -> None:
        while self._draining is not None:
            draining = self._draining
            try:
                await draining
            except Exception:
                pass
