"""
One node's part of the cluster: the Raft core, its SQLite log, the TCP
transport and the driver, behind the same C{propose}/C{read_barrier}/
C{subscribe} seam as the single-node proposer; writes made on a follower
are forwarded to the leader, and linearizable reads on a follower wait for
the leader's ReadIndex. Leases (SPEC §7) are kept here too: a node may fire
only while its lease is valid.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from scheduler0.cluster.peer import PeerClient, PeerNotLeader, PeerUnavailable
from scheduler0.raft.core import LEADER, RaftNode, RaftSettings
from scheduler0.raft.driver import RaftDriver
from scheduler0.raft.messages import ClusterConfig
from scheduler0.raft.proposer import RaftProposer
from scheduler0.raft.storage import SqliteRaftStorage
from scheduler0.store.commands import Command
from scheduler0.store.errors import NotLeader, ProposalTimeout, StoreUnavailable

log = Logger()

# The Raft clock: every Raft timeout is a whole number of these ticks.
TICK_S = 0.05
# How often a node renews its lease, and how much longer than a lease the
# leader waits before it takes a silent node's jobs away.
LEASE_RENEW_S = 0.25
LEASE_MARGIN_S = 0.25


def raft_settings(config: Any) -> RaftSettings:
    """The core's tunables from config (milliseconds turned into ticks)."""
    heartbeat = max(1, round(config.raft_heartbeat_interval_ms / 1000 / TICK_S))
    election = max(heartbeat + 1, round(config.raft_election_timeout_ms / 1000 / TICK_S))
    return RaftSettings(
        election_ticks=election,
        heartbeat_ticks=heartbeat,
        snapshot_threshold=max(1, int(config.raft_snapshot_threshold)),
        log_initial_config=True,
    )


def _later(clock: Any, seconds: float) -> Deferred:
    d: Deferred = Deferred()
    clock.callLater(seconds, d.callback, None)
    return d


