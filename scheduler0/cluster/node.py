"""
One node's part of the cluster: the Raft core, its SQLite log, the TCP
transport and the driver, behind the same C{propose}/C{read_barrier}/
C{subscribe} seam as the single-node proposer. L{ClusterNode} builds them
and composes the parts that use them: the forwarding of writes and reads
to the leader (L{scheduler0.cluster.forwarding}), the leases (SPEC §7,
L{scheduler0.cluster.lease}) and the membership
(L{scheduler0.cluster.membership}); it keeps the views over all three (its
status, the members, the cluster, its readiness) and the fan-ins of the
execution summary and history that peers ask it for.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from scheduler0.cluster import lease_channel
from scheduler0.cluster.forwarding import FIRING_CHANGES, Forwarding
from scheduler0.cluster.lease import LEASE_MARGIN_S, TICK_S, Leases
from scheduler0.cluster.membership import Membership
from scheduler0.cluster.peer import PeerClient, member_versions
from scheduler0.cluster.proposer import RaftProposer
from scheduler0.errors import StoreUnavailable
from scheduler0.raft.core import LEADER, RaftNode, RaftSettings
from scheduler0.raft.driver import RaftDriver
from scheduler0.raft.messages import ClusterConfig
from scheduler0.raft.storage import SnapshotFile, SqliteRaftStorage
from scheduler0.store.commands import Command, Result
from scheduler0.versions import ENTRY_VERSION, RELEASE, UnsupportedVersion

if TYPE_CHECKING:
    from treq.client import HTTPClient

    from scheduler0.cluster.copies import HistoryCopies
    from scheduler0.config import Config
    from scheduler0.credentials import AdminCredentials
    from scheduler0.diskspace import DiskWatcher
    from scheduler0.raft.transport import RaftTransport
    from scheduler0.store.executions import ExecutionStore
    from scheduler0.store.state import StateStore
    from scheduler0.summary import ExecutionSummary

log = Logger()

# Applied entries' bytes after which a snapshot is taken (before the spread).
SNAPSHOT_BYTES = 64 << 20


def raft_settings(config: Config) -> RaftSettings:
    """The core's tunables from config (milliseconds turned into ticks)."""
    heartbeat = max(1, round(config.raft_heartbeat_interval_ms / 1000 / TICK_S))
    election = max(heartbeat + 1, round(config.raft_election_timeout_ms / 1000 / TICK_S))
    # Every node applies the same entries, so with the same thresholds all
    # would copy their state machine at the same moment; each node's are
    # raised by a different eighth so their snapshots come apart.
    spread = 1 + ((int(config.node_id) - 1) % 4) / 8
    return RaftSettings(
        election_ticks=election,
        heartbeat_ticks=heartbeat,
        snapshot_threshold_bytes=int(SNAPSHOT_BYTES * spread),
        snapshot_threshold=max(1, int(int(config.raft_snapshot_threshold) * spread)),
        # A follower further behind than this gets a snapshot instead.
        snapshot_trailing=min(1024, max(1, int(config.raft_snapshot_threshold))),
        log_initial_config=True,
    )


def _rounded(seconds: float | None) -> float | None:
    """Seconds to a tenth of a millisecond (None stays None)."""
    return None if seconds is None else round(seconds, 4)


def _capture_to_file(state: StateStore, storage: SqliteRaftStorage) -> Deferred:
    """
    The driver's snapshot hook: the state machine copied into a new file of
    the Raft snapshot folder, handed on as a L{SnapshotFile} (so the image
    is never held in memory).
    """
    path = storage.capture_path()
    return state.snapshot(path).addCallback(lambda _: SnapshotFile.at(path))


