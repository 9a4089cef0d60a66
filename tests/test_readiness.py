"""
When a node is ready (GET /healthcheck 200) and why not: the pure rules of
scheduler0.readiness, a ClusterNode on task.Clock with fakes around it
(quorum, lease, reachable members), and NodeService putting them together.
"""

from __future__ import annotations

from math import inf
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.cluster.node import ClusterNode
from scheduler0.config import Config as NodeConfig
from scheduler0.parts import Vitals
from scheduler0.raft.core import LEADER
from scheduler0.raft.messages import ClusterConfig
from scheduler0.readiness import (
    CATCHING_UP,
    CLOCK_SKEW,
    LEASE_LAPSED,
    NO_LEADER,
    NO_QUORUM,
    SCHEDULING_PAUSED,
    STARTING,
    ClusterObservation,
    cluster_reasons,
)
from scheduler0.service import NodeService
from tests.support.cluster import FakeCore, FakeDriver, FakePeers

ELECTION_S = 0.5  # FakeCore: 10 ticks of 0.05 s


@attrs.frozen
class Config:
    node_id: int = 1
    raft_address: str = "127.0.0.1:7071"


def observed(**changes: Any) -> ClusterObservation:
    """Node 2 of voters 1-3, following node 1 that it just heard, with a lease."""
    seen = ClusterObservation(
        node_id=2,
        leader_id=1,
        voters=frozenset({1, 2, 3}),
        silence={1: 0.05},
        election_s=ELECTION_S,
        lease_left=0.4,
        applied_index=10,
        lease_requires=10,
        unable_to_fire_s=0.0,
    )
    return attrs.evolve(seen, **changes)


def codes(reasons: list[dict]) -> list[str]:
    return [r["code"] for r in reasons]


