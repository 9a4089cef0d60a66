"""
Writes and linearizable reads from any node: on the leader they go to Raft
directly; a follower forwards a write to the leader over peer HTTP (and
answers once it has applied it), and waits for the leader's ReadIndex
before a read. A write this node or the leader cannot store is refused
before it is appended (L{scheduler0.errors.WritesRefused}, 507). The
leader's side of both (what L{PeerAPI} calls) is here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from scheduler0.cluster.lease import Leases
from scheduler0.cluster.peer import PeerClient, PeerNotLeader, PeerUnavailable
from scheduler0.cluster.proposer import RaftProposer
from scheduler0.diskspace import DiskWatcher
from scheduler0.errors import NotLeader, ProposalTimeout, StoreUnavailable
from scheduler0.raft.core import LEADER, RaftNode
from scheduler0.raft.driver import ProposalFailed, RaftDriver
from scheduler0.store.commands import Command, Result

if TYPE_CHECKING:
    from scheduler0.config import Config

# Applied changes after which a node must catch up before it fires again.
FIRING_CHANGES = frozenset(
    ("assign_jobs", "remove_member", "update_job", "delete_job", "delete_project")
)


@attrs.define(eq=False)
class Forwarding:
    """
    Proposals and read barriers, wherever the leader is. Each retries
    until the config's raft_apply_timeout; C{stop} ends the retries.
    """

    clock: IReactorTime
    config: Config
    core: RaftNode
    raft: RaftProposer
    driver: RaftDriver
    peers: PeerClient
    # A change to what fires is noted with the leases the moment it is appended.
    leases: Leases
    #: Says whether this node's data directory can store writes (None: always).
    disk: DiskWatcher | None = None
    _stopped: bool = False

    def stop(self) -> None:
        """Give up the retries in progress (at their next pause)."""
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def is_leader(self) -> bool:
        return self.core.role == LEADER

    @property
    def leader_id(self) -> int | None:
        leader = self.core.leader_id
        return int(leader) if leader else None

    def propose(self, command: Command) -> Deferred:
        """Commit C{command}: on the leader directly, else through the leader."""
        return Deferred.fromCoroutine(self._propose(command))

    async def _propose(self, command: Command) -> Result:
        # A node that cannot store the write cannot answer it either (it
        # answers once it has applied it): refused here, before the leader.
        self._check_disk()
        deadline = self.clock.seconds() + self.config.raft_apply_timeout
        last_error = "no leader is known"
        # Attempts to reach a leader that does not answer (PeerConnectRetryMax);
        # a leader that answers "not the leader" any more costs no attempt.
        attempts = max(1, self.config.peer_connect_retry_max)
        while not self._stopped and attempts > 0:
            remaining = deadline - self.clock.seconds()
            if remaining <= 0:
                break
            if self.is_leader:
                try:
                    return await self.propose_here(command)
                except (NotLeader, ProposalFailed) as e:
                    # Leadership changed under the write: try again where it
                    # went (the request id makes a second commit a no-op).
                    last_error = str(e)
            elif self.leader_id is not None:
                try:
                    answer = await self.peers.propose(self.leader_id, command, remaining)
                except PeerNotLeader as e:
                    last_error = str(e)
                except PeerUnavailable as e:
                    last_error = str(e)
                    attempts -= 1
                else:
                    # Answer only once this node has applied the write, so
                    # the client's next read here sees it.
                    try:
                        await self.driver.wait_applied(int(answer["index"]))
                    except StoreUnavailable:
                        pass
                    return Result.from_json(answer["result"])
            await deferLater(self.clock, min(0.05, max(0.0, remaining)))
        raise StoreUnavailable(f"the write could not be committed: {last_error}")

    def read_barrier(self) -> Deferred:
        """Fire once a local read is linearizable (ReadIndex, through the leader if need be)."""
        return Deferred.fromCoroutine(self._read_barrier())

    async def _read_barrier(self) -> int:
        deadline = self.clock.seconds() + self.config.raft_apply_timeout
        last_error = "no leader is known"
        while not self._stopped:
            remaining = deadline - self.clock.seconds()
            if remaining <= 0:
                break
            try:
                if self.is_leader:
                    return await self.driver.read_barrier()
                if self.leader_id is not None:
                    index = await self.peers.read_index(self.leader_id, remaining)
                    return await self.driver.wait_applied(index)
            except (NotLeader, PeerUnavailable, ProposalTimeout) as e:
                last_error = str(e)
            await deferLater(self.clock, min(0.05, max(0.0, remaining)))
        raise StoreUnavailable(f"no linearizable read possible now: {last_error}")

    # -- what the leader does for peers (PeerAPI) --------------------------------

    async def propose_as_leader(self, command: Command) -> dict:
        if not self.is_leader:
            raise NotLeader(f"node {self.config.node_id} is not the leader")
        result = await self.propose_here(command)
        return {"result": result.to_json(), "index": self.driver.applied_index}

    def propose_here(self, command: Command) -> Deferred:
        """
        Append C{command} to this leader's log. A change to what fires counts
        from the moment it is in the log, not once this node applied it (its
        state machine may lag): leases granted from now on, this node's own
        included, are usable only on a copy that has applied it, so no node
        fires from the copy before it (say, past a handover instant) while
        another fires from the copy after it.
        """
        self._check_disk()
        d = self.raft.propose(command)
        if command.op in FIRING_CHANGES:
            self.leases.change_appended(self.core.last_index)
        return d

    def _check_disk(self) -> None:
        """Raise L{WritesRefused} while this node's data directory cannot store writes."""
        refusal = self.disk.writes_refused() if self.disk is not None else None
        if refusal is not None:
            raise refusal.error()

    async def read_index_as_leader(self) -> int:
        if not self.is_leader:
            raise NotLeader(f"node {self.config.node_id} is not the leader")
        return await self.driver.read_barrier()
