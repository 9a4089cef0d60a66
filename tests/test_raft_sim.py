"""Scenario tests of the Raft core in the deterministic cluster simulator."""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from harness.linearizability import check_history
from harness.raftsim import InvariantViolation, KVStateMachine, NetworkFaults, Simulation
from scheduler0.raft.core import FOLLOWER, LEADER, BootState, RaftSettings
from scheduler0.raft.messages import (
    NOOP,
    AppendEntries,
    Entry,
    HardState,
    Heartbeat,
    InstallSnapshot,
    TimeoutNow,
)

FIVE = ("a", "b", "c", "d", "e")
THREE = ("a", "b", "c")
LOSSY = NetworkFaults(drop=0.05, duplicate=0.05, min_delay=0, max_delay=2)


def elect(sim: Simulation, limit: int = 500) -> str:
    assert sim.run_until(lambda: sim.leader() is not None, limit), "no leader elected"
    leader = sim.leader()
    assert leader is not None
    return leader


def commit_write(sim: Simulation, key: str, value: str, limit: int = 500) -> None:
    """Write through whichever node leads, retrying until acknowledged."""
    for _ in range(limit):
        op = sim.put(elect(sim), key, value)
        sim.run_until(lambda op=op: op.ret is not None, 60)
        if op.ret is not None and not op.failed:
            return
    raise AssertionError(f"write {key}={value} never committed")


def force_leader(sim: Simulation, target: str) -> None:
    """Move leadership to ``target`` with a leadership transfer."""
    for _ in range(20):
        leader = elect(sim)
        if leader == target:
            return
        sim.nodes[leader].core.transfer_leadership(target)
        sim._settle(leader)
        sim.run_until(lambda: sim.leader() == target, 40)
    raise AssertionError(f"could not make {target} leader")


class FigureEightTests(SynchronousTestCase):
    def _figure_eight(self) -> Simulation:
        put = KVStateMachine.put_command
        old = Entry(2, 2, 0, put("x", "term-2"), "t2")
        rival = Entry(3, 2, 0, put("x", "term-3"), "t3")
        base = Entry(1, 1, NOOP)
        disks = {
            "a": BootState(HardState(3, "", 1), entries=(base, old)),
            "b": BootState(HardState(3, "", 1), entries=(base, old)),
            "c": BootState(HardState(3, "e", 1), entries=(base,)),
            "d": BootState(HardState(3, "e", 1), entries=(base,)),
            "e": BootState(HardState(3, "e", 1), entries=(base, rival)),
        }
        settings = RaftSettings(election_ticks=10, max_batch_entries=1, max_inflight=4)
        sim = Simulation(8, FIVE, settings=settings, auto_deliver=False, disks=disks)
        # a wins term 4 with b, c, d and copies its term-2 entry around, but
        # the network strips its term-4 noop from every append, and e hears nothing.
        sim.inject(TimeoutNow(3, "x", "a"))
        for _ in range(4):
            for item in sim.in_flight:
                m = item.message
                if isinstance(m, AppendEntries):
                    item.message = attrs.evolve(
                        m, entries=tuple(e for e in m.entries if e.term != 4)
                    )
            sim.drop_where(lambda m: "e" in (m.sender, m.recipient))
            sim.deliver_where(
                lambda m: not isinstance(m, AppendEntries) or all(e.term != 4 for e in m.entries)
            )
            sim.advance(1)
        sim.drop_where(lambda m: True)
        return sim

    def test_old_term_entry_on_a_majority_is_not_committed(self) -> None:
        """
        Figure 8 (c): a term-2 entry copied to a majority by the term-4
        leader stays uncommitted.
        """
        sim = self._figure_eight()
        a = sim.nodes["a"].core
        self.assertEqual((a.role, a.term), (LEADER, 4))
        holders = [n for n in FIVE if sim.nodes[n].core.term_at(2) == 2]
        self.assertGreaterEqual(len(holders), 3)
        self.assertEqual(a.last_index, 3)
        self.assertEqual(max(sim.nodes[n].core.commit for n in FIVE), 1)

    def test_overwritten_old_term_entry_was_never_applied(self) -> None:
        """Figure 8 (d): after a crashes, e wins and replaces the entry; nobody ever applied it."""
        sim = self._figure_eight()
        sim.crash("a")
        sim.inject(Heartbeat(4, "a", "e", 0))
        sim.inject(TimeoutNow(4, "x", "e"))
        sim.deliver_where(lambda m: True, limit=50)
        self.assertEqual(sim.leader(), "e")
        sim.auto_deliver = True
        commit_write(sim, "y", "1")
        sim.restart("a")
        sim.run_until(lambda: all(sim.nodes[n].core.commit >= 3 for n in FIVE), 300)
        self.assertEqual(sim.committed[2].term, 3)
        for node in sim.nodes.values():
            self.assertEqual(node.kv.data["x"], "term-3")