class RuleTests(SynchronousTestCase):
    """scheduler0.readiness.cluster_reasons."""

    def test_a_follower_that_hears_its_leader_and_holds_a_lease_is_ready(self) -> None:
        """No reasons: it can serve writes (through its leader) and fire."""
        self.assertEqual(cluster_reasons(observed()), [])

    def test_no_leader_is_a_reason_at_once(self) -> None:
        """Without a known leader the node cannot serve writes."""
        reasons = cluster_reasons(observed(leader_id=None))
        self.assertEqual(codes(reasons), [NO_LEADER])
        self.assertIn("no leader is known", reasons[0]["message"])

    def test_a_leader_needs_a_majority_heard_within_an_election_timeout(self) -> None:
        """
        A leader that heard from one other voter of three within an election
        timeout has its quorum; one that heard from none for longer has not.
        """
        leader = observed(node_id=1, leader_id=1, silence={2: 0.5, 3: 9.0})
        self.assertEqual(cluster_reasons(leader), [])
        alone = attrs.evolve(leader, silence={2: 0.51, 3: 9.0})
        reasons = cluster_reasons(alone)
        self.assertEqual(codes(reasons), [NO_QUORUM])
        self.assertIn("heard from 1 of 3 voters (nodes 1)", reasons[0]["message"])
        self.assertIn("a quorum is 2", reasons[0]["message"])
        # Five voters: itself and one other are not a quorum.
        five = attrs.evolve(leader, voters=frozenset(range(1, 6)), silence={2: 0.1})
        self.assertEqual(codes(cluster_reasons(five)), [NO_QUORUM])

    def test_a_follower_needs_word_from_its_leader_within_an_election_timeout(self) -> None:
        """A follower whose leader has been silent longer than an election timeout has no quorum."""
        self.assertEqual(cluster_reasons(observed(silence={1: ELECTION_S})), [])
        reasons = cluster_reasons(observed(silence={1: 0.8}))
        self.assertEqual(codes(reasons), [NO_QUORUM])
        self.assertIn("nothing heard from the leader (node 1) for 0.8 s", reasons[0]["message"])
        self.assertIn("ever", cluster_reasons(observed(silence={}))[0]["message"])

    def test_a_lapsed_lease_is_a_reason_at_once(self) -> None:
        """No lease, or one that just ran out: the node fires nothing, so it is not ready."""
        reasons = cluster_reasons(observed(lease_left=0.0))
        self.assertEqual(codes(reasons), [LEASE_LAPSED])
        self.assertIn("lease lapsed 0.0 s ago", reasons[0]["message"])
        reasons = cluster_reasons(observed(lease_left=None))
        self.assertIn("holds no lease yet", reasons[0]["message"])

    def test_a_clock_out_of_bounds_is_a_reason_with_the_offset_and_the_bound(self) -> None:
        """
        A follower whose clock is too far from the leader's is not ready, and
        says by how much, which way, and the bound.
        """
        ahead = observed(clock_offset_s=5.0123, max_clock_offset_s=0.5, clock_out_of_bounds=True)
        reasons = cluster_reasons(ahead)
        self.assertEqual(codes(reasons), [CLOCK_SKEW])
        self.assertIn("5.012 s ahead of the leader's (node 1)", reasons[0]["message"])
        self.assertIn("MaxClockOffsetMs (500 ms)", reasons[0]["message"])
        behind = attrs.evolve(ahead, clock_offset_s=-0.75)
        self.assertIn("0.750 s behind the leader's", cluster_reasons(behind)[0]["message"])
        self.assertEqual(cluster_reasons(attrs.evolve(ahead, clock_out_of_bounds=False)), [])

    def test_a_node_behind_its_lease_counts_only_after_an_election_timeout(self) -> None:
        """
        A node a few entries behind what its lease needs for a moment (every
        change to what fires does that) is ready; one that could not fire for
        longer than an election timeout, or not since it started, is not.
        """
        behind = observed(applied_index=9, lease_requires=12)
        self.assertEqual(cluster_reasons(attrs.evolve(behind, unable_to_fire_s=0.1)), [])
        reasons = cluster_reasons(attrs.evolve(behind, unable_to_fire_s=0.6))
        self.assertEqual(codes(reasons), [CATCHING_UP])
        self.assertIn("up to 9", reasons[0]["message"])
        self.assertIn("until it reaches 12", reasons[0]["message"])
        self.assertEqual(
            codes(cluster_reasons(attrs.evolve(behind, unable_to_fire_s=inf))), [CATCHING_UP]
        )

    def test_every_reason_is_listed(self) -> None:
        """Reasons add up: no leader and no lease at once."""
        self.assertEqual(
            codes(cluster_reasons(observed(leader_id=None, lease_left=-2.0))),
            [NO_LEADER, LEASE_LAPSED],
        )


@attrs.define
class FakeLinks:
    """The transport, as members() and reachable() read it."""

    links: dict[int, dict] = attrs.field(factory=dict)
    sent: list = attrs.field(factory=list)

    def send(self, to_node_id: int, payload: bytes) -> None:
        self.sent.append((to_node_id, payload))

    def stats(self) -> dict:
        return self.links

    def up(self, node_id: int, connected: bool = True, inbound: int = 1) -> None:
        self.links[node_id] = {"connected": connected, "inbound": inbound}


