"""
Unit tests of the leases (scheduler0.cluster.lease, in a ClusterNode), on
task.Clock with a fake Raft core, driver, transport and peer client: when a
node may fire, what a leader grants, when it may take a silent node's jobs,
and how renewals travel (over the Raft links, lease_channel, or peer HTTP).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from scheduler0.cluster import lease_channel
from scheduler0.cluster.lease import LEASE_MARGIN_S, LEASE_RENEW_S, RAFT_SILENCE_S, STUCK_S
from scheduler0.cluster.lease_channel import (
    PATIENCE_S,
    RETRY_S,
    FollowerChannel,
    LeaseAnswer,
    LeaseDecodeError,
    LeaseRequest,
)
from scheduler0.cluster.node import SNAPSHOT_BYTES, ClusterNode, raft_settings
from scheduler0.cluster.peer import PeerAPI
from scheduler0.raft import codec
from scheduler0.raft.core import LEADER
from scheduler0.raft.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from scheduler0.store.commands import Command
from tests.support.api import Admin, basic
from tests.support.cluster import FakeCore, FakeDriver, FakePeers, FakeTransport


@attrs.frozen
class Config:
    node_id: int = 1


class NodeFixture(SynchronousTestCase):
    """Node 1 of members 1, 2 and 3 on a Clock, with fakes around it."""

    #: How far this node's wall clock is from the Clock (its monotonic clock).
    skew = 0.0

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = FakeCore()
        self.driver = FakeDriver()
        self.peers = FakePeers()
        self.transport = FakeTransport()
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
            lease_s=1.0,
            monotonic=self.clock.seconds,
            wall=lambda: self.clock.seconds() + self.skew,
        )

    def lead_with_grants(self, *node_ids: int) -> None:
        """Node 1 leads term 2 (node 3 led term 1), its lease confirmed, leases granted."""
        self.core.leader_id = "3"
        self.node.leases.notice_leadership()
        self.core.role, self.core.leader_id, self.core.term = LEADER, "1", 2
        self.node.leases.renew()
        self.driver.barriers[0].callback(1)
        for node_id in node_ids:
            self.node.grant_lease(node_id, False, 0)


class LeaseTests(NodeFixture):
    def test_a_follower_fires_only_after_applying_what_its_lease_needs(self) -> None:
        """
        A granted lease runs from when the request left, and is usable only
        once the node applied the index the leader named.
        """
        self.core.leader_id = "2"
        self.node.leases.renew()
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
        self.node.leases.renew()
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
        self.node.leases.renew()
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
        self.node.leases.notice_leadership()
        self.core.role, self.core.leader_id, self.core.term = LEADER, "1", 2
        self.node.leases.renew()
        self.driver.barriers[0].callback(1)
        self.node.grant_lease(2, True, 0)
        live, gone = self.node.live_nodes()
        self.assertEqual(live, {1: False, 2: True})
        self.assertEqual((gone(3), gone(2), gone(None), gone(4)), (True, False, True, False))
        self.clock.advance(1.0 + LEASE_MARGIN_S + 0.01)
        live, gone = self.node.live_nodes()
        self.assertEqual(live, {})
        self.assertEqual((gone(2), gone(4)), (True, True))

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

        self.node.forwarding.raft = AppendingRaft()  # type: ignore[assignment]
        self.assertTrue(self.node.lease_valid())
        self.node.forwarding.propose_here(Command("update_job", {"uuid": "j"}))
        self.assertFalse(self.node.lease_valid())
        self.assertEqual(self.node.grant_lease(2, False, 5)["must_apply"], 6)
        self.driver.applied_index = 6
        self.assertTrue(self.node.lease_valid())
        self.node.forwarding.propose_here(Command("commit_executions", {}))
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
            self.node.leases.renew()
            self.clock.advance(LEASE_RENEW_S / 2)
        self.assertEqual(len(self.peers.requests), 1)
        self.peers.requests[0][2].callback({"granted": True, "lease_s": 1.0})
        for _ in range(10):
            self.node.leases.renew()
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
        self.node.leases.renew()
        self.peers.requests[-1][2].callback({"granted": True, "lease_s": 1.0})
        self.clock.advance(LEASE_RENEW_S + 0.0015)
        self.node.leases.renew()
        self.peers.requests[-1][2].callback({"granted": True, "lease_s": 1.0})
        self.clock.advance(LEASE_RENEW_S - 0.0015)
        self.node.leases.renew()
        self.assertEqual(len(self.peers.requests), 3)


#: A granted HTTP answer of a leader of this release in term 1 (it offers the Raft link).
OFFERING = {"granted": True, "lease_s": 1.0, "term": 1, "must_apply": 0, "lease_channel": 1}


class RaftLinkRenewalTests(NodeFixture):
    """A follower's renewals over the Raft link to its leader (lease_channel)."""

    def setUp(self) -> None:
        super().setUp()
        self.core.leader_id = "2"

    def renew_after(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.node.leases.renew()

    def offered(self) -> None:
        """At 0 the renewal goes over HTTP; the leader's answer offers the link."""
        self.node.leases.renew()
        self.peers.requests[-1][2].callback(dict(OFFERING))

    def requests_sent(self) -> list[LeaseRequest]:
        """The lease requests sent on the Raft links so far (all to node 2)."""
        self.assertEqual(
            {to for to, _ in self.transport.sent}, {2} if self.transport.sent else set()
        )
        requests = [lease_channel.decode(payload) for _, payload in self.transport.sent]
        assert all(isinstance(r, LeaseRequest) for r in requests)
        return requests  # type: ignore[return-value]

    def answer(self, request: LeaseRequest, granted: bool = True, **fields: object) -> None:
        """Node 2 (or C{sender}) answers C{request} on its Raft link now."""
        sender = int(fields.pop("sender", 2))  # type: ignore[call-overload]
        values = {"term": 1, "lease_s": 1.0, "must_apply": 0} | fields
        message = LeaseAnswer(request.seq, granted, **values)  # type: ignore[arg-type]
        self.node.leases.lease_message(sender, lease_channel.encode(message))

    def lease_ends(self) -> float:
        return self.node.leases._lease_until

    def test_a_lease_over_the_raft_link_counts_from_the_request_leaving(self) -> None:
        """
        Once the leader's HTTP answer offered it, a follower renews on its
        Raft link; a granted answer runs lease_s from when that request left,
        usable once the node applied what the answer names.
        """
        self.offered()
        self.renew_after(LEASE_RENEW_S)
        self.assertEqual(len(self.peers.requests), 1)
        (request,) = self.requests_sent()
        self.assertEqual((request.paused, request.applied_index), (False, 0))
        self.clock.advance(0.3)
        self.answer(request, must_apply=4)
        self.assertFalse(self.node.lease_valid())
        self.driver.applied_index = 4
        self.assertTrue(self.node.lease_valid())
        self.assertEqual(self.lease_ends(), LEASE_RENEW_S + 1.0)
        self.clock.advance(LEASE_RENEW_S + 1.0 - 0.4 - 0.01)
        self.assertTrue(self.node.lease_valid())
        self.clock.advance(0.02)
        self.assertFalse(self.node.lease_valid())

    def test_a_late_answer_counts_from_its_own_request(self) -> None:
        """
        Answers are matched to requests by sequence number: a late answer to
        an older request extends the lease only to that request's departure
        plus lease_s; an answer matching no request in flight (answered
        already, unknown, or from a node it was not sent to) extends nothing.
        """
        self.offered()
        self.renew_after(LEASE_RENEW_S)
        self.renew_after(LEASE_RENEW_S)
        older, newer = self.requests_sent()
        self.assertNotEqual(older.seq, newer.seq)
        self.clock.advance(0.05)
        self.answer(newer, sender=3)
        self.answer(LeaseRequest(newer.seq + 1000, False, 0))
        self.assertEqual(self.lease_ends(), 1.0)
        self.answer(older)
        self.assertEqual(self.lease_ends(), 0.1 + 1.0)
        self.answer(older)
        self.assertEqual(self.lease_ends(), 0.1 + 1.0)
        self.clock.advance(0.85)
        self.answer(newer)
        self.assertEqual(self.lease_ends(), 0.2 + 1.0)
        self.clock.advance(0.1)
        self.answer(newer)
        self.assertEqual(self.lease_ends(), 0.2 + 1.0)

    def test_an_answer_from_a_node_no_longer_leading_extends_nothing(self) -> None:
        """
        A grant from the node the request went to counts only while that
        node is still the leader this node knows, in the term of the request.
        """
        self.offered()
        self.renew_after(LEASE_RENEW_S)
        self.renew_after(LEASE_RENEW_S)
        first, second = self.requests_sent()
        self.answer(first, term=2)
        self.assertEqual(self.lease_ends(), 1.0)
        self.core.term, self.core.leader_id = 2, "3"
        self.answer(second)
        self.assertEqual(self.lease_ends(), 1.0)

    def test_a_refusal_extends_nothing(self) -> None:
        self.offered()
        self.renew_after(LEASE_RENEW_S)
        (request,) = self.requests_sent()
        self.answer(request, granted=False)
        self.assertEqual(self.lease_ends(), 1.0)

    def test_renewals_go_on_every_interval_without_waiting_for_answers(self) -> None:
        """
        Over the link a renewal does not wait for the answer to the last
        one; a new leader (or a new term) starts over HTTP again.
        """
        self.offered()
        for _ in range(5):
            self.renew_after(LEASE_RENEW_S)
            self.answer(self.requests_sent()[-1])
        self.assertEqual(len(self.requests_sent()), 5)
        self.assertEqual(len(self.peers.requests), 1)
        self.core.term, self.core.leader_id = 2, "3"
        self.renew_after(LEASE_RENEW_S)
        self.assertEqual(len(self.peers.requests), 2)
        self.assertEqual(self.peers.requests[-1][0], 3)

    def test_a_follower_falls_back_to_http_when_the_link_does_not_answer(self) -> None:
        """
        Requests unanswered on the link for PATIENCE_S send the next renewal
        over HTTP, and the follower stays there for RETRY_S even though the
        leader offers the link again; after that it tries the link anew. The
        lease never lapses meanwhile.
        """
        self.offered()
        self.renew_after(LEASE_RENEW_S)
        self.renew_after(LEASE_RENEW_S)
        self.assertEqual(len(self.requests_sent()), 2)
        self.assertGreater(2 * LEASE_RENEW_S, PATIENCE_S)
        self.renew_after(LEASE_RENEW_S)
        self.assertEqual(len(self.requests_sent()), 2)
        self.assertEqual(len(self.peers.requests), 2)
        self.assertEqual(self.node.leases._lease_channel.fallbacks, 1)
        while self.clock.seconds() < 0.3 + RETRY_S:
            self.peers.requests[-1][2].callback(dict(OFFERING))
            self.assertTrue(self.node.lease_valid())
            self.renew_after(LEASE_RENEW_S)
        self.assertEqual(len(self.requests_sent()), 2)
        self.peers.requests[-1][2].callback(dict(OFFERING))
        http_renewals = len(self.peers.requests)
        self.renew_after(LEASE_RENEW_S)
        self.assertEqual(len(self.requests_sent()), 3)
        self.assertEqual(len(self.peers.requests), http_renewals)

    def test_with_a_leader_of_the_earlier_release_renewals_stay_on_http(self) -> None:
        """
        A leader whose HTTP answers do not offer the link (the release
        before it) is never sent a lease message, which it would log as a
        malformed Raft message.
        """
        for _ in range(20):
            self.node.leases.renew()
            answer = dict(OFFERING)
            del answer["lease_channel"]
            self.peers.requests[-1][2].callback(answer)
            self.assertTrue(self.node.lease_valid())
            self.clock.advance(LEASE_RENEW_S)
        self.assertEqual(self.transport.sent, [])
        self.assertEqual(len(self.peers.requests), 20)


class RaftLinkGrantTests(NodeFixture):
    """The leader's side of renewals over the Raft links."""

    def ask(self, node_id: int, seq: int = 41, paused: bool = False) -> LeaseAnswer:
        self.transport.sent.clear()
        request = LeaseRequest(seq, paused, 0)
        self.node.leases.lease_message(node_id, lease_channel.encode(request))
        ((to, payload),) = self.transport.sent
        self.assertEqual(to, node_id)
        answer = lease_channel.decode(payload)
        assert isinstance(answer, LeaseAnswer)
        self.assertEqual(answer.seq, seq)
        return answer

    def test_a_leader_grants_over_the_link_and_records_the_grant(self) -> None:
        """
        A request on the link is answered with grant_lease's verdict under
        the request's sequence number, and the grant is recorded, so the
        follower counts as live.
        """
        self.lead_with_grants()
        self.clock.advance(0.05)
        answer = self.ask(2, seq=2**63 + 5, paused=True)
        self.assertEqual(answer, LeaseAnswer(2**63 + 5, True, 2, 1.0, 0))
        self.assertEqual(self.node.leases._grants[2], {"at": 0.05, "paused": True})
        live, gone = self.node.live_nodes()
        self.assertEqual(live[2], True)
        self.assertFalse(gone(2))

    def test_no_grant_without_the_leaders_lease_or_to_non_members_or_moving_nodes(self) -> None:
        """
        A follower, a leader whose own lease lapsed, a request from a
        non-member or from a node whose jobs are moving off: refused, nothing
        recorded.
        """
        self.core.leader_id = "2"
        self.assertFalse(self.ask(3).granted)
        self.lead_with_grants()
        self.node.moving_off.add(3)
        self.assertFalse(self.ask(3).granted)
        self.assertFalse(self.ask(9).granted)
        self.assertTrue(self.ask(2).granted)
        self.clock.advance(self.node.leader_lease_s)
        self.assertFalse(self.ask(2).granted)
        self.assertEqual(sorted(self.node.leases._grants), [1, 2])
        self.assertEqual(self.node.leases._grants[2]["at"], 0.0)

    def test_the_http_lease_answer_offers_the_link(self) -> None:
        """
        POST /peer/lease answers grant_lease's verdict plus the offer; a
        follower of the earlier release reads only the keys it knows.
        """
        asked = []

        def grant_lease(node_id: int, paused: bool, applied_index: int, skewed: bool) -> dict:
            asked.append((node_id, paused, applied_index, skewed))
            return {"granted": True, "lease_s": 1.0, "term": 4, "must_apply": 3}

        api = PeerAPI(SimpleNamespace(grant_lease=grant_lease), Admin())
        treq = StubTreq(api.resource())
        for body in (
            {"node_id": 2, "paused": True, "applied_index": 7},
            {"node_id": 2, "paused": True, "applied_index": 7, "clock_skewed": True},
        ):
            d = treq.post("http://node.test/peer/lease", json=body, headers=basic())
            treq.flush()
            response = self.successResultOf(d)
            self.assertEqual(response.code, 200)
            data = json.loads(self.successResultOf(response.content()))["data"]
        # A follower of the earlier release does not say: its clock is not judged.
        self.assertEqual(asked, [(2, True, 7, False), (2, True, 7, True)])
        self.assertEqual(
            data,
            {"granted": True, "lease_s": 1.0, "term": 4, "must_apply": 3, "lease_channel": 1},
        )


class ClockSkewTests(NodeFixture):
    """A follower's clock offset from its leader's, and what a node out of bounds does."""

    def answer_http(self, granted: bool = True, leader_time: float | None = None) -> dict:
        """Node 2 answers the last HTTP renewal 0.02 s after it left, its clock stamped."""
        (_, request, d) = self.peers.requests[-1]
        self.clock.advance(0.02)
        answer: dict = {"granted": granted, "lease_s": 1.0, "term": 1, "must_apply": 0}
        answer["leader_time"] = self.clock.seconds() - 0.01 if leader_time is None else leader_time
        d.callback(answer)
        return request

    def renew(self) -> dict:
        self.clock.advance(LEASE_RENEW_S)
        self.node.leases.renew()
        return self.answer_http()

    def test_a_follower_out_of_bounds_fires_nothing_until_its_clock_agrees(self) -> None:
        """
        The leader's answers place its clock; once this node's wall clock is
        further than MaxClockOffsetMs from it (a step here shows at once),
        the node fires nothing, logs it once, tells the leader in every
        request, and is not ready (clock_skew). A grant to a request sent
        before that is not taken. When its clock agrees again it logs that
        once and fires from the leader's next grant.
        """
        self.core.leader_id = "2"
        self.node.leases.renew()
        self.assertIs(self.answer_http()["clock_skewed"], False)
        self.assertTrue(self.node.lease_valid())
        self.assertAlmostEqual(self.node.clock_offset(), 0.0)
        self.assertAlmostEqual(self.node.leader_time(), self.clock.seconds())
        self.clock.advance(LEASE_RENEW_S)
        self.node.leases.renew()
        in_flight = self.peers.requests[-1][2]
        with capturedLogs() as events:
            self.skew = 2.0
            self.assertFalse(self.node.lease_valid())
            self.assertFalse(self.node.lease_valid())
            self.assertAlmostEqual(self.node.clock_offset(), 2.0)
            # The stamps of jobs made here still follow the leader's clock.
            self.assertAlmostEqual(self.node.leader_time(), self.clock.seconds())
            in_flight.callback({"granted": True, "lease_s": 1.0, "term": 1, "must_apply": 0})
            self.assertFalse(self.node.lease_valid())
            (reason,) = [r for r in self.node.readiness() if r["code"] == "clock_skew"]
            self.assertIn("2.000 s ahead of the leader's (node 2)", reason["message"])
            self.assertIn("MaxClockOffsetMs (500 ms)", reason["message"])
            self.assertAlmostEqual(self.node.clock_offset(), 2.0)
            self.assertIs(self.renew()["clock_skewed"], True)
            self.assertFalse(self.node.lease_valid())
            self.skew = -0.45
            self.assertFalse(self.node.lease_valid())
            self.skew = 0.1
            self.assertFalse(self.node.lease_valid())  # its old lease ended
            self.assertNotIn("clock_skew", [r["code"] for r in self.node.readiness()])
            self.assertIs(self.renew()["clock_skewed"], False)
            self.assertTrue(self.node.lease_valid())
        said = [e.get("event") for e in events if e.get("event", "").startswith("clock")]
        self.assertEqual(said, ["clock_skew", "clock_agrees"])

    def test_a_leader_refuses_a_node_out_of_bounds_and_moves_its_jobs_at_once(self) -> None:
        """
        A node that says its clock is out of bounds gets no lease, and the
        leader counts it gone at once (it stopped firing before it said so),
        even while it still talks Raft; its answer still carries the
        leader's time. Once it says its clock agrees it is granted again.
        """
        self.lead_with_grants(2, 3)
        self.node.heard_from(2)
        refusal = self.node.grant_lease(2, False, 0, True)
        self.assertEqual((refusal["granted"], refusal["reason"]), (False, "clock skew"))
        self.assertEqual(refusal["leader_time"], self.clock.seconds())
        live, gone = self.node.live_nodes()
        self.assertNotIn(2, live)
        self.assertEqual((gone(2), gone(3)), (True, False))
        self.assertEqual(self.node.skewed_nodes, {2})
        self.assertTrue(self.node.grant_lease(2, False, 0)["granted"])
        live, gone = self.node.live_nodes()
        self.assertFalse(gone(2))
        self.assertEqual(self.node.skewed_nodes, set())
        # The leader is the reference.
        self.assertEqual(self.node.clock_offset(), 0.0)

    def test_timed_messages_only_between_nodes_of_this_release(self) -> None:
        """
        A leader answers a plain request (a follower of the earlier release)
        with a plain answer, a timed one with its time; a follower sends
        timed requests only to a leader whose HTTP answer carried its time,
        and measures its offset from the timed answers.
        """
        self.lead_with_grants()
        for skewed, size in ((None, 35), (False, 43)):
            self.transport.sent.clear()
            request = LeaseRequest(5, False, 0, skewed)
            self.node.leases.lease_message(2, lease_channel.encode(request))
            ((_, payload),) = self.transport.sent
            self.assertEqual(len(payload), size)
            answer = lease_channel.decode(payload)
            assert isinstance(answer, LeaseAnswer)
            self.assertTrue(answer.granted)
            self.assertEqual(answer.leader_time, None if skewed is None else self.clock.seconds())

        def channel_requests(offer: dict) -> list:
            node = ClusterNode(
                self.clock,
                Config(),
                state=None,
                admin=None,
                storage=None,
                core=FakeCore(leader_id="2"),  # type: ignore[arg-type]
                raft=None,  # type: ignore[arg-type]
                driver=FakeDriver(),  # type: ignore[arg-type]
                transport=FakeTransport(),
                peers=FakePeers(),  # type: ignore[arg-type]
                monotonic=self.clock.seconds,
                wall=lambda: self.clock.seconds() + 3.0,
            )
            node.leases.renew()
            node.peers.requests[-1][2].callback(dict(offer))  # type: ignore[attr-defined]
            self.clock.advance(LEASE_RENEW_S)
            node.leases.renew()
            ((_, payload),) = node.transport.sent
            request = lease_channel.decode(payload)
            assert isinstance(request, LeaseRequest)
            self.clock.advance(0.01)
            stamp = None if request.skewed is None else self.clock.seconds()
            answer = LeaseAnswer(request.seq, True, 1, 1.0, 0, stamp)
            node.leases.lease_message(2, lease_channel.encode(answer))
            # A node out of bounds takes no grant (the leader would refuse it anyway).
            self.assertEqual(node.lease_valid(), request.skewed is not True)
            return [request.skewed, node.clock_offset()]

        # The earlier release's leader: plain requests, an offset never measured.
        self.assertEqual(channel_requests(OFFERING), [None, None])
        skewed, offset = channel_requests({**OFFERING, "leader_time": self.clock.seconds()})
        self.assertIs(skewed, True)
        self.assertAlmostEqual(offset, 3.0, places=2)


class LeaseWireTests(SynchronousTestCase):
    def test_lease_messages_round_trip_and_are_small(self) -> None:
        request = LeaseRequest(2**64 - 1, True, 123_456)
        answer = LeaseAnswer(7, True, 9, 0.5, 2**40)
        refusal = LeaseAnswer.from_grant(8, {"granted": False, "leader_id": 2})
        self.assertEqual(refusal, LeaseAnswer(8, False, 0, 0.0, 0))
        for message in (request, answer, refusal):
            payload = lease_channel.encode(message)
            self.assertLessEqual(len(payload), 35)
            self.assertEqual(lease_channel.decode(payload), message)

    def test_malformed_lease_messages_are_refused(self) -> None:
        good = lease_channel.encode(LeaseAnswer(7, True, 9, 0.5, 3))
        for bad in (b"", b"L", good[:-1], good + b"\x00", b"Lx" + good[2:], b"\x01" + good[1:]):
            self.assertRaises(LeaseDecodeError, lease_channel.decode, bad)

    def test_no_raft_message_is_taken_for_a_lease_message(self) -> None:
        """
        Every Raft message starts with the codec's version byte, never the
        lease tag, and the codec refuses a lease message (the earlier
        release's driver counts and logs it, and keeps its connection).
        """
        entries = (Entry(3, 7, 1), Entry(3, 8, 0, b"L", "L"))
        samples: list[Message] = [
            VoteRequest(76, "L", "b", 7, 2, True, True),
            VoteResponse(3, "b", "a", True, True),
            AppendEntries(3, "a", "b", 6, 2, entries, 5),
            AppendResponse(3, "b", "a", False, 0, 6, 2, 4),
            Heartbeat(3, "a", "b", 5, 9),
            HeartbeatResponse(3, "b", "a", 9),
            InstallSnapshot(3, "a", "b", 100, 3, frozenset({"a"}), frozenset(), 64, b"L", True),
            SnapshotResponse(3, "b", "a", 100, -1, False),
            TimeoutNow(3, "a", "b"),
        ]
        self.assertEqual({type(m) for m in samples}, set(MESSAGE_TYPES))
        for message in samples:
            self.assertFalse(lease_channel.is_lease_message(codec.encode(message)))
        for lease in (LeaseRequest(1, False, 0), LeaseAnswer(1, True, 1, 1.0, 0)):
            payload = lease_channel.encode(lease)
            self.assertTrue(lease_channel.is_lease_message(payload))
            self.assertRaises(codec.DecodeError, codec.decode, payload)

    def test_each_follower_process_numbers_its_requests_from_a_random_start(self) -> None:
        """An answer queued for a restarted follower's old process matches none of the new's."""
        starts = {FollowerChannel().next_seq for _ in range(5)}
        self.assertEqual(len(starts), 5)


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
