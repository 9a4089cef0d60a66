"""
What only the leader does, on timers: keep the member list, give every job
an owner (evenly by count, only to nodes holding a lease, moving a job off a
node only once that node's lease has surely lapsed), and commit how far
each node got with its jobs (the progress fan-in).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from scheduler0.cluster.peer import PeerUnavailable, member_versions
from scheduler0.errors import StoreUnavailable
from scheduler0.store.commands import Command, Op, Result
from scheduler0.timeutil import format_instant, utc_from_timestamp
from scheduler0.versions import ENTRY_VERSION

if TYPE_CHECKING:
    from scheduler0.cluster.node import ClusterNode
    from scheduler0.config import Config
    from scheduler0.store.state import StateStore

log = Logger()

REBALANCE_INTERVAL_S = 0.1
# A round that sees nothing changed does the full work this often anyway.
FULL_ROUND_S = 5.0
# A new leader places jobs only once members had time to renew with it.
FIRST_ROUND_S = 0.15
# A round that comes this much later than its interval follows a stall of
# the leader itself (its reactor busy, its process descheduled): renewals and
# Raft answers that arrived meanwhile are still unread, so it judges nobody.
STALL_S = 0.25
# Jobs moved by one assign_jobs command (a command is one Raft entry).
MOVE_BATCH = 5000
# How often the leader looks at the entry version the cluster writes, and
# while it is older than this release's (a rolling upgrade) asks every member
# which one it reads.
ENTRY_VERSION_POLL_S = 1.0


PLACEMENT_CHANGES = frozenset(
    (
        Op.CREATE_JOBS,
        Op.ASSIGN_JOBS,
        Op.DELETE_JOB,
        Op.DELETE_PROJECT,
        Op.SET_MEMBERS,
        Op.REMOVE_MEMBER,
        Op.SET_ELIGIBLE,
        Op.STATE_RESTORED,
    )
)


def plan_moves(
    counts: dict[Any, int], targets: list[int], sources: dict[Any, list[str]], limit: int
) -> list[tuple[str, int]]:
    """
    Give each job in C{sources} (owner -> jobs to move off it) to the target
    with the fewest jobs (ties: lowest id), counting as it goes; at most
    C{limit} moves.
    """
    if not targets:
        return []
    heap = [(counts.get(t, 0), t) for t in sorted(targets)]
    heapq.heapify(heap)
    moves: list[tuple[str, int]] = []
    for _, jobs in sorted(sources.items(), key=lambda kv: str(kv[0])):
        for job_uuid in jobs:
            if len(moves) >= limit:
                return moves
            count, target = heapq.heappop(heap)
            moves.append((job_uuid, target))
            heapq.heappush(heap, (count + 1, target))
    return moves


@attrs.define(eq=False)
class LeaderDuties:
    """The leader's loops; they do nothing on a follower."""

    node: ClusterNode
    state: StateStore
    config: Config
    clock: IReactorTime
    _loops: list[LoopingCall] = attrs.field(factory=list)
    _fanin_next: int = 0
    # node_id -> the last progress mark committed from it by this leader.
    _reported: dict[int, tuple] = attrs.field(factory=dict)
    _busy: set[str] = attrs.field(factory=set)
    _dirty: bool = True
    _last_signature: Any = None
    _last_full: float = float("-inf")
    _last_round: float = float("-inf")
    #: Rounds skipped because the leader itself had stalled.
    stalled_rounds: int = 0
    #: Since when (clock seconds) the duties' writes fail (None: they do not),
    #: and the rounds that could not write since then.
    _paused_since: float | None = None
    _paused_rounds: int = 0
    #: Rounds whose writes failed, and the times writes stopped and resumed.
    failed_rounds: int = 0
    pauses: int = 0

    def on_applied(self, command: Command, result: Result) -> None:
        """Jobs or members changed: the next rebalance round looks again."""
        if command.op in PLACEMENT_CHANGES:
            self._dirty = True

    def start(self) -> None:
        for interval, fn in (
            (REBALANCE_INTERVAL_S, self.rebalance),
            (self.config.execution_log_fetch_interval_seconds, self.fan_in),
            (ENTRY_VERSION_POLL_S, self.raise_entry_version),
        ):
            loop = LoopingCall(self._once, fn)
            loop.clock = self.clock
            loop.start(interval, now=False)
            self._loops.append(loop)

    def stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []

    def _once(self, fn: Any) -> None:
        """Run C{fn} unless its previous run is still going; log its failures."""
        name = fn.__name__
        if name in self._busy or not self.node.is_leader:
            return
        self._busy.add(name)
        d = Deferred.fromCoroutine(fn())

        def done(result: Any) -> None:
            self._busy.discard(name)

        def failed(failure: Any) -> None:
            if failure.check(StoreUnavailable):
                self._paused(name, str(failure.value))
            else:
                log.failure("{name} failed", failure, name=name)

        d.addErrback(failed)
        d.addBoth(done)

    @property
    def paused(self) -> bool:
        """Whether the duties' writes fail now (refused, no quorum): they retry each round."""
        return self._paused_since is not None

    def _paused(self, name: str, error: str) -> None:
        """
        A round of C{name} could not write: said once, when the duties'
        writes begin to fail, not once per round (the rounds go on trying).
        """
        self.failed_rounds += 1
        self._paused_rounds += 1
        if self._paused_since is not None:
            return
        self._paused_since = self.clock.seconds()
        self.pauses += 1
        log.info(
            "{name} paused: {error}; the leader's duties try again each round",
            name=name,
            error=error,
            event="leader_duties_paused",
        )

    def _resumed(self, result: Any) -> Any:
        """A write of the duties was committed: if they were paused, said once."""
        since = self._paused_since
        if since is not None:
            self._paused_since = None
            log.info(
                "leader duties resumed after {seconds:.1f} s ({rounds} rounds could not write)",
                seconds=self.clock.seconds() - since,
                rounds=self._paused_rounds,
                event="leader_duties_resumed",
            )
            self._paused_rounds = 0
        return result

    def _propose(self, op: str, args: dict) -> Deferred:
        return self.node.propose(Command(op, args)).addCallback(self._resumed)

    def _now(self) -> str:
        return format_instant(utc_from_timestamp(self.clock.seconds()))

    # -- ownership ------------------------------------------------------------

    async def rebalance(self) -> None:
        """One round: register members, then place unowned, orphaned and excess jobs."""
        node = self.node
        view = node.live_nodes()
        if view is None:
            return
        live, gone = view
        now = self.clock.seconds()
        # (A last round from before this node's current tenure says nothing.)
        late = now - self._last_round - REBALANCE_INTERVAL_S
        self._last_round = now
        if STALL_S < late and late + REBALANCE_INTERVAL_S < node.tenure():
            # Whatever this node has not read yet would make live nodes look
            # silent; the next round, after the reactor read it, judges.
            self.stalled_rounds += 1
            log.info("rebalance round {late:.2f} s late: judging nobody this round", late=late)
            return
        if node.tenure() < FIRST_ROUND_S:
            # Let the members renew their leases with this new leader first,
            # so jobs are not all piled on the few that already did.
            return
        members = node.member_ids()
        signature = (tuple(sorted(live.items())), tuple(sorted(members)), gone(-1))
        if (
            not self._dirty
            and signature == self._last_signature
            and now - self._last_full < FULL_ROUND_S
        ):
            return
        self._dirty = False
        self._last_signature = signature
        self._last_full = now
        stored = {m["node_id"]: m for m in await self.state.members()}
        missing = [
            {
                "node_id": m,
                "address": node.address_of(m) or "",
                "raft_address": node.raft_address_of(m) or "",
            }
            for m in sorted(members)
            if m not in stored
        ]
        if missing:
            await self._propose(Op.SET_MEMBERS, {"members": missing})
        eligible = {m for m, row in stored.items() if row.get("eligible", True)}
        eligible |= {m["node_id"] for m in missing}
        healthy = sorted(m for m, paused in live.items() if not paused and m in members & eligible)
        if not healthy:
            return
        counts = await self.state.owner_counts()
        # Nobody owns them, or their owner surely holds no lease (gone,
        # removed): the new owner catches up from committed progress.
        orphans: dict[Any, list[str]] = {}
        budget = MOVE_BATCH
        for owner in sorted(counts, key=str):
            if budget <= 0:
                break
            if counts[owner] and (owner not in members or gone(owner)):
                if owner is not None and owner in live:
                    continue
                jobs = await self._jobs_of(owner, budget)
                if jobs:
                    orphans[owner] = jobs
                    budget -= len(jobs)
        moves = plan_moves(counts, healthy, orphans, MOVE_BATCH)
        if moves:
            self._dirty = True
            gone_owners = {owner for owner in orphans if owner is not None}
            skewed = sorted(gone_owners & node.skewed_nodes)
            if skewed:
                # Alive, but their clocks are out of bounds, so they stopped
                # firing: how far they got is asked first, so the new owners
                # continue exactly there (nothing sent twice).
                await self._record_progress(skewed)
            # Until the move is applied (and so part of what a lease must
            # have applied), a gone owner that comes back gets no lease.
            node.moving_off.update(gone_owners)
            try:
                await self._move(moves, None)
            finally:
                node.moving_off.difference_update(gone_owners)
            return
        # Alive but paused or not eligible, or simply more than its share:
        # handed over at an instant one lease from now, so the old owner
        # stops exactly where the new one starts.
        leaving: dict[Any, list[str]] = {}
        for owner, count in counts.items():
            if owner is not None and owner in live and owner not in healthy and count:
                leaving[owner] = await self._jobs_of(owner, MOVE_BATCH)
        if not leaving and not any(
            owner is not None and owner not in live and count for owner, count in counts.items()
        ):
            total = sum(counts.get(m, 0) for m in healthy)
            share, extra = divmod(total, len(healthy))
            # The nodes with the most jobs keep the extra ones.
            ranked = sorted(healthy, key=lambda m: (-counts.get(m, 0), m))
            quota = {m: share + (1 if i < extra else 0) for i, m in enumerate(ranked)}
            for m in healthy:
                excess = counts.get(m, 0) - quota[m]
                if excess > 0:
                    leaving[m] = await self._jobs_of(m, min(excess, MOVE_BATCH))
        if leaving:
            self._dirty = True
            moves = plan_moves(counts, healthy, leaving, MOVE_BATCH)
            handover = utc_from_timestamp(self.clock.seconds() + node.lease_s)
            await self._move(moves, format_instant(handover))

    async def _jobs_of(self, owner: Any, limit: int) -> list[str]:
        if limit <= 0:
            return []
        return list(await self.state.jobs_owned_by(owner, None, limit))

    async def _move(self, moves: list[tuple[str, int]], handover_at: str | None) -> None:
        if not moves:
            return
        await self._propose(
            Op.ASSIGN_JOBS,
            {"moves": [[job_uuid, owner] for job_uuid, owner in moves], "handover_at": handover_at},
        )
        log.info(
            "moved {count} jobs ({how})",
            count=len(moves),
            how=(
                f"handed over at {handover_at}"
                if handover_at
                else "they had no owner, or their owner is gone"
            ),
        )

    # -- progress fan-in -----------------------------------------------------

    async def fan_in(self) -> None:
        """
        Ask the next ExecutionLogFetchFanIn nodes how far they got, and
        commit what changed as one small entry (a row per node, however many
        executions they made). The records themselves stay on their nodes.
        """
        members = sorted(self.node.member_ids())
        if not members:
            return
        count = min(len(members), max(1, int(self.config.execution_log_fetch_fan_in)))
        start = self._fanin_next % len(members)
        chosen = [members[(start + i) % len(members)] for i in range(count)]
        self._fanin_next = start + count
        await self._record_progress(chosen)

    async def _record_progress(self, chosen: list[int]) -> None:
        """Ask the nodes C{chosen} how far they got, and commit what changed."""
        answers = await gatherResults([self._mark_of(member) for member in chosen])
        marks = [
            [member, *mark]
            for member, mark in zip(chosen, answers, strict=True)
            if mark is not None and self._reported.get(member) != tuple(mark)
        ]
        if not marks or not self.node.is_leader:
            return
        result = await self._propose(Op.RECORD_PROGRESS, {"marks": marks})
        if result.ok:
            for member, *mark in marks:
                self._reported[member] = tuple(mark)

    def _mark_of(self, member: int) -> Deferred:
        """Node C{member}'s progress mark (None: none yet, or it did not answer)."""
        if member == self.node.config.node_id:
            return succeed(self.node.progress_mark())

        def unavailable(failure: Any) -> None:
            failure.trap(PeerUnavailable)
            log.debug(
                "progress of node {node} not read: {error}",
                node=member,
                error=str(failure.value),
            )

        def shaped(answer: Any) -> tuple | None:
            mark = (answer or {}).get("mark")
            return tuple(mark) if isinstance(mark, list) and len(mark) == 3 else None

        timeout = max(0.1, min(1.0, float(self.config.execution_log_fetch_interval_seconds)))
        d = self.node.peers.progress(member, timeout)
        d.addCallback(shaped)
        d.addErrback(unavailable)
        return d

    # -- entry version ---------------------------------------------------------

    async def raise_entry_version(self) -> None:
        """
        While the cluster writes an older entry version than this release
        reads, ask every member of the Raft configuration (voters and
        learners) which version it reads; once all answer and all read a
        newer one, commit C{set_entry_version} to the newest every one of
        them reads (that command is itself of that version, so only such
        members ever meet it). A member that does not answer holds it back.

        A new cluster's files start at this release's version, which no
        entry says: the leader logs it once, for members that join later
        (their files start at the first version) and replay the log.
        """
        current = await self.state.entry_version()
        if current >= ENTRY_VERSION:
            if not await self.state.entry_version_index():
                await self._propose_entry_version(current, current)
            return
        members = sorted(self.node.member_ids())
        answers = await gatherResults([self._reads_of(member) for member in members])
        self.node.member_reads.update(
            (member, reads)
            for member, reads in zip(members, answers, strict=True)
            if reads is not None
        )
        if not members or None in answers or not self.node.is_leader:
            return
        target = min(ENTRY_VERSION, *answers)
        if target > current:
            await self._propose_entry_version(target, current)

    async def _propose_entry_version(self, version: int, was: int) -> None:
        result = await self.node.propose(
            Command(Op.SET_ENTRY_VERSION, {"version": version}, version=version)
        ).addCallback(self._resumed)
        if result.ok and version > was:
            log.info(
                "every member reads entry version {version}: the cluster writes it from"
                " now on (it wrote {was})",
                version=result.value["entry_version"],
                was=was,
                event="entry_version_raised",
            )

    def _reads_of(self, member: int) -> Deferred:
        """The entry version node C{member} reads (None: it did not answer)."""
        if member == self.node.config.node_id:
            return succeed(ENTRY_VERSION)

        def unavailable(failure: Any) -> None:
            failure.trap(PeerUnavailable)
            return None

        d = self.node.peers.status(member, 1.0)
        d.addCallback(lambda status: member_versions(status)["reads_entry_version"])
        d.addErrback(unavailable)
        return d
