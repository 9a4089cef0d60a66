"""
Drive the pure Raft core (L{scheduler0.raft.core.RaftNode}) from Twisted.

The driver owns the core's only loop: it ticks it on a timer, feeds it peer
messages, and performs each C{Ready} strictly in the order the core demands:
persist (in a worker thread, one transaction and one fsync per batch), then
send. Batches never overlap, so an effect is never performed before the
durable state it depends on. Committed entries go to the state machine's own
loop, which applies them one by one in log order and then answers the
proposals and reads they settle: a slow state machine (a commit of thousands
of execution records) delays answers, never the acknowledgements, heartbeats
and elections of the Raft loop.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from scheduler0.errors import NotLeader, ProposalTimeout, StoreUnavailable
from scheduler0.raft import codec
from scheduler0.raft.core import (
    LEADER,
    ProposalResult,
    RaftNode,
    ReadResult,
    Ready,
    SnapshotImage,
)
from scheduler0.raft.messages import (
    NORMAL,
    AppendEntries,
    Entry,
    Heartbeat,
    InstallSnapshot,
    Message,
    TimeoutNow,
)
from scheduler0.raft.storage import RaftStorage
from scheduler0.versions import UnsupportedVersion

log = Logger()

# Messages only a leader sends; they never depend on the sender's own
# unsynced state.
_LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)

# Apply results kept for this node's proposals until they are answered (each
# is answered in the state machine loop right after its batch); a bound all
# the same.
_RESULTS_KEPT = 100_000
# A write's apply timeout grows by one second per this many bytes of it.
_BYTES_PER_EXTRA_SECOND = 1 << 20


def _inline(fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """Run C{fn} now, on this thread (tests, and storage that never blocks)."""
    try:
        return succeed(fn(*args))
    except Exception:
        return fail(Failure())


_T = TypeVar("_T")


def _cancel_then(result: _T, timer: IDelayedCall) -> _T:
    """Cancel C{timer} if it is still pending, and pass C{result} on."""
    if timer.active():
        timer.cancel()
    return result


def _discard_then(result: _T, tokens: set[int], token: int) -> _T:
    """Forget C{token}, and pass C{result} on."""
    tokens.discard(token)
    return result


async def _settle(value: Any) -> Any:
    if isinstance(value, Deferred) or inspect.isawaitable(value):
        return await value
    return value


class ProposalFailed(StoreUnavailable):
    """The core gave up on a proposal (leadership lost before it committed)."""


@attrs.define(eq=False)
class RaftDriver:
    """
    Run one Raft core: C{propose} and C{read_barrier} are the seam the store
    and the API use; C{receive} takes peer messages from the transport.

    C{apply(entry)} applies one committed normal entry to the state machine
    and returns (or fires with) the result the proposer gets back.
    C{run_blocking(fn, *args)} runs storage writes (a thread pool on a real
    node).
    """

    clock: IReactorTime
    core: RaftNode
    storage: RaftStorage
    send: Callable[[str, bytes], None]
    apply: Callable[[Entry], Any]
    restore: Callable[[bytes], Any] = lambda data: None
    # Captures the state machine (at applied_index) when the core asks for
    # a snapshot; None leaves the log uncompacted.
    snapshot: Callable[[], Any] | None = None
    run_blocking: Callable[..., Deferred[Any]] = _inline
    tick_s: float = 0.05
    # RaftApplyTimeout: a write or read not settled by then fails with
    # ProposalTimeout (the API answers 503); 0 waits for ever.
    apply_timeout_s: float = 2.0
    applied_index: int = 0
    _waiters: dict[int, Deferred[Any]] = attrs.field(factory=dict)
    _reads: list[tuple[int, Deferred[int]]] = attrs.field(factory=list)
    _results: OrderedDict[int, Any] = attrs.field(factory=OrderedDict)
    _applied_waiters: list[tuple[int, Deferred[int]]] = attrs.field(factory=list)
    _loop: LoopingCall | None = None
    _processing: bool = False
    _stopped: bool = False
    _idle: Deferred[None] | None = None
    # A snapshot being captured, and one captured that the loop must still
    # hand to the core and make durable: (applied index, image).
    _capturing: bool = False
    _captured: tuple[int, SnapshotImage] | None = None
    # The state machine's work, in log order, done by its own loop so that
    # persisting, acknowledging and replicating never wait for it:
    # ("restore", (meta, image)) | ("entry", (entry, result awaited here))
    # | ("answer", write results) | ("capture", None).
    _to_apply: deque = attrs.field(factory=deque)
    _applying: bool = False
    # A state machine that failed to apply an entry is asked again after a
    # pause that doubles per failure (up to apply_retry_max_s): the entry
    # stays first in _to_apply, so nothing after it is applied before it.
    apply_retry_initial_s: float = 0.1
    apply_retry_max_s: float = 5.0
    _apply_retry: IDelayedCall | None = None
    _apply_delay: float = 0.0
    _apply_failures: int = 0
    _loop_failures: int = 0
    #: The state machine met an entry or snapshot of a newer release
    #: (L{UnsupportedVersion} from the hooks): nothing more is applied.
    halted: bool = False
    # Read tokens answered once confirmed, without waiting for the state machine.
    _confirm_only: set[int] = attrs.field(factory=set)
    dropped_messages: int = 0

    @property
    def kept_results(self) -> int:
        """How many apply results wait for their proposal to be answered."""
        return len(self._results)

    def start(self, applied_index: int = 0) -> None:
        """
        Start ticking. C{applied_index} is how far the state machine already
        got (it is durable on its own): committed entries up to there are not
        applied again after a restart.
        """
        core = self.core
        if applied_index > core.applied:
            # What the state machine applied was committed, even when the
            # stored commit index (written lazily) lags behind it.
            reached = min(applied_index, core.last_index)
            core.commit = max(core.commit, reached)
            core.applied = reached
        self.applied_index = self.core.applied
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.tick_s, now=False)

    def stop(self) -> Deferred[None]:
        """Stop ticking, fail what waits, and fire once the batch in progress ends."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._apply_retry is not None and self._apply_retry.active():
            self._apply_retry.cancel()
        self._apply_retry = None
        waiting = (
            list(self._waiters.values())
            + [d for _, d in self._reads]
            + [d for _, d in self._applied_waiters]
        )
        self._waiters.clear()
        self._reads.clear()
        self._applied_waiters.clear()
        for d in waiting:
            d.errback(StoreUnavailable("the node is stopping"))
        if not self._processing and not self._applying:
            return succeed(None)
        self._idle = Deferred()
        return self._idle

    def _fire_idle(self) -> None:
        if self._idle is not None and not self._processing and not self._applying:
            idle, self._idle = self._idle, None
            idle.callback(None)

    # -- inputs ----------------------------------------------------------------

    def _tick(self) -> None:
        self.core.tick()
        self._kick()

    def receive(self, payload: bytes) -> None:
        """One framed message from a peer (malformed ones are dropped)."""
        try:
            message = codec.decode(payload)
        except codec.DecodeError:
            self.dropped_messages += 1
            log.warn("dropped a malformed Raft message")
            return
        self.core.step(message)
        self._kick()

    def propose(self, data: bytes, request_id: str = "") -> Deferred[Any]:
        """Replicate C{data}; fire with the state machine's result once applied here."""
        if self._stopped:
            return fail(StoreUnavailable("the node is stopping"))
        token = self.core.propose(data, request_id)
        if token is None:
            return fail(NotLeader(f"not the leader (leader: {self.core.leader_id or 'none'})"))
        waiter = self._wait(token, "the write", len(data))
        self._kick()
        return waiter

    def _wait(self, token: int, what: str, size: int = 0) -> Deferred[Any]:
        """
        A waiter for C{token} that fails with ProposalTimeout after
        apply_timeout_s, plus a second per MiB of a write of C{size} bytes
        (a 10,000-job array is some 4 MiB to persist, send and apply).
        """
        waiter: Deferred[Any] = Deferred()
        self._waiters[token] = waiter
        if self.apply_timeout_s:
            allowed = self.apply_timeout_s + size / _BYTES_PER_EXTRA_SECOND

            def expire() -> None:
                if self._waiters.pop(token, None) is waiter:
                    waiter.errback(
                        ProposalTimeout(f"{what} was not applied within {allowed:.3g} s")
                    )

            timer = self.clock.callLater(allowed, expire)
            waiter.addBoth(_cancel_then, timer)
        return waiter

    def read_barrier(self) -> Deferred[int]:
        """Fire once a read served from the local state machine is linearizable."""
        if self._stopped:
            return fail(StoreUnavailable("the node is stopping"))
        token = self.core.read_index()
        waiter = self._wait(token, "the read")
        self._kick()
        return waiter

    def confirm_leadership(self) -> Deferred[int]:
        """
        Fire once a heartbeat round begun now was answered by a majority
        (this node still led when it began), without waiting for the state
        machine to reach the commit index as a read does.
        """
        if self._stopped:
            return fail(StoreUnavailable("the node is stopping"))
        token = self.core.read_index()
        self._confirm_only.add(token)
        waiter = self._wait(token, "the leadership check")
        waiter.addBoth(_discard_then, self._confirm_only, token)
        self._kick()
        return waiter

    def change_membership(self, *, add_learner: str = "", remove: str = "") -> Deferred[Any]:
        """
        Add a non-voter (the core promotes it once caught up) or remove a
        member; fire once the change is committed and applied here.
        """
        if self._stopped:
            return fail(StoreUnavailable("the node is stopping"))
        token = self.core.change_membership(add_learner=add_learner, remove=remove)
        if token is None:
            if self.core.role != LEADER:
                return fail(NotLeader(f"not the leader (leader: {self.core.leader_id or 'none'})"))
            return fail(
                ProposalFailed(
                    "the membership cannot change now: it is unchanged by this request,"
                    " or an earlier change is still being committed"
                )
            )
        waiter = self._wait(token, "the membership change")
        self._kick()
        return waiter

    def wait_applied(self, index: int) -> Deferred[int]:
        """
        Fire once this node's state machine has applied C{index} (a write a
        leader committed for us, so our next read sees it); fail with
        ProposalTimeout after apply_timeout_s.
        """
        if index <= self.applied_index:
            return succeed(self.applied_index)
        if self._stopped:
            return fail(StoreUnavailable("the node is stopping"))
        waiter: Deferred[int] = Deferred()
        entry = (index, waiter)
        self._applied_waiters.append(entry)
        if self.apply_timeout_s:

            def expire() -> None:
                if entry in self._applied_waiters:
                    self._applied_waiters.remove(entry)
                    waiter.errback(
                        ProposalTimeout(
                            f"index {index} was not applied here within {self.apply_timeout_s} s"
                        )
                    )

            timer = self.clock.callLater(self.apply_timeout_s, expire)
            waiter.addBoth(_cancel_then, timer)
        return waiter

    # -- the loop ----------------------------------------------------------------

    def _kick(self) -> None:
        # A batch in progress loops until the core has nothing more ready.
        if self._processing or self._stopped:
            return
        if self._captured is None and not self.core.has_ready():
            return
        self._processing = True
        done = Deferred.fromCoroutine(self._process())
        done.addCallbacks(self._loop_worked, self._loop_failed)

    def _loop_worked(self, _: object) -> None:
        if self._loop_failures:
            log.info(
                "the Raft loop works again after {count} failed batch(es)",
                count=self._loop_failures,
            )
            self._loop_failures = 0

    def _loop_failed(self, failure: Failure) -> None:
        # The batch is ready again at the next tick (nothing was advanced):
        # one event when the trouble begins, not one per tick.
        self._loop_failures += 1
        if self._loop_failures == 1:
            log.failure("the Raft loop failed; it tries again at each tick", failure)

    async def _process(self) -> None:
        try:
            while not self._stopped:
                if self._captured is not None:
                    captured, self._captured = self._captured, None
                    await self._keep_snapshot(*captured)
                elif self.core.has_ready():
                    await self._perform(self.core.ready())
                else:
                    break
        finally:
            self._processing = False
            self._fire_idle()

    async def _perform(self, ready: Ready) -> None:
        # A leader's replication messages may go out while its own write is
        # in flight (Raft thesis 10.2.1): the core counts the leader towards
        # a majority only once its log is durable, and a follower's answer
        # depends on the follower's disk, not the leader's. Everything else
        # (votes, answers) waits for the disk.
        early = [m for m in ready.messages if isinstance(m, _LEADER_MESSAGES)]
        late = [m for m in ready.messages if not isinstance(m, _LEADER_MESSAGES)]
        self._send_all(early)
        # 1. persist: one transaction (and one fsync) for the whole batch.
        if ready.must_sync():
            await self.run_blocking(self.storage.save, ready)
        # 2. send
        self._send_all(late)
        # 3. hand the state machine its work; it runs in its own loop, so the
        # next batch (and its acknowledgements) does not wait for it.
        if ready.snapshot is not None:
            self._to_apply.append(("restore", ready.snapshot))
        # Only a result someone here waits for is kept (a follower's would
        # pile up: a create_jobs result holds every job it created).
        awaited = {r.index for r in ready.results if isinstance(r, ProposalResult) and r.ok}
        for entry in ready.committed:
            self._to_apply.append(("entry", (entry, entry.index in awaited)))
        # 4. reply: reads wait for the state machine by index; writes are
        # answered with their result, after their entry is applied.
        writes = []
        for result in ready.results:
            if isinstance(result, ReadResult):
                self._answer(result)
            else:
                writes.append(result)
        if writes:
            self._to_apply.append(("answer", writes))
        self.core.advance(ready)
        if ready.want_snapshot and self.snapshot is not None and not self._capturing:
            self._capturing = True
            self._to_apply.append(("capture", None))
        self._release_reads()
        self._start_applying()

    def _start_applying(self) -> None:
        if self._applying or not self._to_apply or self._apply_retry is not None or self.halted:
            return
        self._applying = True
        done = Deferred.fromCoroutine(self._apply_all())
        done.addErrback(lambda f: log.failure("the state machine loop failed", f))

    async def _apply_all(self) -> None:
        try:
            while self._to_apply and not self._stopped:
                kind, item = self._to_apply.popleft()
                if kind == "entry":
                    entry, awaited = item
                    if entry.kind == NORMAL:
                        try:
                            result = await _settle(self.apply(entry))
                        except UnsupportedVersion:
                            # Written by a newer release: never applied here,
                            # nor anything after it (the node halts).
                            self._to_apply.appendleft((kind, item))
                            self.halted = True
                            return
                        except Exception:
                            self._to_apply.appendleft((kind, item))
                            self._apply_failed(entry.index, Failure())
                            return
                        self._apply_succeeded(entry.index)
                        if awaited:
                            self._results[entry.index] = result
                            while len(self._results) > _RESULTS_KEPT:
                                self._results.popitem(last=False)
                    self.applied_index = entry.index
                elif kind == "restore":
                    meta, image = item
                    try:
                        await _settle(self.restore(image))
                    except UnsupportedVersion:
                        self._to_apply.appendleft((kind, item))
                        self.halted = True
                        return
                    self.applied_index = meta.index
                    log.info("installed a snapshot at index {index}", index=self.applied_index)
                elif kind == "answer":
                    for result in item:
                        self._answer(result)
                else:
                    # Everything before it is applied and nothing after it has
                    # reached the state machine: the capture sees exactly this.
                    capture = Deferred.fromCoroutine(self._capture(self.applied_index))
                    capture.addErrback(lambda f: log.failure("taking a snapshot failed", f))
                self._release_reads()
                self._release_applied()
        finally:
            self._applying = False
            if self._stopped:
                self._to_apply.clear()
            self._fire_idle()

    def _apply_failed(self, index: int, failure: Failure) -> None:
        """
        Entry C{index} could not be applied: ask again after a pause (one
        log event when the trouble begins, not one per attempt).
        """
        self._apply_failures += 1
        if self._apply_failures == 1:
            self._apply_delay = self.apply_retry_initial_s
            log.warn(
                "applying entry {index} failed ({error}); it is applied again, in order, "
                "until it takes",
                index=index,
                error=str(failure.value) or repr(failure.value),
            )
        else:
            self._apply_delay = min(self._apply_delay * 2, self.apply_retry_max_s)
        self._apply_retry = self.clock.callLater(self._apply_delay, self._retry_applying)

    def _retry_applying(self) -> None:
        self._apply_retry = None
        self._start_applying()

    def _apply_succeeded(self, index: int) -> None:
        if self._apply_failures:
            log.info(
                "applied entry {index} after {attempts} more attempt(s)",
                index=index,
                attempts=self._apply_failures,
            )
            self._apply_failures = 0

    async def _capture(self, index: int) -> None:
        """
        Capture the state machine as it is now, at C{index} (the hook sees
        exactly what was applied before it was called), while the loop goes
        on; the loop then hands the image to the core between batches.
        """
        try:
            # Only asked for when there is a hook (see _perform).
            assert self.snapshot is not None
            data = await _settle(self.snapshot())
        except BaseException:
            self._capturing = False
            self.core.snapshot_failed()
            raise
        self._captured = (index, data)
        self._kick()

    async def _keep_snapshot(self, index: int, data: SnapshotImage) -> None:
        """Let the core compact the log up to C{index}, and make the snapshot durable first."""
        try:
            meta = self.core.snapshot_done(index, data)
            if meta is not None:
                await self.run_blocking(self.storage.save_snapshot, meta, data)
                log.info("snapshot taken at index {index}", index=index)
        finally:
            self._capturing = False

    def _send_all(self, messages: Sequence[Message]) -> None:
        for message in messages:
            try:
                self.send(message.recipient, codec.encode(message))
            except Exception:
                log.failure("sending a Raft message to {to} failed", to=message.recipient)

    def _answer(self, result: ProposalResult | ReadResult) -> None:
        waiter = self._waiters.pop(result.token, None)
        value = (
            self._results.pop(result.index, None) if isinstance(result, ProposalResult) else None
        )
        if waiter is None:
            # Its writer gave up waiting (ProposalTimeout): nothing to keep.
            return
        if not result.ok:
            if "leader" in result.reason:
                waiter.errback(
                    NotLeader(f"{result.reason} (leader: {self.core.leader_id or 'none'})")
                )
            else:
                waiter.errback(ProposalFailed(result.reason))
            return
        if isinstance(result, ReadResult):
            if result.token in self._confirm_only:
                waiter.callback(result.index)
            else:
                self._reads.append((result.index, waiter))
            return
        waiter.callback(value)

    def _release_applied(self) -> None:
        if not self._applied_waiters:
            return
        ready = [(i, d) for i, d in self._applied_waiters if i <= self.applied_index]
        if not ready:
            return
        self._applied_waiters = [(i, d) for i, d in self._applied_waiters if i > self.applied_index]
        for _, waiter in ready:
            waiter.callback(self.applied_index)

    def _release_reads(self) -> None:
        """Fire the reads whose index the state machine has reached."""
        if not self._reads:
            return
        still = []
        for index, waiter in self._reads:
            if index <= self.applied_index:
                waiter.callback(index)
            else:
                still.append((index, waiter))
        self._reads = still
