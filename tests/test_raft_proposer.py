"""
Tests for L{scheduler0.cluster.proposer}: the propose seam over Raft applies the
same commands, in the same order, to every node's real SQLite state machine.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.cluster.proposer import RaftProposer
from scheduler0.errors import NotLeader
from scheduler0.raft.core import RaftSettings
from scheduler0.store.commands import Command
from scheduler0.store.state import StateStore
from tests.support.raft import IDS, SETTINGS, Cluster


def project(uuid: str, name: str) -> dict:
    at = "2026-03-01T12:00:00.000Z"
    return {"uuid": uuid, "name": name, "description": "", "created_at": at, "updated_at": at}


class RaftProposerTests(SynchronousTestCase):
    settings = SETTINGS

    def setUp(self) -> None:
        self.stores: dict[str, StateStore] = {}
        self.proposers: dict[str, RaftProposer] = {}
        self.seen: dict[str, list[str]] = {}
        for node_id in IDS:
            store = StateStore(SynchronousConnectionPool(":memory:"))
            self.successResultOf(store.open())
            self.stores[node_id] = store
            proposer = RaftProposer(store)
            self.seen[node_id] = []
            proposer.subscribe(
                lambda command, result, node_id=node_id: self.seen[node_id].append(command.op)
            )
            self.proposers[node_id] = proposer

        def apply_for(node_id: str) -> Any:
            return self.proposers[node_id].apply_hook

        def extra_for(node_id: str) -> dict:
            proposer = self.proposers[node_id]
            return {"snapshot": proposer.snapshot_hook, "restore": proposer.restore_hook}

        self.cluster = Cluster(apply_for=apply_for, settings=self.settings, extra_for=extra_for)
        for node_id, driver in self.cluster.drivers.items():
            self.proposers[node_id].driver = driver
        leader = self.cluster.leader()
        self.leader = self.proposers[leader.core.node_id]

    def test_commands_reach_every_state_machine(self) -> None:
        """A command proposed on the leader is applied on every node; the result comes back."""
        proposed = self.leader.propose(Command("create_project", {"project": project("p1", "a")}))
        self.cluster.run(0.5)
        result = self.successResultOf(proposed)
        self.assertEqual(result.value["name"], "a")
        dumps = {
            n: json.dumps(self.successResultOf(s.dump()), sort_keys=True)
            for n, s in self.stores.items()
        }
        self.assertEqual(len(set(dumps.values())), 1)
        self.assertIsNotNone(self.successResultOf(self.stores["1"].get_project("p1")))
        for node_id in IDS:
            self.assertEqual(self.seen[node_id], ["create_project"])

    def test_rejections_are_deterministic_results(self) -> None:
        """A conflicting command is answered with the same rejection everywhere."""
        first = self.leader.propose(Command("create_project", {"project": project("p1", "a")}))
        second = self.leader.propose(Command("create_project", {"project": project("p2", "a")}))
        self.cluster.run(0.5)
        self.assertTrue(self.successResultOf(first).ok)
        rejected = self.successResultOf(second)
        self.assertEqual((rejected.ok, rejected.code), (False, "conflict"))
        for store in self.stores.values():
            self.assertIsNone(self.successResultOf(store.get_project("p2")))

    def test_a_retried_request_applies_once(self) -> None:
        """The same request proposed twice (a retry) is applied once; both get the result."""
        command = Command("create_project", {"project": project("p1", "a")}, request_id="r1")
        first = self.leader.propose(command)
        second = self.leader.propose(command)
        self.cluster.run(0.5)
        one, two = self.successResultOf(first), self.successResultOf(second)
        self.assertEqual(two, attrs.evolve(one, duplicate=True))
        for node_id in IDS:
            self.assertEqual(self.seen[node_id], ["create_project"])

    def test_followers_refuse(self) -> None:
        """Proposing on a follower fails with NotLeader (the API answers 503)."""
        follower = next(p for p in self.proposers.values() if p is not self.leader)
        self.assertFalse(follower.is_leader)
        self.assertTrue(self.leader.is_leader)
        self.failureResultOf(follower.propose(Command("delete_job", {"uuid": "x"})), NotLeader)

    def test_applied_index_is_the_log_index(self) -> None:
        """Every state machine stores the Raft log index as its applied index."""
        self.leader.propose(Command("create_project", {"project": project("p1", "a")}))
        self.cluster.run(0.5)
        indexes = {self.successResultOf(s.applied_index()) for s in self.stores.values()}
        self.assertEqual(indexes, {self.leader.applied_index})


class SnapshotTests(RaftProposerTests):
    """The same tests with frequent snapshots, plus a follower caught up by snapshot."""

    settings = RaftSettings(
        election_ticks=10, heartbeat_ticks=2, snapshot_threshold=4, snapshot_trailing=1
    )

    def test_lagging_follower_catches_up_by_snapshot(self) -> None:
        """A follower cut off while the log was compacted receives a snapshot and converges."""
        follower_id = next(n for n, p in self.proposers.items() if p is not self.leader)
        self.cluster.cut.add(follower_id)
        for n in range(12):
            self.leader.propose(Command("create_project", {"project": project(f"p{n}", f"n{n}")}))
            self.cluster.run(0.1)
        leader_driver = self.leader.driver
        self.assertGreater(leader_driver.core.first_index, 2, "the leader did not compact its log")
        self.cluster.cut.discard(follower_id)
        self.cluster.run(2)
        dumps = {
            n: json.dumps(self.successResultOf(s.dump()), sort_keys=True)
            for n, s in self.stores.items()
        }
        self.assertEqual(len(set(dumps.values())), 1)
        self.assertIn("state_restored", self.seen[follower_id])