class ClusterNodeTests(SynchronousTestCase):
    """Node 1 of voters 1, 2 and 3 on a Clock (election timeout 0.5 s, lease 0.5 s)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.core = FakeCore(config=ClusterConfig(frozenset({"1", "2", "3"})))
        self.driver = FakeDriver()
        self.peers = FakePeers()
        self.transport = FakeLinks()
        self.node = ClusterNode(
            self.clock,
            Config(),
            state=None,
            admin=None,
            storage=None,
            core=self.core,  # type: ignore[arg-type]
            raft=None,  # type: ignore[arg-type]
            driver=self.driver,  # type: ignore[arg-type]
            transport=self.transport,
            peers=self.peers,  # type: ignore[arg-type]
            lease_s=ELECTION_S,
            monotonic=self.clock.seconds,
        )

    def roles(self) -> dict[int, str]:
        return {m["node_id"]: m["role"] for m in self.node.members()}

    def lead(self) -> None:
        """Node 1 leads, its own lease confirmed by a heartbeat round."""
        self.core.role, self.core.leader_id = LEADER, "1"
        self.node.leases.renew()
        self.driver.barriers.pop(0).callback(1)

    def follow(self, must_apply: int = 0) -> None:
        """Node 1 follows node 2, which grants it a lease over peer HTTP."""
        self.core.leader_id = "2"
        self.node.heard_from(2)
        self.node.leases.renew()
        _, _, answer = self.peers.requests.pop(0)
        answer.callback({"granted": True, "lease_s": ELECTION_S, "must_apply": must_apply})

    def test_a_leader_that_keeps_hearing_a_majority_is_ready(self) -> None:
        """Heartbeat answers from one follower keep a leader of three ready; then none do."""
        self.node.heard_from(2)
        self.node.heard_from(3)
        self.lead()
        self.assertEqual(self.node.readiness(), [])
        for _ in range(10):
            self.clock.advance(0.1)
            self.node.heard_from(2)
            self.node.leases.renew()
            self.driver.barriers.pop(0).callback(1)
        self.assertEqual(self.node.readiness(), [])
        self.assertEqual(self.roles(), {1: "leader", 2: "follower", 3: "unreachable"})
        # Node 2 falls silent too: the round is not answered, nothing renews.
        self.clock.advance(0.45)
        self.assertEqual(codes(self.node.readiness()), [LEASE_LAPSED])
        self.clock.advance(0.1)
        self.assertEqual(codes(self.node.readiness()), [NO_QUORUM, LEASE_LAPSED])
        self.assertEqual(self.roles(), {1: "leader", 2: "unreachable", 3: "unreachable"})

    def test_a_follower_is_ready_while_its_leader_renews_its_lease(self) -> None:
        """
        A follower is ready while it hears its leader and holds a lease; when
        the leader goes silent the lease lapses (at once a reason), then, past
        an election timeout, the quorum is gone too.
        """
        self.assertEqual(codes(self.node.readiness()), [NO_LEADER, LEASE_LAPSED])
        self.follow()
        self.assertEqual(self.node.readiness(), [])
        self.clock.advance(0.3)
        self.assertEqual(self.node.readiness(), [])
        self.clock.advance(0.21)
        self.assertEqual(codes(self.node.readiness()), [NO_QUORUM, LEASE_LAPSED])
        self.core.leader_id = ""
        self.assertEqual(codes(self.node.readiness()), [NO_LEADER, LEASE_LAPSED])

    def test_a_follower_a_moment_behind_its_lease_stays_ready(self) -> None:
        """
        Granted a lease it may use only from an index it has not applied yet,
        a follower that could fire until just now stays ready; if it stays
        behind past an election timeout it is catching up.
        """
        self.follow()
        self.node.leases.renew()  # samples that it could fire
        self.clock.advance(0.1)
        self.node.heard_from(2)
        self.node.leases.renew()
        _, _, answer = self.peers.requests.pop(0)
        answer.callback({"granted": True, "lease_s": ELECTION_S, "must_apply": 5})
        self.assertFalse(self.node.lease_valid())
        self.assertEqual(self.node.readiness(), [])
        for _ in range(6):
            self.clock.advance(0.1)
            self.node.heard_from(2)
            self.node.leases.renew()
            _, _, answer = self.peers.requests.pop(0)
            answer.callback({"granted": True, "lease_s": ELECTION_S, "must_apply": 5})
        self.assertEqual(codes(self.node.readiness()), [CATCHING_UP])
        self.driver.applied_index = 5
        self.assertEqual(self.node.readiness(), [])

    def test_a_node_back_from_a_crash_is_catching_up_at_once(self) -> None:
        """A node that has not fired since it started and is behind its lease is not ready."""
        self.follow(must_apply=40)
        self.assertEqual(codes(self.node.readiness()), [CATCHING_UP])

    def test_a_follower_judges_other_followers_by_their_raft_links(self) -> None:
        """
        A follower hears only its leader over Raft: another follower is
        reachable while their links are up both ways, or it sent something
        within an election timeout; the leader only by what it sends.
        """
        self.follow()
        self.transport.up(3)
        self.assertEqual(self.roles(), {1: "follower", 2: "leader", 3: "follower"})
        self.transport.up(3, inbound=0)
        self.assertEqual(self.roles()[3], "unreachable")
        self.transport.up(3, connected=False)
        self.assertEqual(self.roles()[3], "unreachable")
        self.node.heard_from(3)  # a vote request, say
        self.assertEqual(self.roles()[3], "follower")
        self.clock.advance(0.51)
        self.transport.up(2)
        self.assertEqual(self.roles(), {1: "follower", 2: "unreachable", 3: "unreachable"})
        members = {m["node_id"]: m for m in self.node.members()}
        self.assertEqual(
            (members[1]["reachable"], members[2]["reachable"], members[2]["voter"]),
            (True, False, True),
        )

    def test_a_leader_judges_members_only_by_what_they_send(self) -> None:
        """Open links do not make a member reachable to its leader: its answers do."""
        self.transport.up(2)
        self.transport.up(3)
        self.lead()
        self.node.heard_from(2)
        self.assertEqual(self.roles(), {1: "leader", 2: "follower", 3: "unreachable"})


@attrs.define
class FakeGuard:
    paused: bool = False
    reason: str | None = None

    def snapshot(self) -> dict:
        return {"paused": self.paused, "reason": self.reason}


@attrs.define
class FakeScheduler:
    def active_jobs(self) -> int:
        return 3


@attrs.define
class FakeCluster:
    reasons: list[dict] = attrs.field(factory=list)

    def readiness(self) -> list[dict]:
        return list(self.reasons)


class NodeServiceTests(SynchronousTestCase):
    """NodeService.health(): the body of GET /healthcheck, with ready and the reasons."""

    def node(self, **parts: Any) -> NodeService:
        return NodeService(NodeConfig(), Clock(), vitals=Vitals(**parts) if parts else None)

    def test_a_node_that_is_starting_is_not_ready(self) -> None:
        """Before start-up has finished the health check says so, and answers every field."""
        health = self.node().health()
        self.assertIs(health["ready"], False)
        self.assertEqual(codes(health["reasons"]), [STARTING])
        for field in ("node_id", "role", "leader_id", "term", "members", "scheduling_paused"):
            self.assertIn(field, health)

    def test_a_single_node_is_ready_unless_the_guard_pauses_it(self) -> None:
        """Alone, a started node is ready; paused by the resource guard it is not, and says why."""
        guard = FakeGuard()
        node = self.node(scheduler=FakeScheduler(), guard=guard)
        node.ready.callback(None)
        health = node.health()
        self.assertEqual((health["ready"], health["reasons"]), (True, []))
        self.assertEqual(health["members"][0]["role"], "leader")
        self.assertIs(health["members"][0]["reachable"], True)
        guard.paused, guard.reason = True, "memory 800/1000 MB (80%)"
        health = node.health()
        self.assertIs(health["ready"], False)
        (reason,) = health["reasons"]
        self.assertEqual(reason["code"], SCHEDULING_PAUSED)
        self.assertIn("memory 800/1000 MB", reason["message"])
        self.assertEqual((health["scheduling_paused"], health["active_jobs"]), (True, 3))

    def test_a_cluster_node_adds_the_guard_to_its_clusters_reasons(self) -> None:
        """The cluster's reasons come first, then the guard's."""
        cluster_reasons = [{"code": LEASE_LAPSED, "message": "m"}]
        node = self.node(
            scheduler=FakeScheduler(),
            guard=FakeGuard(paused=True, reason="cpu"),
            cluster=FakeCluster(cluster_reasons),
        )
        node.ready.callback(None)
        self.assertEqual(codes(node.readiness()), [LEASE_LAPSED, SCHEDULING_PAUSED])
