"""
A seeded, replayable, deterministic simulator of a Raft cluster.

It runs the real :class:`scheduler0.raft.core.RaftNode` and the real storage
logic (:class:`scheduler0.raft.storage.MemoryRaftStorage`, the simulated
disk) under logical time: ``advance(n)`` ticks every live node and delivers
the messages that are due.  The simulated network can drop, delay, duplicate
and reorder messages and block any directed link (so partitions may be
symmetric, asymmetric or partial); the simulated disk loses whatever was not
synced when a node crashes.  A small key-value state machine with request
de-duplication sits on top so client histories can be checked for
linearizability (:mod:`harness.linearizability`).

Everything random comes from ``random.Random(seed)``: the same seed and the
same sequence of calls give the same run.

Safety is checked continuously (``check()`` runs after every step and raises
:class:`InvariantViolation`): election safety, log matching, leader
completeness, state machine safety, per-node commit index never decreasing,
no acknowledged write lost.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable

import attrs

from scheduler0.raft.core import (
    LEADER,
    BootState,
    ProposalResult,
    RaftNode,
    RaftSettings,
    ReadResult,
    Ready,
)
from scheduler0.raft.messages import NORMAL, ClusterConfig, Entry, Message
from scheduler0.raft.storage import MemoryRaftStorage


class InvariantViolation(AssertionError):
    """A Raft safety property does not hold."""


# ---------------------------------------------------------------- state machine


@attrs.define(eq=False)
class KVStateMachine:
    """A string map; commands are JSON ``{"op": "put", "key", "value"}``.

    Results are cached by request id, so a retried request is answered from
    the cache instead of being applied twice.
    """

    data: dict[str, str] = attrs.Factory(dict)
    applied: int = 0
    results: dict[str, object] = attrs.Factory(dict)
    #: Hash chain over every applied entry and its result: two replicas with
    #: equal chains at one index went through the same states.
    chain: str = ""

    @staticmethod
    def put_command(key: str, value: str) -> bytes:
        return json.dumps({"op": "put", "key": key, "value": value}, sort_keys=True).encode()

    def apply(self, entry: Entry) -> object:
        result = self._apply(entry)
        link = f"{self.chain}|{entry.index}|{entry.term}|{result!r}".encode() + entry.data
        self.chain = hashlib.sha256(link).hexdigest()
        return result

    def _apply(self, entry: Entry) -> object:
        if entry.index != self.applied + 1:
            raise InvariantViolation(f"applied index {entry.index} after {self.applied}")
        self.applied = entry.index
        if entry.kind != NORMAL:
            return None
        if entry.request_id and entry.request_id in self.results:
            return self.results[entry.request_id]
        command = json.loads(entry.data)
        previous = self.data.get(command["key"])
        self.data[command["key"]] = command["value"]
        if entry.request_id:
            self.results[entry.request_id] = previous
        return previous

    def snapshot(self) -> bytes:
        return json.dumps(
            {
                "data": self.data,
                "applied": self.applied,
                "results": self.results,
                "chain": self.chain,
            },
            sort_keys=True,
        ).encode()

    def restore(self, blob: bytes) -> None:
        state = json.loads(blob)
        self.data, self.applied, self.results = state["data"], state["applied"], state["results"]
        self.chain = state["chain"]

    def digest(self) -> str:
        return self.chain


# ----------------------------------------------------------------------- network


@attrs.frozen
class NetworkFaults:
    """Probabilities and delays (in ticks) of the simulated network."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: int = 0
    max_delay: int = 0


@attrs.define(eq=False)
class _InFlight:
    deliver_at: int
    seq: int
    message: Message


# -------------------------------------------------------------------------- ops


