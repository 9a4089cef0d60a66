"""
Tests for L{scheduler0.raft.driver}: the Twisted loop around the Raft core,
on task.Clock with an in-memory network, and once over real TCP with SQLite
storage.
"""

from __future__ import annotations

import os
import random
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase

from harness.process import free_port
from harness.waiting import wait_for
from scheduler0.errors import NotLeader, ProposalTimeout, StoreUnavailable
from scheduler0.raft.core import LEADER, RaftNode, RaftSettings
from scheduler0.raft.driver import RaftDriver
from scheduler0.raft.messages import ClusterConfig, Entry
from scheduler0.raft.storage import SqliteRaftStorage
from scheduler0.raft.transport import RaftTransport
from tests.support.raft import IDS, SETTINGS, Cluster


class DriverTests(SynchronousTestCase):
    def test_proposal_answers_with_the_applied_result(self) -> None:
        """A proposal on the leader fires with its state machine result; every node applies it."""
        cluster = Cluster()
        leader = cluster.leader()
        proposed = leader.propose(b"x=1")
        cluster.run(1)
        node = leader.core.node_id
        self.assertRegex(self.successResultOf(proposed), rf"applied x=1 at \d+ on {node}")
        for node_id in IDS:
            self.assertEqual(cluster.applied[node_id], [b"x=1"])

    def test_no_node_keeps_results_nobody_waits_for(self) -> None:
        """
        Followers apply every entry but keep none of the results (only the
        node that proposed an entry waits for it), and the leader lets go of
        each once its proposal is answered.
        """
        cluster = Cluster()
        leader = cluster.leader()
        pending = [leader.propose(f"v{n}".encode()) for n in range(50)]
        cluster.run(1)
        for d in pending:
            self.successResultOf(d)
        for node_id, driver in cluster.drivers.items():
            self.assertEqual(len(cluster.applied[node_id]), 50)
            self.assertEqual(driver.kept_results, 0)

    def test_many_proposals_keep_their_order(self) -> None:
        """Proposals apply in the order they were made, the same on every node."""
        cluster = Cluster()
        leader = cluster.leader()
        pending = [leader.propose(f"v{n}".encode()) for n in range(20)]
        cluster.run(1)
        results = [self.successResultOf(d) for d in pending]
        self.assertEqual(len(set(results)), 20)
        expected = [f"v{n}".encode() for n in range(20)]
        for node_id in IDS:
            self.assertEqual(cluster.applied[node_id], expected)

    def test_restart_does_not_apply_again(self) -> None:
        """A restarted node told its state's applied index applies only what is newer."""
        cluster = Cluster()
        leader = cluster.leader()
        for n in range(5):
            leader.propose(f"v{n}".encode())
        cluster.run(1)
        node_id = next(n for n, d in cluster.drivers.items() if d is not leader)
        old = cluster.drivers[node_id]
        self.successResultOf(old.stop())
        reapplied: list[bytes] = []
        core = RaftNode.create(
            node_id,
            ClusterConfig(frozenset(IDS)),
            settings=SETTINGS,
            rng=random.Random(7),
            boot=old.storage.load(),
        )
        new = RaftDriver(
            cluster.clock,
            core,
            old.storage,
            send=cluster._sender(node_id),
            apply=lambda entry: reapplied.append(entry.data),
            tick_s=0.01,
        )
        cluster.drivers[node_id] = new
        new.start(applied_index=old.applied_index)
        # The stored commit index lags (a change of commit alone is not
        # synced); what the state machine applied counts as committed.
        self.assertLess(old.storage.load().hard_state.commit, old.applied_index)
        self.assertEqual(core.commit, old.applied_index)
        leader.propose(b"after")
        cluster.run(1)
        self.assertEqual(reapplied, [b"after"])

    def test_follower_refuses_proposals(self) -> None:
        """A follower answers NotLeader at once."""
        cluster = Cluster()
        leader = cluster.leader()
        follower = next(d for d in cluster.drivers.values() if d is not leader)
        self.failureResultOf(follower.propose(b"x"), NotLeader)

    def test_answers_wait_for_the_disk_replication_does_not(self) -> None:
        """
        A follower saves the entries before it answers the append; the leader
        sends the append while its own save is still to come.
        """
        cluster = Cluster()
        leader = cluster.leader()
        cluster.events.clear()
        leader.propose(b"x")
        cluster.clock.advance(0)
        node = leader.core.node_id
        own = [e for e in cluster.events if e.startswith(f"{node} ")]
        self.assertEqual(own[0], f"{node} send AppendEntries")
        self.assertIn(f"{node} save", own)
        for follower in (n for n in IDS if n != node):
            mine = [e for e in cluster.events if e.startswith(f"{follower} ")]
            self.assertEqual(mine[:2], [f"{follower} save", f"{follower} send AppendResponse"])

    def test_batches_never_overlap(self) -> None:
        """While a node's save is in flight it starts no other batch, however much arrives."""
        held: list[Deferred] = []
        active: dict[str, int] = {}
        peak: dict[str, int] = {}

        def slow(fn: Any, *args: Any) -> Deferred:
            name = fn.__self__.name
            active[name] = active.get(name, 0) + 1
            peak[name] = max(peak.get(name, 0), active[name])
            d: Deferred = Deferred()

            def finish(_: object) -> Any:
                active[name] -= 1
                return fn(*args)

            d.addCallback(finish)
            held.append(d)
            return d

        cluster = Cluster(run_blocking=slow)
        # Saves complete only every 50 ms while ticks and messages keep coming.
        for _ in range(100):
            cluster.run(0.05)
            while held:
                held.pop(0).callback(None)
        self.assertEqual(set(peak.values()), {1})
        self.assertEqual(sum(d.core.role == LEADER for d in cluster.drivers.values()), 1)

    def test_a_snapshot_is_captured_while_entries_go_on_being_applied(self) -> None:
        """
        The state machine's capture does not hold up the loop: entries
        committed while it runs are applied, and once it ends the snapshot
        is made durable and the log compacted to the index it was asked at.
        """
        captures: dict[str, list[tuple[int, Deferred]]] = {i: [] for i in IDS}

        def extra_for(node_id: str) -> dict:
            def snapshot() -> Deferred:
                d: Deferred = Deferred()
                captures[node_id].append((cluster.drivers[node_id].applied_index, d))
                return d

            return {"snapshot": snapshot}

        settings = RaftSettings(
            election_ticks=10, heartbeat_ticks=2, snapshot_threshold=5, snapshot_trailing=1
        )
        cluster = Cluster(settings=settings, extra_for=extra_for)
        leader = cluster.leader()
        node = leader.core.node_id
        for n in range(8):
            leader.propose(f"a{n}".encode())
            cluster.run(0.1)
        ((asked_at, capture),) = captures[node]
        applied_before = len(cluster.applied[node])
        proposed = [leader.propose(f"during{n}".encode()) for n in range(3)]
        cluster.run(1)
        for d in proposed:
            self.successResultOf(d)
        self.assertEqual(len(cluster.applied[node]), applied_before + 3)
        self.assertGreater(leader.applied_index, asked_at)
        self.assertIsNone(leader.core.snapshot_meta)
        self.assertEqual(len(captures[node]), 1)
        capture.callback(b"image")
        cluster.run(0.1)
        self.assertEqual(leader.core.snapshot_meta.index, asked_at)
        boot = leader.storage.load()
        self.assertEqual((boot.snapshot.index, boot.snapshot_data), (asked_at, b"image"))

    def blocked_cluster(self) -> tuple[Cluster, dict[str, list[tuple[bytes, Deferred]]]]:
        """A cluster whose state machines apply only when the test fires each entry's Deferred."""
        pending: dict[str, list[tuple[bytes, Deferred]]] = {i: [] for i in IDS}

        def apply_for(node_id: str) -> Any:
            def apply(entry: Entry) -> Deferred:
                d: Deferred = Deferred()
                pending[node_id].append((entry.data, d))
                return d

            return apply

        return Cluster(apply_for=apply_for), pending

    def test_replication_and_commit_do_not_wait_for_the_state_machine(self) -> None:
        """
        While every state machine is still busy with one entry, later entries
        are persisted, acknowledged and committed; they are applied (and
        their writers answered) in order once it finishes.
        """
        cluster, pending = self.blocked_cluster()
        leader = cluster.leader()
        node = leader.core.node_id
        for d in [d for _, d in pending[node]]:
            d.callback("noop")
        pending[node].clear()
        first = leader.propose(b"first")
        cluster.run(0.5)
        self.assertEqual([data for data, _ in pending[node]], [b"first"])
        later = [leader.propose(f"later{n}".encode()) for n in range(3)]
        cluster.run(0.5)
        self.assertEqual(leader.core.commit, leader.core.last_index)
        self.assertNoResult(first)
        self.assertNoResult(later[0])
        self.assertEqual(len(pending[node]), 1)
        pending[node][0][1].callback("applied first")
        self.assertEqual(self.successResultOf(first), "applied first")
        self.assertEqual([data for data, _ in pending[node][1:]], [b"later0"])
        for n in range(3):
            pending[node][1 + n][1].callback(f"applied later{n}")
        self.assertEqual(
            [self.successResultOf(d) for d in later], [f"applied later{n}" for n in range(3)]
        )
        self.assertEqual(leader.applied_index, leader.core.last_index)

    def test_leadership_is_confirmed_while_reads_wait_for_the_state_machine(self) -> None:
        """
        confirm_leadership fires once a majority answers a round, even with
        the leader's state machine behind; a read barrier waits for it.
        """
        cluster, pending = self.blocked_cluster()
        leader = cluster.leader()
        node = leader.core.node_id
        for d in [d for _, d in pending[node]]:
            d.callback("noop")
        leader.propose(b"slow")
        cluster.run(0.5)
        confirmed = leader.confirm_leadership()
        read = leader.read_barrier()
        cluster.run(0.2)
        self.assertEqual(self.successResultOf(confirmed), leader.core.commit)
        self.assertNoResult(read)
        pending[node][-1][1].callback("done")
        self.assertEqual(self.successResultOf(read), leader.core.commit)

    def test_read_barrier_on_leader_and_follower(self) -> None:
        """The leader's read barrier fires at an applied index; a follower's fails NotLeader."""
        cluster = Cluster()
        leader = cluster.leader()
        leader.propose(b"x")
        cluster.run(0.5)
        barrier = leader.read_barrier()
        cluster.run(0.5)
        index = self.successResultOf(barrier)
        self.assertLessEqual(index, leader.applied_index)
        self.assertGreaterEqual(index, 1)
        follower = next(d for d in cluster.drivers.values() if d is not leader)
        barrier = follower.read_barrier()
        cluster.run(0.1)
        self.failureResultOf(barrier, NotLeader)

    def test_wait_applied_fires_when_a_follower_reaches_the_index(self) -> None:
        """A follower's wait for a leader's index fires once it applied it, not before."""
        cluster = Cluster()
        leader = cluster.leader()
        follower = next(d for d in cluster.drivers.values() if d is not leader)
        cluster.cut.add(follower.core.node_id)
        proposed = leader.propose(b"x")
        cluster.run(0.2)
        self.successResultOf(proposed)
        index = leader.applied_index
        waiting = follower.wait_applied(index)
        self.assertNoResult(waiting)
        cluster.cut.clear()
        cluster.run(0.5)
        self.assertGreaterEqual(self.successResultOf(waiting), index)
        self.assertEqual(self.successResultOf(follower.wait_applied(1)), follower.applied_index)

    def test_wait_applied_times_out(self) -> None:
        """A wait for an index this node never reaches fails with ProposalTimeout."""
        cluster = Cluster()
        leader = cluster.leader()
        leader.apply_timeout_s = 0.5
        waiting = leader.wait_applied(leader.applied_index + 100)
        cluster.run(0.4)
        self.assertNoResult(waiting)
        cluster.run(0.2)
        self.failureResultOf(waiting, ProposalTimeout)

    def test_malformed_message_is_dropped(self) -> None:
        """Garbage from the network is counted and ignored."""
        cluster = Cluster()
        driver = cluster.drivers["1"]
        driver.receive(b"\xff\x00garbage")
        self.assertEqual(driver.dropped_messages, 1)

    def test_stop_fails_what_waits(self) -> None:
        """stop() fails pending proposals with StoreUnavailable and ends the ticking."""
        cluster = Cluster()
        leader = cluster.leader()
        cluster.cut.update(IDS)
        pending = leader.propose(b"x")
        self.successResultOf(leader.stop())
        self.failureResultOf(pending, StoreUnavailable)
        self.failureResultOf(leader.propose(b"y"), StoreUnavailable)

    def test_unapplied_write_times_out(self) -> None:
        """A write that cannot commit fails with ProposalTimeout after the apply timeout."""
        cluster = Cluster()
        leader = cluster.leader()
        leader.apply_timeout_s = 0.5
        cluster.cut.add(leader.core.node_id)
        pending = leader.propose(b"stuck")
        cluster.run(0.4)
        self.assertNoResult(pending)
        cluster.run(0.2)
        self.failureResultOf(pending, ProposalTimeout)

    def test_a_large_write_is_given_a_second_more_per_mebibyte(self) -> None:
        """A 2 MiB write waits the apply timeout plus two seconds before it fails."""
        cluster = Cluster()
        leader = cluster.leader()
        leader.apply_timeout_s = 0.5
        cluster.cut.add(leader.core.node_id)
        pending = leader.propose(b"x" * (2 << 20))
        cluster.run(2.4)
        self.assertNoResult(pending)
        cluster.run(0.2)
        self.failureResultOf(pending, ProposalTimeout)

    def test_a_write_applied_after_its_writer_gave_up_leaves_nothing_behind(self) -> None:
        """
        A write whose writer stopped waiting (ProposalTimeout) while the
        state machine was still busy with it is applied all the same, and its
        result is not kept for an answer nobody awaits.
        """
        cluster, pending = self.blocked_cluster()
        leader = cluster.leader()
        leader.apply_timeout_s = 0.5
        node = leader.core.node_id
        for d in [d for _, d in pending[node]]:
            d.callback("noop")
        write = leader.propose(b"slow")
        cluster.run(0.6)
        self.failureResultOf(write, ProposalTimeout)
        self.assertEqual([data for data, _ in pending[node]][-1:], [b"slow"])
        pending[node][-1][1].callback("applied slow")
        self.assertEqual(leader.applied_index, leader.core.last_index)
        self.assertEqual(leader.kept_results, 0)

    def test_minority_leader_commits_nothing(self) -> None:
        """A leader cut off from both peers never answers a proposal with success."""
        cluster = Cluster()
        leader = cluster.leader()
        cluster.cut.add(leader.core.node_id)
        pending = leader.propose(b"lost")
        cluster.run(3)
        if pending.called:
            self.failureResultOf(pending, StoreUnavailable)
        others = [d for d in cluster.drivers.values() if d is not leader]
        for driver in others:
            self.assertNotIn(b"lost", cluster.applied[driver.core.node_id])