@attrs.define(eq=False)
class ClusterNode:
    """
    Raft for one node. Build with L{ClusterNode.open}; C{start} once the
    state machine is open; C{stop} on shutdown.
    """

    reactor: IReactorTime
    config: Config
    state: StateStore
    admin: AdminCredentials
    storage: SqliteRaftStorage
    core: RaftNode
    raft: RaftProposer
    driver: RaftDriver
    transport: RaftTransport
    peers: PeerClient
    is_paused: Callable[[], bool] = lambda: False
    # The node's own execution records (served to peers for the
    # cluster-wide history), and how far its scheduler got (the progress
    # fan-in; see SchedulerService.progress_mark).
    executions: ExecutionStore | None = None
    progress: Callable[[], tuple[str, int, int] | None] | None = None
    # The node's per-minute execution counts.
    summary: ExecutionSummary | None = None
    # The copies of other nodes' history it keeps.
    history_copies: HistoryCopies | None = None
    # Whether its data directory can store writes.
    disk: DiskWatcher | None = None
    lease_s: float = 1.0
    # Leases are durations on this process's monotonic clock, so a wall
    # clock stepped back cannot stretch one.
    monotonic: Callable[[], float] = time.monotonic
    # The wall clock compared with the leader's (None: the reactor's).
    wall: Callable[[], float] | None = None
    #: s, the largest clock offset from the leader's at which this node fires.
    max_clock_offset_s: float = 0.5
    # The members' addresses known at start (from config), handed to the
    # membership, which keeps them from then on.
    _addresses: dict[int, str] = attrs.field(factory=dict)
    _raft_addresses: dict[int, str] = attrs.field(factory=dict)
    #: The members, their addresses, when each was last heard from.
    membership: Membership = attrs.field(init=False)
    #: This node's lease and the ones it grants while it leads.
    leases: Leases = attrs.field(init=False)
    #: Writes and linearizable reads, through the leader if need be.
    forwarding: Forwarding = attrs.field(init=False)
    #: node_id -> the entry version it reads, as the leader last asked
    #: (L{scheduler0.cluster.leader.LeaderDuties.raise_entry_version}).
    member_reads: dict[int, int] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.membership = Membership(
            self.reactor,
            self.config,
            self.core,
            self.raft,
            self.driver,
            self.transport,
            self.peers,
            self.state,
            lease_s=self.lease_s,
            monotonic=self.monotonic,
            addresses=self._addresses,
            raft_addresses=self._raft_addresses,
        )
        self.leases = Leases(
            self.reactor,
            self.config.node_id,
            self.core,
            self.driver,
            self.transport,
            self.peers,
            member_ids=self.membership.member_ids,
            last_heard=self.membership.last_heard,
            is_paused=self.is_paused,
            lease_s=self.lease_s,
            monotonic=self.monotonic,
            wall=self.wall,
            max_clock_offset_s=self.max_clock_offset_s,
        )
        self.forwarding = Forwarding(
            self.reactor,
            self.config,
            self.core,
            self.raft,
            self.driver,
            self.peers,
            self.leases,
            disk=self.disk,
        )

    @property
    def moving_off(self) -> set[int]:
        """Nodes whose jobs the leader is moving away right now (no lease for them)."""
        return self.leases.moving_off

    @property
    def skewed_nodes(self) -> set[int]:
        """The leader's view: nodes whose clocks are out of bounds (their jobs move at once)."""
        return self.leases.skewed_nodes

    @classmethod
    def open(
        cls,
        reactor: Any,
        config: Config,
        state: StateStore,
        admin: AdminCredentials,
        http: HTTPClient,
        run_blocking: Callable[..., Deferred],
        *,
        is_paused: Callable[[], bool] = lambda: False,
        executions: ExecutionStore | None = None,
        progress: Callable[[], tuple[str, int, int] | None] | None = None,
        summary: ExecutionSummary | None = None,
        history_copies: Callable[[Callable[[], set[int]], PeerClient], HistoryCopies] | None = None,
        disk: DiskWatcher | None = None,
        halt: Callable[[UnsupportedVersion], None] | None = None,
    ) -> ClusterNode:
        """
        Open the Raft log in the data dir and build every part (nothing runs
        yet). C{history_copies}, when given, makes the copies of history this
        node keeps from the member ids (read at each call) and the peer client.
        C{halt} stops the node when it meets an entry or a snapshot of a newer
        release (L{RaftProposer.halt}).
        """
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
        raft = RaftProposer(state, disk=disk, halt=halt)
        addresses = {r.node_id: r.address for r in config.members()}
        addresses[me] = config.http_address
        node_ref: list[ClusterNode] = []

        def deliver(sender: int, payload: bytes) -> None:
            node = node_ref[0]
            node.membership.heard_from(sender)
            if lease_channel.is_lease_message(payload):
                node.leases.lease_message(sender, payload)
            else:
                node.driver.receive(payload)

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
            # Reconnects back off up to PeerConnectRetryDelay; a cron
            # cluster never gives up on a peer for good.
            backoff_initial_s=min(0.1, max(0.01, config.peer_connect_retry_delay)),
            backoff_max_s=max(0.01, config.peer_connect_retry_delay),
        )
        driver = RaftDriver(
            reactor,
            core,
            storage,
            send=lambda to, payload: transport.send(int(to), payload),
            apply=raft.apply_hook,
            restore=raft.restore_hook,
            snapshot=lambda: _capture_to_file(state, storage),
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
        copies = None
        if history_copies is not None:
            copies = history_copies(lambda: node_ref[0].member_ids(), peers)
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
            is_paused=is_paused,
            executions=executions,
            progress=progress,
            summary=summary,
            history_copies=copies,
            disk=disk,
            # A lease as long as an election timeout: a node that loses
            # touch stops firing, and its jobs move, about that long after.
            lease_s=max(0.25, election_s),
            max_clock_offset_s=config.max_clock_offset_ms / 1000,
            addresses=addresses,
            raft_addresses={r.node_id: r.raft_address for r in config.members()},
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
            await self.state.restore(self.core.snapshot_image)
            applied = await self.state.applied_index()
        self.raft.entry_version = await self.state.entry_version()
        await self.load_members()
        await self.transport.start()
        self.driver.start(applied)
        self.leases.start()

    async def stop(self) -> None:
        self.forwarding.stop()
        self.leases.stop()
        await self.driver.stop()
        await self.transport.stop()
        self.storage.close()

    @property
    def stopped(self) -> bool:
        """Has C{stop} begun? (Retries through the leader end then.)"""
        return self.forwarding.stopped

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
        return self.membership.address_of(leader) if leader is not None else None

    def subscribe(
        self, fn: Callable[[Command, Result], None], ops: Collection[str] | None = None
    ) -> None:
        self.raft.subscribe(fn, ops)

    def propose(self, command: Command) -> Deferred:
        """Commit C{command}: on the leader directly, else through the leader."""
        return self.forwarding.propose(command)

    def read_barrier(self) -> Deferred:
        """Fire once a local read is linearizable (ReadIndex, through the leader if need be)."""
        return self.forwarding.read_barrier()

    async def propose_as_leader(self, command: Command) -> dict:
        return await self.forwarding.propose_as_leader(command)

    async def read_index_as_leader(self) -> int:
        return await self.forwarding.read_index_as_leader()

    # -- leases (scheduler0.cluster.lease) ----------------------------------------

    def lease_valid(self) -> bool:
        """May this node fire now? (L{Leases.lease_valid})"""
        return self.leases.lease_valid()

    @property
    def change_settle_s(self) -> float:
        """How long a change to what fires waits for every node to follow it, at most."""
        return self.lease_s + LEASE_MARGIN_S

    @property
    def leader_lease_s(self) -> float:
        return self.leases.leader_lease_s

    def grant_lease(
        self, node_id: int, paused: bool, applied_index: int, skewed: bool = False
    ) -> dict:
        """The leader's side of a renewal (L{Leases.grant_lease})."""
        return self.leases.grant_lease(node_id, paused, applied_index, skewed)

    def clock_offset(self) -> float | None:
        """
        This node's wall clock minus its leader's, in seconds, now (0 on the
        leader, the reference; None: not measured yet).
        """
        if self.is_leader:
            return 0.0
        return self.leases.clock_offset.offset(self.leases._wall_time(), self.monotonic())

    def leader_time(self) -> float:
        """
        The leader's wall clock now, as this node knows it: its own, corrected
        by its measured offset (its own, when that is not known).
        """
        own = self.leases._wall_time()
        offset = self.clock_offset()
        return own if offset is None else own - offset

    def live_nodes(self) -> tuple[dict[int, bool], Callable[[Any], bool]] | None:
        """The leader's view of who holds a lease (L{Leases.live_nodes})."""
        return self.leases.live_nodes()

    def tenure(self) -> float:
        """Seconds this node has led in its current term (0 when it does not lead)."""
        return self.leases.tenure()

    # -- membership (scheduler0.cluster.membership) ------------------------------

    def member_ids(self) -> set[int]:
        return self.membership.member_ids()

    def heard_from(self, node_id: int) -> None:
        """A Raft message from C{node_id} arrived (the transport authenticated it)."""
        self.membership.heard_from(node_id)

    @property
    def election_s(self) -> float:
        """One election timeout, in seconds."""
        return self.membership.election_s

    def reachable(self, node_id: int, links: dict | None = None) -> bool:
        """Has this node heard from member C{node_id} lately? (L{Membership.reachable})"""
        return self.membership.reachable(node_id, links)

    def reachable_peers(self) -> int:
        """Other members a Raft message came from within one election timeout."""
        return self.membership.reachable_peers()

    def address_of(self, node_id: int) -> str | None:
        return self.membership.address_of(node_id)

    def raft_address_of(self, node_id: int) -> str | None:
        return self.membership.raft_address_of(node_id)

    def change_members(self, add: dict | None = None, remove: int | None = None) -> Deferred:
        """Add a node (as a non-voter, promoted once caught up) or remove one, via the leader."""
        return self.membership.change_members(add, remove)

    async def change_members_as_leader(self, body: dict) -> dict:
        return await self.membership.change_members_as_leader(body)

    async def load_members(self) -> None:
        """At start: reach the members that joined after our config was written."""
        await self.membership.load_members()

    async def wait_members_applied(self, timeout: float) -> list[int]:
        """Wait until every member applied what this node has (see L{Membership})."""
        return await self.membership.wait_members_applied(timeout)

    # -- views -------------------------------------------------------------------

    def local_status(self) -> dict:
        status = self.core.status()
        # RaftNode.status() types its values object; these two are sorted node ids.
        voters = cast("list[int]", status["voters"])
        learners = cast("list[int]", status["learners"])
        return {
            "node_id": self.config.node_id,
            "role": status["role"],
            "term": status["term"],
            "leader_id": self.leader_id,
            "commit_index": status["commit"],
            "applied_index": self.driver.applied_index,
            "last_index": status["last_index"],
            "voters": [int(v) for v in voters],
            "learners": [int(v) for v in learners],
            "lease_valid": self.lease_valid(),
            "paused": self.is_paused(),
            "clock_offset_s": _rounded(self.clock_offset()),
            # The leader's last contact with each member (see cluster_view).
            "member_contact": self.member_contact(),
            # What this node runs and reads, and the entry version its state
            # says the cluster writes (releases before versions send none).
            "release": RELEASE,
            "reads_entry_version": ENTRY_VERSION,
            "entry_version": self.raft.entry_version,
        }

    def member_contact(self) -> dict[str, float]:
        """
        While this node leads: member id (as text, for JSON) -> seconds since
        it last granted that member a lease (itself: since a majority last
        confirmed its leadership). Empty on a follower, which grants none.
        """
        if self.core.role != LEADER:
            return {}
        now = self.monotonic()
        contact = {}
        for member in sorted(int(m) for m in self.core.config.members()):
            granted_at = self.leases.last_grant_at(member)
            if granted_at is not None:
                contact[str(member)] = round(now - granted_at, 3)
        return contact

    async def cluster_view(self) -> dict:
        """Every member with what it says of itself (asked now) and its share of the jobs."""
        from twisted.internet.defer import gatherResults

        members = self.members()
        counts = await self.state.owner_counts()

        def ask(node_id: int) -> Deferred:
            if node_id == self.config.node_id:
                return succeed(self.local_status())
            return self.peers.status(node_id, 0.5).addErrback(lambda f: None)

        answers = await gatherResults([ask(m["node_id"]) for m in members])
        # Last contact as the leader counts it, whichever member answers the
        # view (a follower grants no leases, so it knows none itself); None
        # when the leader did not answer or runs a release without it.
        leader_status = next(
            (a for m, a in zip(members, answers, strict=True) if m["node_id"] == self.leader_id),
            None,
        )
        contact = (leader_status or {}).get("member_contact") or {}
        out = []
        for member, status in zip(members, answers, strict=True):
            status = status or {}
            out.append(
                {
                    "node_id": member["node_id"],
                    "address": member["address"] or "",
                    "raft_address": member["raft_address"] or "",
                    "role": status.get("role", member["role"]) if status else "unreachable",
                    "voter": member["voter"],
                    "reachable": bool(status),
                    "term": status.get("term"),
                    "commit_index": status.get("commit_index"),
                    "applied_index": status.get("applied_index"),
                    "lease_valid": status.get("lease_valid"),
                    "scheduling_paused": status.get("paused"),
                    "owned_jobs": counts.get(member["node_id"], 0),
                    "last_contact": contact.get(str(member["node_id"])),
                    **member_versions(status),
                }
            )
        return {
            "node_id": self.config.node_id,
            "leader_id": self.leader_id,
            "term": self.core.term,
            "entry_version": self.raft.entry_version,
            "members": out,
        }

    async def execution_summary(self, minutes: int) -> dict:
        """
        Every member's per-minute execution counts (asked now, at once, with
        a short timeout) summed; members that did not answer are listed in
        C{missing_nodes}.
        """
        from twisted.internet.defer import gatherResults

        from scheduler0.summary import merge

        if self.summary is None:
            raise StoreUnavailable("this node keeps no execution summary")
        me = self.config.node_id
        own = self.summary.snapshot(minutes)
        others = sorted(m for m in self.member_ids() if m != me)
        answers = await gatherResults(
            [
                self.peers.summary(node_id, minutes, 0.5).addErrback(lambda f: None)
                for node_id in others
            ]
        )
        snapshots = [own]
        nodes = [me]
        missing = []
        for node_id, answer in zip(others, answers, strict=True):
            if answer is None:
                missing.append(node_id)
            else:
                snapshots.append(answer)
                nodes.append(node_id)
        return {**merge(snapshots), "nodes": sorted(nodes), "missing_nodes": missing}

    def on_applied(self, command: Command, result: Result) -> None:
        """Follow member changes, and changes to what fires."""
        if not result.ok:
            return
        if command.op in FIRING_CHANGES:
            self.leases.change_applied(self.raft.applying_index)
        self.membership.on_applied(command)

    def members(self) -> list[dict]:
        """
        Every voter and learner with its addresses and what this node knows
        of it; one it has not heard from within an election timeout (see
        L{reachable}) has the role C{unreachable}.
        """
        config = self.core.config
        stats = self.transport.stats()
        membership = self.membership
        now = self.monotonic()
        out = []
        for member in sorted({int(m) for m in config.members()}):
            reachable = membership.reachable(member, stats)
            if member == self.config.node_id:
                role = self.core.role
                connected = True
            else:
                role = (
                    "unreachable"
                    if not reachable
                    else "leader"
                    if member == self.leader_id
                    else ("learner" if str(member) in config.learners else "follower")
                )
                connected = bool(stats.get(member, {}).get("connected"))
            granted_at = self.leases.last_grant_at(member)
            out.append(
                {
                    "node_id": member,
                    "address": membership.address_of(member) or "",
                    "raft_address": membership.raft_address_of(member) or "",
                    "role": role,
                    "voter": str(member) in config.voters,
                    "connected": connected,
                    "reachable": reachable,
                    "last_contact": round(now - granted_at, 3) if granted_at is not None else None,
                    "reads_entry_version": (
                        ENTRY_VERSION
                        if member == self.config.node_id
                        else self.member_reads.get(member)
                    ),
                }
            )
        return out

    def progress_mark(self) -> tuple[str, int, int] | None:
        """How far this node's scheduler got (None: not known yet)."""
        return self.progress() if self.progress is not None else None

    def readiness(self) -> list[dict]:
        """
        Why this node cannot serve writes or fire its jobs now (empty: it
        can); see L{scheduler0.readiness.cluster_reasons}.
        """
        from scheduler0.readiness import ClusterObservation, cluster_reasons

        # Not notice_leadership(): a health probe must not log leadership
        # events (it would catch a candidate's moment in a term it then wins).
        leases = self.leases
        leases.lease_valid()
        now = self.monotonic()
        return cluster_reasons(
            ClusterObservation(
                node_id=self.config.node_id,
                leader_id=self.leader_id,
                voters=frozenset(int(v) for v in self.core.config.voters),
                silence=self.membership.silence(now),
                election_s=self.election_s,
                lease_left=leases.lease_left(now),
                applied_index=self.driver.applied_index,
                lease_requires=leases.lease_requires,
                unable_to_fire_s=now - leases.could_fire_at,
                clock_offset_s=self.clock_offset(),
                max_clock_offset_s=self.max_clock_offset_s,
                clock_out_of_bounds=leases.clock_out_of_bounds(now),
            )
        )

    async def local_history(self, **filters: Any) -> tuple[list[dict], int]:
        """A page of this node's own execution records (L{ExecutionStore.query})."""
        if self.executions is None:
            raise StoreUnavailable("this node keeps no execution records")
        items, total = await self.executions.query(**filters)
        return list(items), total

    async def local_latest(self, job_uuids: list[str]) -> dict[str, dict]:
        """job_uuid -> the newest of this node's own records of it."""
        if self.executions is None:
            raise StoreUnavailable("this node keeps no execution records")
        return dict(await self.executions.latest_per_job(job_uuids))