class RestartAndPartitionTests(SynchronousTestCase):
    def test_full_cluster_restart_loses_no_acknowledged_write(self) -> None:
        """Every write acknowledged before all nodes crash is there after they restart."""
        sim = Simulation(3, THREE, faults=LOSSY, slow_sync=0.3)
        for i in range(25):
            commit_write(sim, f"k{i % 4}", str(i))
        acked = {op.key: op.value for op in sim.history if op.ret is not None and not op.failed}
        for node_id in THREE:
            sim.crash(node_id)
        for node_id in THREE:
            sim.restart(node_id)
        commit_write(sim, "after", "restart")
        sim.run_until(lambda: len({n.kv.applied for n in sim.nodes.values()}) == 1, 300)
        for node in sim.nodes.values():
            for key, value in acked.items():
                self.assertEqual(node.kv.data.get(key), value)
            self.assertEqual(node.kv.data["after"], "restart")

    def test_stale_leader_in_minority_never_commits_and_refuses_reads(self) -> None:
        """A leader cut off with a minority cannot commit writes, fails its reads and steps down."""
        sim = Simulation(5, FIVE)
        old = elect(sim)
        commit_write(sim, "k", "before")
        buddy = next(n for n in FIVE if n != old)
        majority = [n for n in FIVE if n not in (old, buddy)]
        sim.partition([old, buddy], majority)
        write = sim.put(old, "k", "stale")
        read = sim.get(old, "k")
        sim.advance(2 * sim.settings.election_ticks + 1)
        self.assertNotEqual(sim.nodes[old].core.role, LEADER)
        self.assertTrue(read.failed)
        self.assertIsNone(write.ret)
        commit_write(sim, "k", "majority")
        sim.heal()
        sim.run_until(lambda: sim.nodes[old].kv.data.get("k") == "majority", 300)
        self.assertEqual(sim.nodes[old].kv.data["k"], "majority")
        self.assertTrue(write.failed)
        self.assertFalse([e for e in sim.committed.values() if b"stale" in e.data])

    def test_partial_partition_does_not_stall_the_cluster(self) -> None:
        """With only the a-b link cut, writes keep committing and terms stay put."""
        sim = Simulation(7, THREE)
        leader = elect(sim)
        other = next(n for n in THREE if n != leader)
        sim.block(leader, other)
        sim.block(other, leader)
        term = sim.nodes[leader].core.term
        for i in range(20):
            commit_write(sim, "k", str(i), limit=50)
            sim.advance(5)
        self.assertLessEqual(max(n.core.term for n in sim.nodes.values()), term + 2)

    def test_asymmetric_partition_of_the_leader_moves_leadership(self) -> None:
        """A leader that can send but not receive loses its quorum and the others elect anew."""
        sim = Simulation(11, THREE)
        old = elect(sim)
        for peer in THREE:
            if peer != old:
                sim.block(peer, old)
        sim.advance(4 * sim.settings.election_ticks)
        self.assertNotEqual(sim.nodes[old].core.role, LEADER)
        commit_write(sim, "k", "v")

    def test_far_behind_follower_catches_up_by_snapshot(self) -> None:
        """A follower missing compacted entries receives a chunked snapshot."""
        settings = RaftSettings(
            election_ticks=10,
            snapshot_threshold=10,
            snapshot_trailing=2,
            snapshot_chunk_bytes=40,
            max_inflight=4,
        )
        sim = Simulation(4, THREE, settings=settings, faults=LOSSY)
        leader = elect(sim)
        lagger = next(n for n in THREE if n != leader)
        sim.crash(lagger)
        for i in range(40):
            commit_write(sim, f"k{i % 5}", str(i))
        leader = elect(sim)
        self.assertGreater(sim.nodes[leader].core.first_index, 2)
        seen: list[InstallSnapshot] = []
        sim.observer = lambda m: seen.append(m) if isinstance(m, InstallSnapshot) else None
        sim.restart(lagger)
        target = sim.nodes[leader].core.commit
        sim.run_until(lambda: sim.nodes[lagger].kv.applied >= target, 500)
        self.assertGreater(len({m.offset for m in seen}), 1)
        self.assertEqual(sim.nodes[lagger].kv.data, sim.nodes[leader].kv.data)