class RealTransportTests(TestCase):
    timeout = 60

    async def test_three_nodes_over_tcp_with_sqlite(self) -> None:
        """Three drivers over real TCP links and SQLite storage elect a leader and commit."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        ports = {node_id: free_port() for node_id in IDS}
        peers = {int(n): f"127.0.0.1:{p}" for n, p in ports.items()}
        applied: dict[str, list[bytes]] = {n: [] for n in IDS}
        drivers: dict[str, RaftDriver] = {}
        transports: list[RaftTransport] = []
        for node_id in IDS:
            storage = SqliteRaftStorage(os.path.join(folder, f"raft-{node_id}.db"))
            self.addCleanup(storage.close)
            core = RaftNode.create(
                node_id,
                ClusterConfig(frozenset(IDS)),
                settings=SETTINGS,
                rng=random.Random(int(node_id)),
                boot=storage.load(),
            )

            def deliver(sender: int, payload: bytes, node_id: str = node_id) -> None:
                drivers[node_id].receive(payload)

            transport = RaftTransport(
                reactor=reactor,
                node_id=int(node_id),
                secret_key=b"cluster secret",
                listen_endpoint=TCP4ServerEndpoint(reactor, ports[node_id], interface="127.0.0.1"),
                peers={k: v for k, v in peers.items() if k != int(node_id)},
                on_message=deliver,
            )
            transports.append(transport)

            def apply(entry: Entry, node_id: str = node_id) -> Any:
                applied[node_id].append(entry.data)
                return succeed(entry.index)

            drivers[node_id] = RaftDriver(
                reactor,
                core,
                storage,
                send=lambda to, payload, t=transport: t.send(int(to), payload),
                apply=apply,
                tick_s=0.02,
            )
        for transport in transports:
            await transport.start()
            self.addCleanup(transport.stop)
        for driver in drivers.values():
            driver.start()
            self.addCleanup(driver.stop)

        def leader() -> RaftDriver | None:
            leaders = [d for d in drivers.values() if d.core.role == LEADER]
            return leaders[0] if len(leaders) == 1 else None

        chosen = await wait_for(reactor, leader, timeout=20, what="a leader")
        results = await gatherResults([chosen.propose(f"w{n}".encode()) for n in range(10)])
        self.assertEqual(results, sorted(results))

        def all_applied() -> bool:
            return all(len(applied[n]) == 10 for n in IDS)

        await wait_for(reactor, all_applied, timeout=10, what="every node to apply")
        for node_id in IDS:
            self.assertEqual(applied[node_id], [f"w{n}".encode() for n in range(10)])