@attrs.define(eq=False)
class ClusterNode:
    """
    Raft for one node. Build with L{ClusterNode.open}; C{start} once the
    state machine is open; C{stop} on shutdown.
    """

    reactor: Any
    config: Any
    state: Any
    admin: Any
    storage: Any
    core: RaftNode
    raft: RaftProposer
    driver: RaftDriver
    transport: Any
    peers: PeerClient
    is_paused: Callable[[], bool] = lambda: False
    # Filled in by the node once its execution store exists (fan-in).
    executions: Any = None
    lease_s: float = 1.0
    _addresses: dict[int, str] = attrs.field(factory=dict)
    _lease_until: float = 0.0
    _leader_since: float | None = None
    _leader_term: int = 0
    _grants: dict[int, dict] = attrs.field(factory=dict)
    _renewing: Any = None
    _stopped: bool = False

    @classmethod
    def open(
        cls,
        reactor: Any,
        config: Any,
        state: Any,
        admin: Any,
        http: Any,
        run_blocking: Callable[..., Deferred],
    ) -> ClusterNode:
        """Open the Raft log in the data dir and build every part (nothing runs yet)."""
        from scheduler0.raft.transport import RaftTransport
        from scheduler0.tls import load_raft_tls, raft_client_endpoint_factory, raft_server_endpoint

        me = config.node_id
        storage = SqliteRaftStorage(os.path.join(config.data_path(), "raft.db"))
        voters = (
            frozenset(str(r.node_id) for r in config.members()) if config.bootstrap else frozenset()
        )
        settings = raft_settings(config)
        core = RaftNode.create(
            str(me),
            ClusterConfig(voters),
            settings=settings,
            rng=random.Random(),
            boot=storage.load(),
        )
        raft = RaftProposer(state)
        addresses = {r.node_id: r.address for r in config.members()}
        addresses[me] = config.http_address
        node_ref: list[ClusterNode] = []

        def deliver(sender: int, payload: bytes) -> None:
            node_ref[0].driver.receive(payload)

        tls = load_raft_tls(config)
        transport = RaftTransport(
            reactor=reactor,
            node_id=me,
            secret_key=admin.secret_key.encode("utf-8"),
            listen_endpoint=raft_server_endpoint(reactor, config, tls),
            connect_endpoint_factory=raft_client_endpoint_factory(reactor, config, tls),
            peers={r.node_id: r.raft_address for r in config.members() if r.node_id != me},
            on_message=deliver,
            timeout_s=config.raft_transport_timeout,
            max_pool=config.raft_transport_max_pool,
        )
        driver = RaftDriver(
            reactor,
            core,
            storage,
            send=lambda to, payload: transport.send(int(to), payload),
            apply=raft.apply_hook,
            restore=raft.restore_hook,
            snapshot=raft.snapshot_hook,
            run_blocking=run_blocking,
            tick_s=TICK_S,
            apply_timeout_s=config.raft_apply_timeout,
        )
        raft.driver = driver
        peers = PeerClient(
            http,
            admin,
            addresses.get,
            timeout_s=config.peer_auth_request_timeout_ms / 1000,
        )
        election_s = settings.election_ticks * TICK_S
        node = cls(
            reactor,
            config,
            state,
            admin,
            storage,
            core,
            raft,
            driver,
            transport,
            peers,
            lease_s=max(1.0, 2 * election_s),
            addresses=addresses,
        )
        node_ref.append(node)
        return node

    async def start(self) -> None:
        """Bring the state machine up to the log, then start talking to peers."""
        applied = await self.state.applied_index()
        snapshot = self.core.snapshot_meta
        if snapshot is not None and applied < snapshot.index:
            # The state machine's own commits are not synced; after a power
            # loss it can be behind a snapshot the log was compacted to.
            log.warn(
                "state machine at {applied} is behind the Raft snapshot at {index}: restoring it",
                applied=applied,
                index=snapshot.index,
            )
            await self.state.restore(self.core._snapshot_data)
            applied = await self.state.applied_index()
        await self.transport.start()
        self.driver.start(applied)
        from twisted.internet.task import LoopingCall

        self._renewing = LoopingCall(self._renew_lease)
        self._renewing.clock = self.reactor
        self._renewing.start(LEASE_RENEW_S, now=False)

    async def stop(self) -> None:
        self._stopped = True
        if self._renewing is not None and self._renewing.running:
            self._renewing.stop()
        await self.driver.stop()
        await self.transport.stop()
        self.storage.close()

    # -- the proposer seam (what the API and the scheduler use) ----------------

    @property
    def is_leader(self) -> bool:
        return self.core.role == LEADER

    @property
    def applied_index(self) -> int:
        return self.driver.applied_index

    @property
    def leader_id(self) -> int | None:
        leader = self.core.leader_id
        return int(leader) if leader else None

    @property
    def leader_address(self) -> str | None:
        leader = self.leader_id
        return self._addresses.get(leader) if leader is not None else None

    def subscribe(self, fn: Callable[[Command, dict], None]) -> None:
        self.raft.subscribe(fn)

    def propose(self, command: Command) -> Deferred:
        """Commit C{command}: on the leader directly, else through the leader."""
        return Deferred.fromCoroutine(self._propose(command))

    async def _propose(self, command: Command) -> dict:
        deadline = self.reactor.seconds() + self.config.raft_apply_timeout
        last_error = "no leader is known"
        while not self._stopped:
            remaining = deadline - self.reactor.seconds()
            if remaining <= 0:
                break
            if self.is_leader:
                try:
                    return await self.raft.propose(command)
                except NotLeader as e:
                    last_error = str(e)
            elif self.leader_id is not None:
                try:
                    answer = await self.peers.propose(self.leader_id, command, remaining)
                except PeerNotLeader as e:
                    last_error = str(e)
                except PeerUnavailable as e:
                    last_error = str(e)
                else:
                    # Answer only once this node has applied the write, so
                    # the client's next read here sees it.
                    try:
                        await self.driver.wait_applied(int(answer["index"]))
                    except StoreUnavailable:
                        pass
                    return answer["result"]
            await _later(self.reactor, min(0.05, max(0.0, remaining)))
        raise StoreUnavailable(f"the write could not be committed: {last_error}")

    def read_barrier(self) -> Deferred:
        """Fire once a local read is linearizable (ReadIndex, through the leader if need be)."""
        return Deferred.fromCoroutine(self._read_barrier())

    async def _read_barrier(self) -> int:
        deadline = self.reactor.seconds() + self.config.raft_apply_timeout
        last_error = "no leader is known"
        while not self._stopped:
            remaining = deadline - self.reactor.seconds()
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
            await _later(self.reactor, min(0.05, max(0.0, remaining)))
        raise StoreUnavailable(f"no linearizable read possible now: {last_error}")

    # -- what the leader does for peers (PeerAPI) ------------------------------

    async def propose_as_leader(self, command: Command) -> dict:
        if not self.is_leader:
            raise NotLeader(f"node {self.config.node_id} is not the leader")
        result = await self.raft.propose(command)
        return {"result": result, "index": self.driver.applied_index}

    async def read_index_as_leader(self) -> int:
        if not self.is_leader:
            raise NotLeader(f"node {self.config.node_id} is not the leader")
        return await self.driver.read_barrier()

    # -- leases ------------------------------------------------------------------

    def lease_valid(self) -> bool:
        """May this node fire now? (It heard from the current leader within a lease.)"""
        return self.reactor.seconds() < self._lease_until

    def _noticed_leadership(self) -> None:
        now = self.reactor.seconds()
        if self.is_leader:
            if self._leader_since is None or self._leader_term != self.core.term:
                self._leader_since = now
                self._leader_term = self.core.term
                self._grants = {}
                log.info(
                    "node {node} leads term {term}", node=self.config.node_id, term=self.core.term
                )
        else:
            self._leader_since = None

    def _renew_lease(self) -> Deferred | None:
        self._noticed_leadership()
        now = self.reactor.seconds()
        if self.is_leader:
            self._lease_until = now + self.lease_s
            self._grants[self.config.node_id] = {"at": now, "paused": self.is_paused()}
            return None
        leader = self.leader_id
        if leader is None:
            return None
        request = {
            "node_id": self.config.node_id,
            "paused": self.is_paused(),
            "applied_index": self.driver.applied_index,
        }
        d = self.peers.lease(leader, request, LEASE_RENEW_S * 2)

        def granted(answer: dict) -> None:
            if answer.get("granted"):
                # Counted from when the request left, not when the answer came.
                self._lease_until = max(self._lease_until, now + float(answer["lease_s"]))

        d.addCallbacks(granted, lambda f: None)
        return None

    def grant_lease(self, node_id: int, paused: bool, applied_index: int) -> dict:
        """The leader's side of a renewal."""
        self._noticed_leadership()
        if not self.is_leader:
            return {"granted": False, "leader_id": self.leader_id}
        self._grants[node_id] = {"at": self.reactor.seconds(), "paused": paused}
        return {"granted": True, "lease_s": self.lease_s, "term": self.core.term}

    def live_nodes(self) -> dict[int, bool] | None:
        """
        The leader's view: node id -> paused, for each node whose lease it
        granted recently; None while this leader cannot yet tell (a lease
        an earlier leader granted may still run).
        """
        self._noticed_leadership()
        if not self.is_leader or self._leader_since is None:
            return None
        now = self.reactor.seconds()
        election_max = 2 * self.core.settings.election_ticks * TICK_S
        if now - self._leader_since < self.lease_s + election_max + LEASE_MARGIN_S:
            return None
        horizon = self.lease_s + LEASE_MARGIN_S
        return {
            node: grant["paused"]
            for node, grant in self._grants.items()
            if now - grant["at"] <= horizon
        }

    # -- views -------------------------------------------------------------------

    def local_status(self) -> dict:
        status = self.core.status()
        return {
            "node_id": self.config.node_id,
            "role": status["role"],
            "term": status["term"],
            "leader_id": self.leader_id,
            "commit_index": status["commit"],
            "applied_index": self.driver.applied_index,
            "last_index": status["last_index"],
            "voters": [int(v) for v in status["voters"]],
            "learners": [int(v) for v in status["learners"]],
            "lease_valid": self.lease_valid(),
            "paused": self.is_paused(),
        }

    def address_of(self, node_id: int) -> str | None:
        return self._addresses.get(node_id)

    def raft_address_of(self, node_id: int) -> str | None:
        if node_id == self.config.node_id:
            return self.config.raft_address
        return {r.node_id: r.raft_address for r in self.config.members()}.get(node_id)

    def on_applied(self, command: Command, result: dict) -> None:
        """Forget local execution records once the cluster committed them."""
        if command.op != "commit_executions" or not result.get("ok"):
            return
        value = result.get("value") or {}
        if value.get("stale") or command.args.get("node_id") != self.config.node_id:
            return
        if self.executions is None:
            return
        d = self.executions.forget(int(command.args["up_to_seq"]))
        d.addErrback(lambda f: log.failure("forgetting committed execution records failed", f))

    def members(self) -> list[dict]:
        """Every voter and learner with its addresses and what this node knows of it."""
        config = self.core.config
        stats = self.transport.stats()
        raft_addresses = {r.node_id: r.raft_address for r in self.config.members()}
        raft_addresses[self.config.node_id] = self.config.raft_address
        now = self.reactor.seconds()
        out = []
        for member in sorted({int(m) for m in config.members()}):
            if member == self.config.node_id:
                role = self.core.role
                connected = True
            else:
                role = (
                    "leader"
                    if member == self.leader_id
                    else ("learner" if str(member) in config.learners else "follower")
                )
                connected = bool(stats.get(member, {}).get("connected"))
            grant = self._grants.get(member)
            out.append(
                {
                    "node_id": member,
                    "address": self._addresses.get(member),
                    "raft_address": raft_addresses.get(member),
                    "role": role,
                    "voter": str(member) in config.voters,
                    "connected": connected,
                    "last_contact": round(now - grant["at"], 3) if grant else None,
                }
            )
        return out

    async def local_executions(self, after: int, limit: int) -> dict:
        if self.executions is None or not hasattr(self.executions, "pending"):
            return {"records": [], "max_seq": after}
        records, max_seq = await self.executions.pending(after, limit)
        return {"records": records, "max_seq": max_seq}

    def wait_idle(self) -> Deferred:
        return succeed(None)
