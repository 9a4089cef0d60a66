"""
Unit tests of the leases in scheduler0.cluster.node, on task.Clock with a
fake Raft core, driver and peer client: when a node may fire, what a
leader grants, and when it may take a silent node's jobs.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.cluster.node import (
    LEASE_MARGIN_S,
    LEASE_RENEW_S,
    RAFT_SILENCE_S,
    SNAPSHOT_BYTES,
    STUCK_S,
    ClusterNode,
    raft_settings,
)
from scheduler0.raft.core import FOLLOWER, LEADER, RaftSettings
from scheduler0.raft.messages import ClusterConfig
from scheduler0.store.commands import Command


@attrs.define
class FakeCore:
    role: str = FOLLOWER
    term: int = 1
    leader_id: str = ""
    last_index: int = 0
    commit: int = 0
    settings: RaftSettings = RaftSettings(election_ticks=10, heartbeat_ticks=1)
    config: ClusterConfig = ClusterConfig(frozenset({"1", "2", "3"}))


@attrs.define
class FakeDriver:
    applied_index: int = 0
    barriers: list[Deferred] = attrs.field(factory=list)

    def confirm_leadership(self) -> Deferred:
        d: Deferred = Deferred()
        self.barriers.append(d)
        return d


@attrs.define
class FakePeers:
    requests: list[tuple[int, dict, Deferred]] = attrs.field(factory=list)

    def lease(self, node_id: int, request: dict, timeout: float) -> Deferred:
        d: Deferred = Deferred()
        self.requests.append((node_id, request, d))
        return d


@attrs.frozen
class Config:
    node_id: int = 1


class LeaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.core = FakeCore()
        self.driver = FakeDriver()
        self.peers = FakePeers()
        self.node = ClusterNode(
            self.clock,
            Config(),
            state=None,
            admin=None,
            storage=None,
            core=self.core,  # type: ignore[arg-type]
            raft=None,  # type: ignore[arg-type]
            driver=self.driver,  # type: ignore[arg-type]
            transport=None,
            peers=self.peers,  # type: ignore[arg-type]
            lease_s=1.0,
            monotonic=self.clock.seconds,
        )

    def test_a_follower_fires_only_after_applying_what_its_lease_needs(self) -> None:
        """
        A granted lease runs from when the request left, and is usable only
        once the node applied the index the leader named.
        """
        self.core.leader_id = "2"
        self.node._renew_lease()
        ((leader, request, answer),) = self.peers.requests
        self.assertEqual((leader, request["node_id"]), (2, 1))
        self.clock.advance(0.2)
        answer.callback({"granted": True, "lease_s": 1.0, "must_apply": 7})
        self.assertFalse(self.node.lease_valid())
        self.driver.applied_index = 7
        self.assertTrue(self.node.lease_valid())
        self.clock.advance(0.79)
        self.assertTrue(self.node.lease_valid())
        self.clock.advance(0.02)
        self.assertFalse(self.node.lease_valid())

    def test_a_leader_lease_rests_on_a_heartbeat_round(self) -> None:
        """A leader may fire for election_ticks - 2 ticks after a round a majority answered."""
        self.core.role, self.core.leader_id = LEADER, "1"
        self.node._renew_lease()
        (barrier,) = self.driver.barriers
        self.assertFalse(self.node.lease_valid())
        self.clock.advance(0.05)
        barrier.callback(3)
        self.assertTrue(self.node.lease_valid())
        self.clock.advance(self.node.leader_lease_s - 0.06)
        self.assertTrue(self.node.lease_valid())
        self.clock.advance(0.02)
        self.assertFalse(self.node.lease_valid())

    def test_a_leader_grants_only_while_its_own_lease_runs_and_to_members(self) -> None:
        """Without its own lease a leader grants nothing; it never grants to a non-member."""
        self.core.role, self.core.leader_id = LEADER, "1"
        self.assertFalse(self.node.grant_lease(2, False, 0)["granted"])
        self.node._renew_lease()
        self.driver.barriers[0].callback(1)
        answer = self.node.grant_lease(2, False, 0)
        self.assertTrue(answer["granted"])
        self.assertEqual(answer["lease_s"], 1.0)
        self.assertFalse(self.node.grant_lease(9, False, 0)["granted"])
        self.node.moving_off.add(3)
        self.assertFalse(self.node.grant_lease(3, False, 0)["granted"])

    def test_silent_nodes_are_gone_only_after_a_lease(self) -> None:
        """
        A new leader may take the jobs of the leader of the term just
        before at once, but another silent node's only once a lease (and a
        margin) has passed since it took over; a node it heard from is live.
        """
        self.core.leader_id = "3"
        self.node._noticed_leadership()
        self.core.role, self.core.leader_id, self.core.term = LEADER, "1", 2
        self.node._renew_lease()
        self.driver.barriers[0].callback(1)
        self.node.grant_lease(2, True, 0)
        live, gone = self.node.live_nodes()
        self.assertEqual(live, {1: False, 2: True})
        self.assertEqual((gone(3), gone(2), gone(None), gone(4)), (True, False, True, False))
        self.clock.advance(1.0 + LEASE_MARGIN_S + 0.01)
        live, gone = self.node.live_nodes()
        self.assertEqual(live, {})
        self.assertEqual((gone(2), gone(4)), (True, True))

    def lead_with_grants(self, *node_ids: int) -> None:
        """Node 1 leads term 2 (node 3 led term 1), its lease confirmed, leases granted."""
        self.core.leader_id = "3"
        self.node._noticed_leadership()
        self.core.role, self.core.leader_id, self.core.term = LEADER, "1", 2
        self.node._renew_lease()
        self.driver.barriers[0].callback(1)
        for node_id in node_ids:
            self.node.grant_lease(node_id, False, 0)

    def test_a_slow_node_that_still_talks_raft_keeps_its_jobs_until_stuck(self) -> None:
        """
        A node whose renewals stopped but whose Raft messages still arrive is
        slow, not gone: its jobs stay until it has gone STUCK_S without a
        lease. One that is silent on Raft too is gone once its lease lapsed.
        """
        self.lead_with_grants(2, 3)
        self.clock.advance(1.0 + LEASE_MARGIN_S + 0.01)
        self.node.heard_from(2)
        live, gone = self.node.live_nodes()
        self.assertNotIn(2, live)
        self.assertEqual((gone(2), gone(3)), (False, True))
        # Its lease ended 1 s after the grant; until STUCK_S after that it stays.
        while self.clock.seconds() + RAFT_SILENCE_S / 2 < 1.0 + STUCK_S:
            self.clock.advance(RAFT_SILENCE_S / 2)
            self.node.heard_from(2)
            _, gone = self.node.live_nodes()
            self.assertFalse(gone(2))
        self.clock.advance(RAFT_SILENCE_S / 2)
        self.node.heard_from(2)
        _, gone = self.node.live_nodes()
        self.assertTrue(gone(2))

    def test_a_change_to_what_fires_counts_from_its_append_on_the_leader(self) -> None:
        """
        Once the leader has appended a change to what fires (a job update, a
        move), neither it nor a node it grants a lease to fires from a copy
        that has not applied it; a fan-in commit changes nothing of that.
        """
        self.lead_with_grants(2)
        self.core.last_index = self.driver.applied_index = 5
        core = self.core

        @attrs.define
        class AppendingRaft:
            def propose(self, command: Command) -> Deferred:
                core.last_index += 1
                return Deferred()

        self.node.raft = AppendingRaft()  # type: ignore[assignment]
        self.assertTrue(self.node.lease_valid())
        self.node._propose_here(Command("update_job", {"uuid": "j"}))
        self.assertFalse(self.node.lease_valid())
        self.assertEqual(self.node.grant_lease(2, False, 5)["must_apply"], 6)
        self.driver.applied_index = 6
        self.assertTrue(self.node.lease_valid())
        self.node._propose_here(Command("commit_executions", {}))
        self.assertTrue(self.node.lease_valid())
        self.assertEqual(self.node.grant_lease(2, False, 6)["must_apply"], 6)

    def test_a_leader_whose_own_lease_lapsed_keeps_its_jobs_until_stuck(self) -> None:
        """
        A leader that could not confirm its lease for a while (its heartbeat
        rounds answered late) does not judge itself gone, until STUCK_S.
        """
        self.lead_with_grants(2)
        self.clock.advance(1.0 + LEASE_MARGIN_S + 0.01)
        live, gone = self.node.live_nodes()
        self.assertNotIn(1, live)
        self.assertFalse(gone(1))
        self.clock.advance(STUCK_S)
        _, gone = self.node.live_nodes()
        self.assertTrue(gone(1))

    def test_renewals_run_on_their_timer_one_at_a_time(self) -> None:
        """
        A follower asks for its lease every LEASE_RENEW_S however often it is
        woken, and never while a request is still unanswered.
        """
        self.core.leader_id = "2"
        for _ in range(10):
            self.node._renew_lease()
            self.clock.advance(LEASE_RENEW_S / 2)
        self.assertEqual(len(self.peers.requests), 1)
        self.peers.requests[0][2].callback({"granted": True, "lease_s": 1.0})
        for _ in range(10):
            self.node._renew_lease()
            if self.peers.requests[-1][2].called is False:
                self.peers.requests[-1][2].callback({"granted": True, "lease_s": 1.0})
            self.clock.advance(LEASE_RENEW_S / 2)
        self.assertEqual(len(self.peers.requests), 6)

    def test_a_renewal_woken_a_hair_early_still_goes_out(self) -> None:
        """
        The loop's wakings come LEASE_RENEW_S apart give or take the
        reactor's latency; one a millisecond or two early is not skipped.
        """
        self.core.leader_id = "2"
        self.node._renew_lease()
        self.peers.requests[-1][2].callback({"granted": True, "lease_s": 1.0})
        self.clock.advance(LEASE_RENEW_S + 0.0015)
        self.node._renew_lease()
        self.peers.requests[-1][2].callback({"granted": True, "lease_s": 1.0})
        self.clock.advance(LEASE_RENEW_S - 0.0015)
        self.node._renew_lease()
        self.assertEqual(len(self.peers.requests), 3)


@attrs.frozen
class RaftConfig:
    node_id: int
    raft_heartbeat_interval_ms: int = 50
    raft_election_timeout_ms: int = 500
    raft_snapshot_threshold: int = 8192


class RaftSettingsTests(SynchronousTestCase):
    def test_nodes_of_a_cluster_snapshot_at_different_points(self) -> None:
        """
        Nodes 1, 2 and 3 apply the same entries but get different snapshot
        thresholds (never below the configured ones), so they do not all
        copy their state machine at once.
        """
        settings = [raft_settings(RaftConfig(node_id)) for node_id in (1, 2, 3)]
        by_bytes = [s.snapshot_threshold_bytes for s in settings]
        by_count = [s.snapshot_threshold for s in settings]
        self.assertEqual(len(set(by_bytes)), 3)
        self.assertEqual(len(set(by_count)), 3)
        self.assertEqual(min(by_bytes), SNAPSHOT_BYTES)
        self.assertEqual(min(by_count), 8192)
        self.assertEqual((settings[0].election_ticks, settings[0].heartbeat_ticks), (10, 1))