@attrs.define(eq=False)
class Operation:
    """One client operation for the linearizability history.

    ``call``/``ret`` are positions in the simulator's event sequence;
    ``ret`` is None while the outcome is unknown (it may or may not have
    taken effect).  ``failed`` operations certainly had no effect.
    """

    op_id: int
    kind: str  # "put" | "get"
    key: str
    value: str | None
    call: int
    ret: int | None = None
    output: str | None = None
    failed: bool = False
    node: str = ""
    index: int = 0


@attrs.define(eq=False)
class SimNode:
    node_id: str
    core: RaftNode
    disk: MemoryRaftStorage
    kv: KVStateMachine
    initial: ClusterConfig = ClusterConfig(frozenset())
    alive: bool = True
    #: A Ready written but not yet synced (its sends and applies wait).
    unsynced: Ready | None = None
    last_commit: int = 0


@attrs.define(eq=False)
class Simulation:
    """A cluster of simulated nodes; see the module docstring."""

    seed: int
    voters: tuple[str, ...]
    settings: RaftSettings = RaftSettings(
        election_ticks=10,
        heartbeat_ticks=1,
        max_inflight=8,
        snapshot_threshold=1_000_000,
        snapshot_trailing=4,
        snapshot_chunk_bytes=64,
    )
    faults: NetworkFaults = NetworkFaults()
    #: Probability that a node's fsync is slow, leaving a window in which a
    #: crash loses the written batch.
    slow_sync: float = 0.0
    #: When True, ``check()`` runs after every tick/step.
    auto_check: bool = True
    #: When False, messages stay in ``in_flight`` until a test delivers or
    #: drops them (``deliver_where``/``drop_where``).
    auto_deliver: bool = True
    #: Recovered disk contents per node id, for scenarios that start from a
    #: crafted state (e.g. the Raft paper's figure 8).
    disks: dict[str, BootState] = attrs.Factory(dict)
    #: Called with every message just before it is delivered (for tests).
    observer: Callable[[Message], None] | None = None

    rng: random.Random = attrs.field(init=False)
    now: int = 0
    nodes: dict[str, SimNode] = attrs.Factory(dict)
    blocked: set[tuple[str, str]] = attrs.Factory(set)
    in_flight: list[_InFlight] = attrs.Factory(list)
    _seq: int = 0
    _events: int = 0
    history: list[Operation] = attrs.Factory(list)
    _ops_by_token: dict[tuple[str, int], Operation] = attrs.Factory(dict)
    leaders: dict[int, str] = attrs.Factory(dict)
    committed: dict[int, Entry] = attrs.Factory(dict)
    commit_term: dict[int, int] = attrs.Factory(dict)
    _commit_term_upto: int = 0
    digests: dict[int, str] = attrs.Factory(dict)
    acknowledged: dict[int, Entry] = attrs.Factory(dict)
    trace: list[str] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for node_id in self.voters:
            disk = MemoryRaftStorage()
            if node_id in self.disks:
                disk.preload(self.disks[node_id])
            self._boot(node_id, disk, ClusterConfig(frozenset(self.voters)))

    # ------------------------------------------------------------ membership

    def _boot(self, node_id: str, disk: MemoryRaftStorage, initial: ClusterConfig) -> SimNode:
        boot = disk.load()
        kv = KVStateMachine()
        if boot.snapshot_data is not None:
            kv.restore(bytes(boot.snapshot_data))
        node_rng = random.Random(self.rng.getrandbits(64))
        core = RaftNode.create(node_id, initial, settings=self.settings, rng=node_rng, boot=boot)
        node = SimNode(node_id, core, disk, kv, initial=initial, last_commit=core.commit)
        self.nodes[node_id] = node
        return node

    def add_node(self, node_id: str) -> SimNode:
        """Start a fresh, empty node that waits to be added by the leader."""
        return self._boot(node_id, MemoryRaftStorage(), ClusterConfig(frozenset()))

    def crash(self, node_id: str) -> None:
        """Kill a node: unsynced disk writes and in-memory state are lost."""
        node = self.nodes[node_id]
        if not node.alive:
            return
        node.alive = False
        node.unsynced = None
        node.disk.crash()
        for owner, token in list(self._ops_by_token):
            if owner == node_id:
                del self._ops_by_token[(owner, token)]  # outcome unknown: ret stays None
        self.trace.append(f"{self.now}: crash {node_id}")

    def restart(self, node_id: str) -> None:
        """Bring a crashed node back from what its disk synced."""
        node = self.nodes[node_id]
        if node.alive:
            return
        # The commit index is stored lazily (with the next batch that syncs
        # anyway), so a restarted node may start below what it had applied:
        # it rebuilds its state machine from the log and learns the rest of
        # the commit index from the leader again.
        self._boot(node_id, node.disk, node.initial)
        self.trace.append(f"{self.now}: restart {node_id}")
        self._settle(node_id)

    # --------------------------------------------------------------- network

    def block(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes in the same group can talk (both directions)."""
        sets = [set(g) for g in groups]
        self.blocked = set()
        for a in self.nodes:
            for b in self.nodes:
                if a != b and not any(a in s and b in s for s in sets):
                    self.blocked.add((a, b))
        self.trace.append(f"{self.now}: partition {[sorted(s) for s in sets]}")

    def heal(self) -> None:
        self.blocked = set()
        self.trace.append(f"{self.now}: heal")

    def _transmit(self, m: Message) -> None:
        if (m.sender, m.recipient) in self.blocked:
            return
        f = self.faults
        if f.drop and self.rng.random() < f.drop:
            return
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            delay = self.rng.randint(f.min_delay, f.max_delay) if f.max_delay else 0
            self._seq += 1
            self.in_flight.append(_InFlight(self.now + delay, self._seq, m))

    def deliver(self, item: _InFlight) -> None:
        """Hand one in-flight message to its recipient (if alive and reachable)."""
        self.in_flight.remove(item)
        m = item.message
        node = self.nodes.get(m.recipient)
        if node is None or not node.alive or (m.sender, m.recipient) in self.blocked:
            return
        if self.observer is not None:
            self.observer(m)
        node.core.step(m)
        self._settle(m.recipient)

    def inject(self, m: Message) -> None:
        """Put a message on the wire as if a peer had sent it."""
        self._seq += 1
        self.in_flight.append(_InFlight(self.now, self._seq, m))

    def deliver_where(self, predicate, limit: int = 10_000) -> int:  # type: ignore[no-untyped-def]
        """Deliver matching messages (and those they cause) until none is left."""
        delivered = 0
        while delivered < limit:
            matching = [i for i in self.in_flight if predicate(i.message)]
            if not matching:
                break
            self.deliver(matching[0])
            delivered += 1
            if self.auto_check:
                self.check()
        return delivered

    def drop_where(self, predicate) -> int:  # type: ignore[no-untyped-def]
        """Lose every in-flight message matching ``predicate``."""
        doomed = [i for i in self.in_flight if predicate(i.message)]
        for item in doomed:
            self.in_flight.remove(item)
        return len(doomed)

    def drop(self, item: _InFlight) -> None:
        self.in_flight.remove(item)

    def duplicate(self, item: _InFlight) -> None:
        self._seq += 1
        self.in_flight.append(_InFlight(item.deliver_at, self._seq, item.message))

    def deliver_due(self) -> None:
        """Deliver every message due by now, in a seeded shuffled order.

        Raises InvariantViolation on a message storm: nodes that keep
        answering each other without time passing (a livelock).
        """
        delivered = 0
        while True:
            due = [i for i in self.in_flight if i.deliver_at <= self.now]
            if not due:
                return
            delivered += len(due)
            if delivered > 20_000:
                raise InvariantViolation(
                    f"message storm at tick {self.now}: {[i.message for i in due[-6:]]}"
                )
            due.sort(key=lambda i: i.seq)
            self.rng.shuffle(due)
            for item in due:
                if item in self.in_flight:
                    self.deliver(item)

    # ------------------------------------------------------------------ time

    def advance(self, ticks: int = 1) -> None:
        """Let ``ticks`` units of time pass on every live node."""
        for _ in range(ticks):
            self.now += 1
            for node_id in sorted(self.nodes):
                node = self.nodes[node_id]
                if not node.alive:
                    continue
                if node.unsynced is not None:
                    self._finish(node)
                node.core.tick()
                self._settle(node_id)
            if self.auto_deliver:
                self.deliver_due()
            if self.auto_check:
                self.check()

    def run_until(self, predicate, limit: int = 1000) -> bool:  # type: ignore[no-untyped-def]
        for _ in range(limit):
            if predicate():
                return True
            self.advance(1)
        return bool(predicate())

    # ------------------------------------------------------------- processing

    def _settle(self, node_id: str) -> None:
        node = self.nodes[node_id]
        while node.alive and node.unsynced is None and node.core.has_ready():
            ready = node.core.ready()
            if ready.must_sync():
                node.disk.write(ready)
            node.unsynced = ready
            if self.slow_sync and ready.must_sync() and self.rng.random() < self.slow_sync:
                return  # the sync completes at the next tick, unless the node crashes first
            self._finish(node)

    def _finish(self, node: SimNode) -> None:
        ready = node.unsynced
        assert ready is not None
        node.unsynced = None
        node.disk.sync()
        for m in ready.messages:
            self._transmit(m)
        if ready.snapshot is not None:
            node.kv.restore(ready.snapshot[1])
            if node.kv.applied != ready.snapshot[0].index:
                raise InvariantViolation(f"{node.node_id} restored a snapshot with the wrong index")
        for entry in ready.committed:
            self._check_apply(node, entry)
            node.kv.apply(entry)
            digest = node.kv.digest()
            if self.digests.setdefault(entry.index, digest) != digest:
                raise InvariantViolation(f"{node.node_id} state diverged at index {entry.index}")
        for result in ready.results:
            self._on_result(node, result)
        node.core.advance(ready)
        if ready.want_snapshot:
            self.compact(node.node_id)

    def _check_apply(self, node: SimNode, entry: Entry) -> None:
        known = self.committed.setdefault(entry.index, entry)
        if known != entry:
            raise InvariantViolation(
                f"state machine safety: {node.node_id} applied {entry}"
                f" but {known} was applied at that index"
            )

    def compact(self, node_id: str) -> bool:
        """Snapshot a node's state machine at its applied index and compact."""
        node = self.nodes[node_id]
        if not node.alive or node.unsynced is not None:
            return False
        meta = node.core.snapshot_done(node.kv.applied, node.kv.snapshot())
        if meta is None:
            return False
        node.disk.save_snapshot(meta, node.kv.snapshot())
        self._settle(node_id)
        return True

    # ----------------------------------------------------------------- clients

    def _event(self) -> int:
        self._events += 1
        return self._events

    def leader(self) -> str | None:
        """The live leader with the highest term, if any."""
        best = None
        for node in self.nodes.values():
            if node.alive and node.core.role == LEADER:
                if best is None or node.core.term > best.core.term:
                    best = node
        return best.node_id if best else None

    def put(self, node_id: str, key: str, value: str, request_id: str = "") -> Operation:
        """A client write sent to ``node_id`` (fails at once if not leader)."""
        op = Operation(len(self.history), "put", key, value, self._event(), node=node_id)
        self.history.append(op)
        node = self.nodes[node_id]
        token = (
            node.core.propose(KVStateMachine.put_command(key, value), request_id or f"r{op.op_id}")
            if node.alive
            else None
        )
        if token is None:
            op.failed = True
            op.ret = self._event()
        else:
            self._ops_by_token[(node_id, token)] = op
            self._settle(node_id)
        return op

    def get(self, node_id: str, key: str) -> Operation:
        """A linearizable read through ReadIndex on ``node_id``."""
        op = Operation(len(self.history), "get", key, None, self._event(), node=node_id)
        self.history.append(op)
        node = self.nodes[node_id]
        if not node.alive:
            op.failed, op.ret = True, self._event()
            return op
        token = node.core.read_index()
        self._ops_by_token[(node_id, token)] = op
        self._settle(node_id)
        return op

    def _on_result(self, node: SimNode, result: ProposalResult | ReadResult) -> None:
        op = self._ops_by_token.pop((node.node_id, result.token), None)
        if op is None:
            return
        if isinstance(result, ReadResult):
            if result.ok:
                if node.kv.applied < result.index:
                    raise InvariantViolation("read released before its index was applied")
                op.output = node.kv.data.get(op.key)
                op.ret = self._event()
            else:
                op.failed, op.ret = True, self._event()
            return
        op.index = result.index
        if result.ok:
            entry = self.committed.get(result.index)
            if entry is None:
                raise InvariantViolation(
                    f"write acknowledged at {result.index} before it was applied"
                )
            self.acknowledged[result.index] = entry
            op.ret = self._event()
        elif result.reason == "overwritten":
            op.failed, op.ret = True, self._event()
        # other failures: outcome unknown, ret stays None

    # -------------------------------------------------------------- invariants

    def check(self) -> None:
        """Raise InvariantViolation if any safety property is broken now."""
        alive = [n for n in self.nodes.values() if n.alive]
        for node in alive:
            core = node.core
            if core.role == LEADER:
                holder = self.leaders.setdefault(core.term, node.node_id)
                if holder != node.node_id:
                    raise InvariantViolation(
                        f"election safety: {holder} and {node.node_id} lead term {core.term}"
                    )
            if core.commit < node.last_commit:
                raise InvariantViolation(
                    f"{node.node_id} commit went from {node.last_commit} to {core.commit}"
                )
            node.last_commit = core.commit
            top = min(core.commit, core.last_index)
            for index in range(max(core.first_index, self._commit_term_upto + 1), top + 1):
                self.commit_term[index] = core.term
            self._commit_term_upto = max(self._commit_term_upto, top)
            for index in range(core.first_index, min(core.applied, core.last_index) + 1):
                known = self.committed.get(index)
                if known is not None and core.entry(index) != known:
                    raise InvariantViolation(
                        f"{node.node_id} holds {core.entry(index)} over committed {known}"
                    )
        for node in alive:
            core = node.core
            if core.role != LEADER:
                continue
            for index, entry in self.committed.items():
                if (
                    self.commit_term.get(index, core.term) < core.term
                    and core.first_index <= index <= core.last_index
                ):
                    if core.entry(index) != entry:
                        raise InvariantViolation(
                            f"leader completeness: {node.node_id} (term {core.term}) "
                            f"lacks committed {entry}"
                        )
                if self.commit_term.get(index, core.term) < core.term and index > core.last_index:
                    raise InvariantViolation(
                        f"leader completeness: {node.node_id} log ends before "
                        f"committed index {index}"
                    )
        for i, a in enumerate(alive):
            for b in alive[i + 1 :]:
                self._check_log_matching(a.core, b.core)
        for index, entry in self.acknowledged.items():
            if self.committed.get(index) != entry:
                raise InvariantViolation(f"acknowledged write at {index} lost")

    @staticmethod
    def _check_log_matching(a: RaftNode, b: RaftNode) -> None:
        lo = max(a.first_index, b.first_index)
        hi = min(a.last_index, b.last_index)
        for index in range(hi, lo - 1, -1):
            if a.term_at(index) == b.term_at(index):
                for j in range(lo, index + 1):
                    if a.entry(j) != b.entry(j):
                        raise InvariantViolation(
                            f"log matching: {a.node_id} and {b.node_id} agree on term at {index} "
                            f"but differ at {j}"
                        )
                return
