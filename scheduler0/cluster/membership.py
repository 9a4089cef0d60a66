"""
Who is in the cluster and how to reach them: the members (from the Raft
configuration), their HTTP and Raft addresses (from config and the log),
when each was last heard from over Raft, and adding or removing a node
(through the leader, draining a leaving node's jobs first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from math import inf
from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from scheduler0.cluster.lease import LEASE_MARGIN_S, TICK_S
from scheduler0.cluster.peer import PeerClient
from scheduler0.cluster.proposer import RaftProposer
from scheduler0.errors import NotLeader, StoreUnavailable
from scheduler0.raft.core import LEADER, RaftNode
from scheduler0.raft.driver import RaftDriver
from scheduler0.raft.transport import IRaftTransport
from scheduler0.store.commands import Command

if TYPE_CHECKING:
    from scheduler0.config import Config
    from scheduler0.store.state import StateStore

log = Logger()


@attrs.define(eq=False)
class Membership:
    """
    The members and their addresses; C{heard_from} is told of every Raft
    message that arrives, C{on_applied} of every committed command.
    """

    clock: IReactorTime
    config: Config
    core: RaftNode
    raft: RaftProposer
    driver: RaftDriver
    transport: IRaftTransport
    peers: PeerClient
    state: StateStore
    # A leaving node keeps its lease this long after its last job moved.
    lease_s: float = 1.0
    monotonic: Callable[[], float] = time.monotonic
    # Node id -> HTTP address and Raft address of the other members.
    _addresses: dict[int, str] = attrs.field(factory=dict)
    _raft_addresses: dict[int, str] = attrs.field(factory=dict)
    # Node id -> when a Raft message from it last arrived (monotonic).
    _heard: dict[int, float] = attrs.field(factory=dict)

    @property
    def is_leader(self) -> bool:
        return self.core.role == LEADER

    @property
    def leader_id(self) -> int | None:
        leader = self.core.leader_id
        return int(leader) if leader else None

    def last_heard(self, node_id: int) -> float:
        """When a Raft message from C{node_id} last arrived (monotonic; -inf: never)."""
        return self._heard.get(node_id, -inf)

    def heard_from(self, node_id: int) -> None:
        """A Raft message from C{node_id} arrived (the transport authenticated it)."""
        self._heard[node_id] = self.monotonic()

    @property
    def election_s(self) -> float:
        """One election timeout, in seconds."""
        return self.core.settings.election_ticks * TICK_S

    def reachable(self, node_id: int, links: dict | None = None) -> bool:
        """
        Has this node heard from member C{node_id} within an election
        timeout? C{links} is the transport's C{stats()} (read now if None).

        A leader hears from every member: each answers its heartbeats, so a
        Raft message from it is the signal. A follower hears over Raft only
        from its leader (and from candidates during an election); another
        follower sends it nothing. For those it takes the Raft links: the
        peer keeps an authenticated connection to this node and this node
        one to the peer, and a peer that crashes or restarts loses both at
        once (its kernel closes its sockets), while one that is paused or cut
        off without its connections closing is seen from here only once TCP
        notices. The leader's own view (its health check) and C{GET /cluster},
        which asks every member, show such a node sooner.
        """
        if node_id == self.config.node_id:
            return True
        if self.monotonic() - self._heard.get(node_id, -inf) <= self.election_s:
            return True
        if self.is_leader or node_id == self.leader_id:
            return False
        if links is None:
            links = self.transport.stats()
        link = links.get(node_id) or {}
        return bool(link.get("connected")) and int(link.get("inbound") or 0) > 0

    def reachable_peers(self) -> int:
        """Other members a Raft message came from within one election timeout."""
        now = self.monotonic()
        within = self.core.settings.election_ticks * TICK_S
        return sum(
            1
            for m in self.member_ids()
            if m != self.config.node_id and now - self._heard.get(m, -inf) <= within
        )

    def address_of(self, node_id: int) -> str | None:
        return self._addresses.get(node_id)

    def raft_address_of(self, node_id: int) -> str | None:
        if node_id == self.config.node_id:
            return self.config.raft_address
        return self._raft_addresses.get(node_id)

    def member_ids(self) -> set[int]:
        return {int(m) for m in self.core.config.members()}

    def change_members(self, add: dict | None = None, remove: int | None = None) -> Deferred:
        """Add a node (as a non-voter, promoted once caught up) or remove one, via the leader."""
        return Deferred.fromCoroutine(self._change_members(add, remove))

    async def _change_members(self, add: dict | None, remove: int | None) -> None:
        if not self.is_leader:
            leader = self.leader_id
            if leader is None:
                raise StoreUnavailable("no leader is known")
            await self.peers.members(leader, {"add": add, "remove": remove})
            return
        if add is not None:
            await self.raft.propose(Command("set_members", {"members": [add]}))
            await self.driver.change_membership(add_learner=str(add["node_id"]))
        if remove is not None:
            await self._drain(remove)
            await self.driver.change_membership(remove=str(remove))
            await self.raft.propose(Command("remove_member", {"node_id": remove}))

    async def _drain(self, node_id: int) -> None:
        """
        Hand a node's jobs to the others before it leaves: made ineligible,
        it keeps its lease and fires until each handover instant, so no slot
        falls between it and the new owners.
        """
        await self.raft.propose(Command("set_eligible", {"node_id": node_id, "eligible": False}))
        deadline = self.clock.seconds() + 4 * self.lease_s + 5
        while self.clock.seconds() < deadline and self.is_leader:
            counts = await self.state.owner_counts()
            if not counts.get(node_id):
                break
            await deferLater(self.clock, 0.1)
        # The last handover instant is one lease after its move.
        await deferLater(self.clock, self.lease_s + LEASE_MARGIN_S)

    async def change_members_as_leader(self, body: dict) -> dict:
        if not self.is_leader:
            raise NotLeader(f"node {self.config.node_id} is not the leader")
        await self._change_members(body.get("add"), body.get("remove"))
        return {"members": sorted(self.member_ids())}

    def _learn_addresses(self, members: list[dict]) -> None:
        """Reach nodes the log told us about (Replicas addresses, if given, win)."""
        configured = {r.node_id for r in self.config.members()}
        changed = False
        for member in members:
            node_id = int(member["node_id"])
            if node_id in configured or node_id == self.config.node_id:
                continue
            if member.get("address"):
                self._addresses[node_id] = member["address"]
            if (
                member.get("raft_address")
                and self._raft_addresses.get(node_id) != member["raft_address"]
            ):
                self._raft_addresses[node_id] = member["raft_address"]
                changed = True
        if changed:
            self._update_transport()

    def _update_transport(self) -> None:
        me = self.config.node_id
        peers = {n: a for n, a in self._raft_addresses.items() if n != me and a}
        self.transport.set_peers(peers)

    async def load_members(self) -> None:
        """At start: reach the members that joined after our config was written."""
        self._learn_addresses(await self.state.members())

    async def wait_members_applied(self, timeout: float) -> list[int]:
        """
        Wait until every member has applied what this node has, or
        C{timeout} seconds have passed; return the members that had not.

        Used before acknowledging a change to what fires (with timeout one
        lease): a member that has not applied it by then cannot fire from
        the older state any more, since its lease ran out and a new one is
        only usable once it has applied the change.
        """
        from twisted.internet.defer import gatherResults

        index = self.driver.applied_index
        deadline = self.clock.seconds() + timeout
        pending = sorted(self.member_ids() - {self.config.node_id})
        while pending:
            remaining = deadline - self.clock.seconds()
            if remaining <= 0:
                break
            answers = await gatherResults(
                [
                    self.peers.status(m, min(0.5, remaining)).addErrback(lambda f: None)
                    for m in pending
                ]
            )
            pending = [
                member
                for member, status in zip(pending, answers, strict=True)
                if status is None or int(status.get("applied_index") or 0) < index
            ]
            if pending:
                await deferLater(self.clock, min(0.02, max(0.0, deadline - self.clock.seconds())))
        return pending

    def on_applied(self, command: Command) -> None:
        """Follow member changes (of a command applied with success)."""
        if command.op == "set_members":
            self._learn_addresses(list(command.args.get("members") or ()))
            return
        if command.op == "remove_member":
            node_id = command.args.get("node_id")
            if node_id in self._raft_addresses and node_id != self.config.node_id:
                del self._raft_addresses[node_id]
                self._update_transport()
            return
        if command.op == "state_restored":
            Deferred.fromCoroutine(self.load_members()).addErrback(
                lambda f: log.failure("reading members failed", f)
            )

    def silence(self, now: float) -> dict[int, float]:
        """Member id -> seconds since a Raft message from it arrived (for those heard from)."""
        heard = self._heard
        return {m: now - heard[m] for m in self.member_ids() if m in heard}