class MembershipTests(SynchronousTestCase):
    def test_added_node_joins_as_learner_and_is_promoted(self) -> None:
        """A new node first follows as a non-voter, then becomes a voter once caught up."""
        sim = Simulation(5, THREE)
        for i in range(5):
            commit_write(sim, "k", str(i))
        sim.add_node("d")
        leader = elect(sim)
        self.assertIsNotNone(sim.nodes[leader].core.change_membership(add_learner="d"))
        sim._settle(leader)
        sim.run_until(
            lambda: (
                "d" in sim.nodes[elect(sim)].core.config.voters
                and sim.nodes["d"].kv.applied >= sim.nodes[elect(sim)].core.commit
            ),
            300,
        )
        core = sim.nodes[elect(sim)].core
        self.assertEqual(core.config.voters, frozenset({"a", "b", "c", "d"}))
        self.assertEqual(sim.nodes["d"].kv.data["k"], "4")

    def test_removed_leader_steps_down_and_cluster_continues(self) -> None:
        """Removing the leader itself commits, then the rest elect a leader among themselves."""
        sim = Simulation(6, THREE)
        leader = elect(sim)
        commit_write(sim, "k", "1")
        self.assertIsNotNone(sim.nodes[leader].core.change_membership(remove=leader))
        sim._settle(leader)
        sim.run_until(lambda: sim.leader() not in (None, leader), 300)
        sim.crash(leader)
        commit_write(sim, "k", "2")
        self.assertNotIn(leader, sim.nodes[elect(sim)].core.config.voters)

    def test_leadership_transfer_moves_the_leader(self) -> None:
        """transfer_leadership hands leadership to the named voter."""
        sim = Simulation(2, THREE)
        leader = elect(sim)
        commit_write(sim, "k", "1")
        target = next(n for n in THREE if n != leader)
        force_leader(sim, target)
        self.assertEqual(sim.leader(), target)
        self.assertEqual(sim.nodes[leader].core.role, FOLLOWER)


class SimulatorTests(SynchronousTestCase):
    def _random_run(self, seed: int) -> Simulation:
        sim = Simulation(seed, THREE, faults=LOSSY, slow_sync=0.2)
        rng = sim.rng
        for step in range(300):
            leader = sim.leader() or rng.choice(THREE)
            choice = rng.random()
            if choice < 0.2:
                sim.put(leader, f"k{rng.randrange(3)}", str(step))
            elif choice < 0.3:
                sim.get(leader, f"k{rng.randrange(3)}")
            elif choice < 0.31:
                sim.crash(rng.choice(THREE))
            elif choice < 0.34:
                sim.restart(rng.choice(THREE))
            else:
                sim.advance(1)
        return sim

    def test_same_seed_replays_the_same_run(self) -> None:
        """Two runs from one seed produce identical histories and logs."""
        first, second = self._random_run(42), self._random_run(42)
        self.assertEqual(
            [(o.kind, o.ret, o.output, o.failed) for o in first.history],
            [(o.kind, o.ret, o.output, o.failed) for o in second.history],
        )
        self.assertEqual(first.committed, second.committed)

    def test_client_history_under_faults_is_linearizable(self) -> None:
        """
        Puts and ReadIndex gets through crashes, loss and reordering form a
        linearizable history.
        """
        for seed in range(4):
            sim = self._random_run(seed)
            self.assertTrue(any(o.kind == "get" and o.ret and not o.failed for o in sim.history))
            result = check_history(sim.history)
            self.assertTrue(result.ok, f"seed {seed}: key {result.key}")

    def test_checker_detects_conflicting_logs(self) -> None:
        """A planted divergence among committed entries is reported as a violation."""
        sim = Simulation(1, THREE)
        commit_write(sim, "k", "1")
        node = sim.nodes[next(n for n in THREE if n != sim.leader())]
        index = node.core.commit
        node.core._log[index - 1] = Entry(99, index)
        self.assertRaises(InvariantViolation, sim.check)

    def test_checker_detects_two_leaders_in_one_term(self) -> None:
        """A second leader in the same term is reported as an election safety violation."""
        sim = Simulation(1, THREE)
        leader = elect(sim)
        other = sim.nodes[next(n for n in THREE if n != leader)].core
        other.term, other.role = sim.nodes[leader].core.term, LEADER
        with self.assertRaisesRegex(InvariantViolation, "election safety"):
            sim.check()
