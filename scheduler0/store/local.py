"""
The single-node proposer: append to the local log, then apply to the state,
strictly in order. A replicated proposer replaces it behind the same seam.

A write the data directory cannot store is refused before it is appended
(L{scheduler0.errors.WritesRefused}); a command appended whose apply then
fails stays in the log and is applied again, with growing pauses on the
clock, until it takes: nothing is half-applied and writes resume by
themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from scheduler0.diskspace import DiskWatcher
from scheduler0.errors import StoreUnavailable
from scheduler0.store.apply import entry_version_after
from scheduler0.store.commands import Command, Op, Result, Subscriber, Subscribers
from scheduler0.store.log import CommandLog
from scheduler0.store.state import StateStore
from scheduler0.versions import ENTRY_VERSION, FIRST_ENTRY_VERSION, UnsupportedVersion, at_entry

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
    #: Says whether the data directory can store writes now (None: always).
    disk: DiskWatcher | None = None
    #: Waits between attempts to apply a command the state could not take.
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0
    #: The index of a command in the log the state could not take yet.
    _stalled: int | None = attrs.field(default=None, init=False)
    _wake: Deferred | None = attrs.field(default=None, init=False)
    _wake_call: IDelayedCall | None = attrs.field(default=None, init=False)
    _compacted_through: int = attrs.field(default=0, init=False)
    _compacted_at_bytes: int = attrs.field(default=0, init=False)
    #: Called once with the reason when a command cannot be applied because
    #: a newer release wrote it (L{UnsupportedVersion}): the node stops.
    halt: Callable[[UnsupportedVersion], None] | None = None
    #: The entry version this node writes (read at start, then followed).
    entry_version: int = attrs.field(default=FIRST_ENTRY_VERSION, init=False)

    def start(self) -> Deferred:
        """
        Apply log entries the state has not seen (a crash between append and
        apply); then, alone in its cluster, raise the entry version it writes
        to this release's (a data directory of an older release is at 1).
        A log entry of a newer release fails the start (L{UnsupportedVersion}).
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await self._replay()
        self.entry_version = await self.state.entry_version()
        if self.entry_version >= ENTRY_VERSION:
            return
        was = self.entry_version
        try:
            await self.propose(
                Command(Op.SET_ENTRY_VERSION, {"version": ENTRY_VERSION}, version=ENTRY_VERSION)
            )
        except Exception as e:
            # The disk refuses writes, say: the next start tries again.
            _logger.warn(
                "could not raise the entry version to {version} ({error}); the node goes on"
                " writing version {was}",
                version=ENTRY_VERSION,
                error=str(e),
                was=was,
            )
            return
        _logger.info(
            "this node now writes entry version {version} (it was {was})",
            version=self.entry_version,
            was=was,
        )

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
                try:
                    result = await self.state.apply(index, command)
                except UnsupportedVersion as e:
                    raise at_entry(index, e, "command log entry") from None
                if not result.duplicate:
                    self._notify(command, result)
                applied = index
                replayed += 1
        if replayed:
            _logger.info("replayed {count} command(s) from the log", count=replayed)
        self._compacted_through = applied
        self.applied_index = applied

    def propose(self, command: Command) -> Deferred:
        """
        Commit C{command}; fire with its L{Result} once applied. A write the
        data directory cannot store fails with L{WritesRefused} before it
        reaches the command log.
        """
        if self._stopped:
            return fail(StoreUnavailable("the store is stopping"))
        refusal = self.disk.writes_refused() if self.disk is not None else None
        if refusal is not None:
            return fail(refusal.error())
        if self._stalled is not None:
            return fail(StoreUnavailable(self._stall_message(self._stalled)))
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
        # The batch may have waited for the one before: ask the disk again.
        refusal = self.disk.refusal if self.disk is not None else None
        if refusal is not None:
            for _, waiting in batch:
                waiting.errback(refusal.error())
            return
        self.append_count += 1
        try:
            indexes = await self.log.append([command for command, _ in batch])
        except Exception as e:
            # The append's transaction rolled back: nothing was stored.
            if self.disk is not None and self.disk.note_failure(e):
                refused = self.disk.refusal
                assert refused is not None
                for _, waiting in batch:
                    waiting.errback(refused.error())
                return
            _logger.failure("appending {count} command(s) failed", Failure(), count=len(batch))
            for _, waiting in batch:
                waiting.errback(StoreUnavailable(f"could not append to the command log: {e}"))
            return
        entries = list(zip(indexes, batch, strict=True))
        for position, (index, (command, waiting)) in enumerate(entries):
            try:
                result = await self.state.apply(index, command)
            except UnsupportedVersion as e:
                # Not applied (nor anything after it): the node stops.
                self._halt(at_entry(index, e, "command log entry"), entries[position:])
                return
            except Exception as e:
                # The command is in the log; it is applied again (in order,
                # before anything newer) once the state can take it.
                self._stall(index, e)
                for _, (_, later) in entries[position:]:
                    later.errback(StoreUnavailable(self._stall_message(index)))
                retried = await self._apply_again(index, command)
                if retried is None:
                    return  # stopping: a restart replays the log
                result = retried
            self.applied_index = index
            if not result.duplicate:
                self._notify(command, result)
            if not waiting.called:
                waiting.callback(result)
        await self._maybe_compact(indexes[-1])

    def _halt(self, error: UnsupportedVersion, waiting: list) -> None:
        """Stop for C{error}: refuse what waits and everything after."""
        self._stopped = True
        for _, (_, later) in waiting:
            later.errback(StoreUnavailable(str(error)))
        if self.halt is not None:
            self.halt(error)
        else:
            _logger.critical("{reason}", reason=str(error))

    def _stall(self, index: int, error: BaseException) -> None:
        """Log once that command C{index} could not be applied, and why."""
        self._stalled = index
        if self.disk is not None and self.disk.note_failure(error):
            _logger.warn(
                "applying command {index} failed ({error}); it stays in the command log and "
                "is applied again when the disk allows",
                index=index,
                error=str(error),
            )
        else:
            _logger.failure(
                "applying command {index} failed; it stays in the command log and is applied again",
                Failure(error),
                index=index,
            )

    def _stall_message(self, index: int) -> str:
        why = self.disk.refusal if self.disk is not None else None
        cause = f" ({why.message})" if why is not None else ""
        return (
            f"command {index} is in the command log but could not be applied yet{cause}; "
            "it is applied as soon as the disk allows: retry with the same Idempotency-Key "
            "header to have this write applied at most once"
        )

    async def _apply_again(self, index: int, command: Command) -> Result | None:
        """
        Apply command C{index} until it takes, waiting longer after each
        failure (up to C{retry_max_s}) on the clock; None once stopping.
        """
        delay = self.retry_initial_s
        attempts = 0
        while not self._stopped:
            await self._pause(delay)
            if self._stopped:
                break
            attempts += 1
            try:
                result = await self.state.apply(index, command)
            except Exception as e:
                if self.disk is not None:
                    self.disk.note_failure(e)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self._stalled = None
            _logger.info(
                "applied command {index} after {attempts} more attempt(s); writes resume",
                index=index,
                attempts=attempts,
            )
            return result
        return None

    def _pause(self, delay: float) -> Deferred:
        """Fire after C{delay} seconds on the clock, or at once when stopping."""
        woken: Deferred = Deferred()
        self._wake = woken
        self._wake_call = self.clock.callLater(delay, woken.callback, None)
        return woken

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
        except Exception as e:
            if self.disk is None or not self.disk.note_failure(e):
                _logger.failure("compacting the command log failed")

    def _notify(self, command: Command, result: Result) -> None:
        raised = entry_version_after(command, result)
        if raised is not None:
            self.entry_version = raised
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
        if self._wake_call is not None and self._wake_call.active():
            self._wake_call.cancel()
            assert self._wake is not None
            self._wake.callback(None)
        return Deferred.fromCoroutine(self._wait_idle())

    async def _wait_idle(self) -> None:
        while self._draining is not None:
            draining = self._draining
            try:
                await draining
            except Exception:
                pass
