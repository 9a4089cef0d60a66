"""
Property-based test of Raft safety: hypothesis drives the simulator with
random proposals, reads, message delivery/loss/duplication/reordering,
ticks, partitions, crashes, restarts, compaction, membership changes and
leadership transfers, checking every safety invariant after every step
(``Simulation.check``) and linearizability of the client history at the end.

Profiles (chosen with the ``HYPOTHESIS_PROFILE`` environment variable):

- ``raft-ci`` (default): derandomized, 60 examples of up to 50 steps; fast.
- ``raft-deep``: random, 1000 examples of up to 150 steps.  Run with::

      HYPOTHESIS_PROFILE=raft-deep .venv/bin/trial tests.test_raft_sim_stateful

A failure shrinks to a minimal list of steps, printed by hypothesis; the
``seed`` in its ``setup`` step replays the simulator's own randomness.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.trial.unittest import SynchronousTestCase

from harness.linearizability import check_history
from harness.raftsim import NetworkFaults, Simulation
from scheduler0.raft.core import LEADER, RaftSettings

settings.register_profile(
    "raft-ci",
    max_examples=60,
    stateful_step_count=50,
    derandomize=True,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "raft-deep",
    max_examples=1000,
    stateful_step_count=150,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "raft-ci")
if _PROFILE not in ("raft-ci", "raft-deep"):
    _PROFILE = "raft-ci"

NODES = ("a", "b", "c", "d", "e")
SETTINGS = RaftSettings(
    election_ticks=6,
    heartbeat_ticks=1,
    max_inflight=3,
    max_batch_entries=3,
    snapshot_threshold=1_000_000,
    snapshot_trailing=2,
    snapshot_chunk_bytes=48,
)


class RaftSafety(RuleBasedStateMachine):
    """Random cluster histories; invariants checked after every step."""

    sim: Simulation

    @initialize(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([3, 5]), lossy=st.booleans())
    def setup(self, seed: int, size: int, lossy: bool) -> None:
        faults = NetworkFaults(drop=0.05, duplicate=0.05, max_delay=2) if lossy else NetworkFaults()
        self.sim = Simulation(seed, NODES[:size], settings=SETTINGS, faults=faults, slow_sync=0.2)
        self.extra = 0
        # Start from a working cluster so every example exercises replication.
        self.sim.run_until(lambda: self.sim.leader() is not None, 300)
        for i in range(3):
            leader = self.sim.leader()
            if leader:
                self.sim.put(leader, "x", f"w{i}")
            self.sim.advance(2)

    def _node(self, pick: int) -> str:
        ids = sorted(self.sim.nodes)
        return ids[pick % len(ids)]

    def _target(self, pick: int, to_leader: bool) -> str:
        return (self.sim.leader() if to_leader else None) or self._node(pick)

    @rule(
        pick=st.integers(0, 9),
        to_leader=st.booleans(),
        key=st.sampled_from("xy"),
        value=st.integers(0, 99),
    )
    def put(self, pick: int, to_leader: bool, key: str, value: int) -> None:
        self.sim.put(self._target(pick, to_leader), key, str(value))
        leader = self.sim.leader()
        if leader is not None:  # a burst, so batching and pipelining are exercised
            for i in range(value % 4):
                self.sim.put(leader, key, f"{value}.{i}")

    @rule(pick=st.integers(0, 9), to_leader=st.booleans(), key=st.sampled_from("xy"))
    def get(self, pick: int, to_leader: bool, key: str) -> None:
        self.sim.get(self._target(pick, to_leader), key)

    @rule(ticks=st.integers(1, 25))
    def tick(self, ticks: int) -> None:
        self.sim.advance(ticks)

    @rule(rounds=st.integers(1, 3))
    def deliver_all(self, rounds: int) -> None:
        for _ in range(rounds):
            self.sim.deliver_where(lambda m: True, limit=500)
            self.sim.advance(1)

    @precondition(lambda self: self.sim.in_flight)
    @rule(pick=st.integers(0, 1000))
    def deliver_one(self, pick: int) -> None:
        self.sim.deliver(self.sim.in_flight[pick % len(self.sim.in_flight)])

    @precondition(lambda self: self.sim.in_flight)
    @rule(pick=st.integers(0, 1000))
    def drop_one(self, pick: int) -> None:
        self.sim.drop(self.sim.in_flight[pick % len(self.sim.in_flight)])

    @precondition(lambda self: self.sim.in_flight)
    @rule(pick=st.integers(0, 1000))
    def duplicate_one(self, pick: int) -> None:
        self.sim.duplicate(self.sim.in_flight[pick % len(self.sim.in_flight)])

    @rule(order=st.permutations(range(5)), cut=st.integers(1, 4))
    def partition(self, order: list[int], cut: int) -> None:
        ids = sorted(self.sim.nodes)
        ranked = [ids[i] for i in order if i < len(ids)]
        self.sim.partition(ranked[:cut], ranked[cut:])

    @rule(src=st.integers(0, 9), dst=st.integers(0, 9))
    def block_one_way(self, src: int, dst: int) -> None:
        a, b = self._node(src), self._node(dst)
        if a != b:
            self.sim.block(a, b)

    @rule()
    def heal(self) -> None:
        self.sim.heal()

    @rule(pick=st.integers(0, 9))
    def crash(self, pick: int) -> None:
        self.sim.crash(self._node(pick))

    @rule(pick=st.integers(0, 9))
    def restart(self, pick: int) -> None:
        self.sim.restart(self._node(pick))

    @rule(pick=st.integers(0, 9))
    def compact(self, pick: int) -> None:
        self.sim.compact(self._node(pick))

    @rule(pick=st.integers(0, 9))
    def transfer(self, pick: int) -> None:
        leader = self.sim.leader()
        if leader is not None:
            self.sim.nodes[leader].core.transfer_leadership(self._node(pick))
            self.sim._settle(leader)

    @precondition(lambda self: self.extra < 2)
    @rule()
    def add_member(self) -> None:
        leader = self.sim.leader()
        if leader is None:
            return
        new = f"n{self.extra}"
        if self.sim.nodes[leader].core.change_membership(add_learner=new) is not None:
            self.sim.add_node(new)
            self.extra += 1
            self.sim._settle(leader)

    @rule(pick=st.integers(0, 9))
    def remove_member(self, pick: int) -> None:
        leader = self.sim.leader()
        if leader is None:
            return
        core = self.sim.nodes[leader].core
        victim = self._node(pick)
        if len(core.config.voters) > 2 and victim in core.config.members():
            core.change_membership(remove=victim)
            self.sim._settle(leader)

    @invariant()
    def safety(self) -> None:
        """Every step also lets one tick pass, then all invariants must hold."""
        if hasattr(self, "sim"):
            self.sim.advance(1)
            self.sim.check()

    def teardown(self) -> None:
        if not hasattr(self, "sim"):
            return
        sim = self.sim
        result = check_history(sim.history)
        assert result.ok, f"history not linearizable on key {result.key}"
        # Liveness once the faults stop: heal, restart everyone, a write commits.
        sim.heal()
        sim.auto_deliver = True
        sim.faults = NetworkFaults()
        for node_id in sorted(sim.nodes):
            sim.restart(node_id)
        op = None
        for _ in range(40):
            leader = sim.leader()
            if leader is not None and sim.nodes[leader].core.role == LEADER:
                op = sim.put(leader, "final", "1")
                if sim.run_until(lambda op=op: op.ret is not None, 40) and not op.failed:
                    break
            sim.advance(5)
        assert op is not None and op.ret is not None and not op.failed, "cluster did not recover"
        assert check_history(sim.history).ok


class RaftSafetyTests(SynchronousTestCase):
    def test_random_histories_keep_every_safety_invariant(self) -> None:
        """No sequence of faults breaks election safety, log matching, leader completeness,
        state machine safety, monotonic commit, acknowledged writes or linearizability,
        and the healed cluster always commits again."""
        run_state_machine_as_test(RaftSafety, settings=settings.get_profile(_PROFILE))
