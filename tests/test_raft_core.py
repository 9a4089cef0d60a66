"""Unit tests of the sans-IO Raft core, driven message by message."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from scheduler0.raft import codec
from scheduler0.raft.core import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    REPLICATE,
    BootState,
    ProposalResult,
    RaftError,
    RaftNode,
    RaftSettings,
    ReadResult,
    Ready,
)
from scheduler0.raft.messages import (
    CONFIG,
    NOOP,
    AppendEntries,
    AppendResponse,
    ClusterConfig,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

ABC = ClusterConfig(frozenset({"a", "b", "c"}))
SETTINGS = RaftSettings(election_ticks=10, heartbeat_ticks=1, max_inflight=2, max_batch_entries=2)


def make(
    node_id: str = "a",
    config: ClusterConfig = ABC,
    boot: BootState | None = None,
    settings: RaftSettings = SETTINGS,
) -> RaftNode:
    return RaftNode.create(node_id, config, settings=settings, rng=random.Random(1), boot=boot)


def drain(node: RaftNode) -> list[Ready]:
    """Perform every pending Ready as an ideal adapter would (no I/O)."""
    out = []
    while node.has_ready():
        ready = node.ready()
        node.advance(ready)
        out.append(ready)
    return out


def sent(readies: list[Ready]) -> list:
    return [m for r in readies for m in r.messages]


def elect(node: RaftNode) -> list:
    """Make ``node`` leader of the next term with votes from its peers;
    returns the messages it sent once leader."""
    while node.role == FOLLOWER:
        node.tick()
    for peer in sorted(node.config.voters - {node.node_id}):
        if node.role == PRE_CANDIDATE:
            node.step(VoteResponse(node.term + 1, peer, node.node_id, True, pre_vote=True))
    for peer in sorted(node.config.voters - {node.node_id}):
        if node.role == CANDIDATE:
            node.step(VoteResponse(node.term, peer, node.node_id, True))
    assert node.role == LEADER, node.role
    return sent(drain(node))


def ack(node: RaftNode, peer: str, match: int) -> list[Ready]:
    node.step(AppendResponse(node.term, peer, node.node_id, True, match_index=match))
    return drain(node)


class ElectionTests(SynchronousTestCase):
    def test_single_voter_elects_itself_and_commits_its_noop(self) -> None:
        """A one-node cluster becomes leader on timeout and commits without peers."""
        node = make("a", ClusterConfig(frozenset({"a"})))
        for _ in range(20):
            node.tick()
        readies = drain(node)
        self.assertEqual(node.role, LEADER)
        committed = [e for r in readies for e in r.committed]
        self.assertEqual([(e.index, e.kind) for e in committed], [(1, NOOP)])

    def test_bootstrap_leader_logs_its_configured_voters(self) -> None:
        """
        With log_initial_config, a first leader appends its configured voter
        set, and a node that started with no voters learns it from the log.
        """
        settings = RaftSettings(election_ticks=10, heartbeat_ticks=1, log_initial_config=True)
        leader = make("a", ABC, settings=settings)
        messages = elect(leader)
        appends = [m for m in messages if isinstance(m, AppendEntries) and m.recipient == "b"]
        entries = [e for m in appends for e in m.entries]
        self.assertEqual([e.kind for e in entries][:2], [NOOP, CONFIG])
        joiner = make("b", ClusterConfig(frozenset()), settings=settings)
        self.assertEqual(joiner.config.voters, frozenset())
        for m in appends:
            joiner.step(m)
        drain(joiner)
        self.assertEqual(joiner.config.voters, ABC.voters)

    def test_a_lone_voter_answers_reads_without_peers(self) -> None:
        """A one-voter leader confirms a ReadIndex by itself, at its commit index."""
        node = make("a", ClusterConfig(frozenset({"a"})))
        for _ in range(20):
            node.tick()
        drain(node)
        self.assertEqual(node.role, LEADER)
        token = node.read_index()
        results = [r for ready in drain(node) for r in ready.results]
        self.assertEqual([(r.token, r.ok, r.index) for r in results], [(token, True, node.commit)])

    def test_initial_config_stays_out_of_the_log_by_default(self) -> None:
        """Without log_initial_config a first leader appends only its no-op."""
        leader = make("a", ABC)
        messages = elect(leader)
        kinds = [e.kind for m in messages if isinstance(m, AppendEntries) for e in m.entries]
        self.assertNotIn(CONFIG, kinds)

    def test_follower_waits_a_randomized_timeout_of_at_least_one_election(self) -> None:
        """No campaign starts before election_ticks ticks, one starts before 2x."""
        node = make()
        for _ in range(SETTINGS.election_ticks - 1):
            node.tick()
        self.assertEqual(node.role, FOLLOWER)
        for _ in range(SETTINGS.election_ticks):
            node.tick()
        self.assertEqual(node.role, PRE_CANDIDATE)

    def test_pre_vote_does_not_change_the_term(self) -> None:
        """A pre-candidate asks for term+1 without bumping or persisting its term."""
        node = make()
        for _ in range(30):
            node.tick()
            if node.role != FOLLOWER:
                break
        readies = drain(node)
        self.assertEqual(node.term, 0)
        requests = sent(readies)
        self.assertEqual({m.recipient for m in requests}, {"b", "c"})
        self.assertTrue(
            all(isinstance(m, VoteRequest) and m.pre_vote and m.term == 1 for m in requests)
        )
        self.assertTrue(all(r.hard_state is None for r in readies))

    def test_candidate_persists_term_and_vote_in_the_batch_that_sends_requests(self) -> None:
        """The Ready that carries the VoteRequests also carries the new term and self-vote."""
        node = make()
        while node.role == FOLLOWER:
            node.tick()
        drain(node)
        node.step(VoteResponse(1, "b", "a", True, pre_vote=True))
        self.assertEqual(node.role, CANDIDATE)
        ready = node.ready()
        self.assertEqual(ready.hard_state, HardState(1, "a", 0))
        self.assertTrue(any(isinstance(m, VoteRequest) and not m.pre_vote for m in ready.messages))

    def test_voter_persists_its_vote_before_the_grant_is_sent(self) -> None:
        """A granted vote is in the same Ready as the hard state recording it."""
        node = make("b")
        node.step(VoteRequest(1, "a", "b", 0, 0))
        ready = node.ready()
        self.assertEqual(ready.hard_state, HardState(1, "a", 0))
        self.assertEqual(ready.messages, (VoteResponse(1, "b", "a", True),))

    def test_node_votes_once_per_term(self) -> None:
        """A second candidate in the same term is refused."""
        node = make("b")
        node.step(VoteRequest(1, "a", "b", 0, 0))
        node.step(VoteRequest(1, "c", "b", 0, 0))
        responses = sent(drain(node))
        self.assertEqual([m.granted for m in responses], [True, False])

    def test_vote_survives_restart(self) -> None:
        """After a restart from its hard state, a node still refuses a rival in the voted term."""
        node = make("b")
        node.step(VoteRequest(1, "a", "b", 0, 0))
        hard = node.ready().hard_state
        restarted = make("b", boot=BootState(hard_state=hard))
        restarted.step(VoteRequest(1, "c", "b", 0, 0))
        self.assertEqual([m.granted for m in sent(drain(restarted))], [False])

    def test_vote_refused_to_candidate_with_older_log(self) -> None:
        """A candidate whose last log term is lower than the voter's is refused."""
        node = make("b", boot=BootState(HardState(2, "", 0), entries=(Entry(2, 1),)))
        node.step(VoteRequest(3, "a", "b", 5, 1))
        self.assertEqual([m.granted for m in sent(drain(node))], [False])
        self.assertEqual(node.term, 3)

    def test_follower_in_lease_ignores_higher_term_vote_requests(self) -> None:
        """A follower that just heard from its leader ignores a disruptive candidate."""
        node = make("b")
        node.step(Heartbeat(1, "a", "b", 0))
        drain(node)
        node.step(VoteRequest(5, "c", "b", 10, 4))
        self.assertEqual(sent(drain(node)), [])
        self.assertEqual(node.term, 1)

    def test_transfer_vote_request_bypasses_the_lease(self) -> None:
        """A leadership-transfer election is honoured even within the lease."""
        node = make("b")
        node.step(Heartbeat(1, "a", "b", 0))
        drain(node)
        node.step(VoteRequest(2, "c", "b", 0, 0, transfer=True))
        self.assertEqual([m.granted for m in sent(drain(node))], [True])

    def test_candidate_becomes_follower_on_append_from_leader_of_same_term(self) -> None:
        """Another node won the term: the candidate follows it."""
        node = make()
        while node.role == FOLLOWER:
            node.tick()
        node.step(VoteResponse(1, "b", "a", True, pre_vote=True))
        self.assertEqual(node.role, CANDIDATE)
        node.step(AppendEntries(1, "c", "a", 0, 0, (), 0))
        self.assertEqual((node.role, node.leader_id), (FOLLOWER, "c"))

    def test_stale_leader_is_told_the_newer_term(self) -> None:
        """An append from an older term is answered with the current term."""
        node = make("b", boot=BootState(HardState(3, "", 0)))
        node.step(AppendEntries(2, "a", "b", 0, 0, (), 0))
        replies = sent(drain(node))
        self.assertEqual(len(replies), 1)
        self.assertEqual((replies[0].term, replies[0].success), (3, False))
        leader = make("a", boot=BootState(HardState(1, "a", 0)))
        elect(leader)
        leader.step(replies[0])
        self.assertEqual((leader.role, leader.term), (FOLLOWER, 3))


class CheckQuorumTests(SynchronousTestCase):
    def test_leader_without_majority_steps_down_within_an_election_timeout(self) -> None:
        """A leader that hears from no follower for election_ticks steps down."""
        node = make()
        elect(node)
        for _ in range(2 * SETTINGS.election_ticks):
            node.tick()
            drain(node)
        self.assertEqual(node.role, FOLLOWER)

    def test_leader_hearing_from_a_majority_stays(self) -> None:
        """One responsive follower is enough in a three-node cluster."""
        node = make()
        elect(node)
        for _ in range(5 * SETTINGS.election_ticks):
            node.tick()
            for m in sent(drain(node)):
                if isinstance(m, Heartbeat) and m.recipient == "b":
                    node.step(HeartbeatResponse(m.term, "b", "a", m.context))
        self.assertEqual(node.role, LEADER)


class ReplicationTests(SynchronousTestCase):
    def test_proposal_on_follower_is_refused(self) -> None:
        """Only a leader takes writes."""
        self.assertIsNone(make().propose(b"x"))

    def test_leader_commits_when_a_majority_stored_the_entry(self) -> None:
        """An entry acknowledged by one of two followers commits and is answered ok."""
        node = make()
        elect(node)
        ack(node, "b", 1)
        token = node.propose(b"x", "req-1")
        drain(node)
        self.assertEqual(node.commit, 1)
        readies = ack(node, "b", 2)
        self.assertEqual(node.commit, 2)
        self.assertEqual([e.data for r in readies for e in r.committed], [b"x"])
        self.assertIn(ProposalResult(token, 2, True), [x for r in readies for x in r.results])

    def test_followers_hear_a_new_commit_index_at_once(self) -> None:
        """
        When an entry commits, each follower holding it is told the new
        commit index in the same batch (not at the next heartbeat), and
        only once.
        """
        node = make()
        elect(node)
        ack(node, "b", 1)
        ack(node, "c", 1)
        node.propose(b"x", "req-1")
        drain(node)
        readies = ack(node, "c", 2) + ack(node, "b", 2)
        told = [
            (m.recipient, m.commit)
            for m in sent(readies)
            if isinstance(m, Heartbeat) and m.commit == 2
        ]
        self.assertEqual(sorted(told), [("b", 2), ("c", 2)])
        self.assertEqual([m for m in sent(drain(node)) if isinstance(m, Heartbeat)], [])

    def test_leader_counts_itself_only_after_its_own_persist(self) -> None:
        """
        Before advance() reports the leader's write durable, a follower ack
        alone is no majority of 3.
        """
        node = make()
        elect(node)
        ack(node, "b", 1)
        node.propose(b"x")
        node.ready()  # not advanced: the leader's own copy is not durable yet
        node.step(AppendResponse(node.term, "b", "a", True, match_index=2))
        self.assertEqual(node.commit, 1)

    def test_leader_never_commits_old_term_entries_by_counting(self) -> None:
        """An entry of an older term replicated on a majority stays uncommitted until a
        current-term entry commits (Raft paper, figure 8)."""
        boot = BootState(HardState(2, "a", 0), entries=(Entry(2, 1),))
        node = make(boot=boot)
        elect(node)  # term 3, appends its noop at index 2
        node.step(AppendResponse(node.term, "b", "a", True, match_index=1))
        drain(node)
        self.assertEqual(node.commit, 0)
        ack(node, "b", 2)
        self.assertEqual(node.commit, 2)

    def test_pipelined_appends_are_bounded_by_the_inflight_window(self) -> None:
        """In replicate state at most max_inflight unacknowledged appends go to a follower."""
        node = make()
        elect(node)
        ack(node, "b", 1)
        self.assertEqual(node._progress["b"].state, REPLICATE)
        for i in range(20):
            node.propose(b"%d" % i)
        appends = [
            m for m in sent(drain(node)) if isinstance(m, AppendEntries) and m.recipient == "b"
        ]
        self.assertEqual(len(appends), SETTINGS.max_inflight)
        self.assertTrue(all(len(m.entries) == SETTINGS.max_batch_entries for m in appends))
        more = [
            m
            for m in sent(ack(node, "b", 3))
            if isinstance(m, AppendEntries) and m.recipient == "b"
        ]
        self.assertEqual(len(more), 1)

    def test_rejection_backtracks_a_whole_term_at_a_time(self) -> None:
        """A follower with many conflicting entries of one term is found in one round trip."""
        follower_log = tuple(Entry(2, i) for i in range(1, 31))
        follower = make("b", boot=BootState(HardState(2, "", 0), entries=follower_log))
        leader_log = tuple([Entry(1, 1)] + [Entry(3, i) for i in range(2, 41)])
        leader = make(
            "a",
            boot=BootState(HardState(3, "a", 1), entries=leader_log),
            settings=RaftSettings(election_ticks=10, max_batch_entries=100),
        )
        rounds = 0
        pending = [m for m in elect(leader) if m.recipient == "b"]
        while pending and rounds < 10:
            rounds += 1
            for m in pending:
                follower.step(m)
            replies = sent(drain(follower))
            for m in replies:
                leader.step(m)
            pending = [
                m
                for m in sent(drain(leader))
                if m.recipient == "b" and isinstance(m, AppendEntries)
            ]
            if (
                follower.last_index == leader.last_index
                and follower.term_at(follower.last_index) == leader.last_term
            ):
                break
        self.assertLessEqual(rounds, 3)
        self.assertEqual([follower.term_at(i) for i in (1, 2, 41)], [1, 3, 4])

    def test_follower_commit_index_never_decreases(self) -> None:
        """A heartbeat or append carrying a lower commit leaves the commit index alone."""
        entries = tuple(Entry(1, i) for i in range(1, 6))
        node = make("b", boot=BootState(HardState(1, "", 0), entries=entries))
        node.step(Heartbeat(1, "a", "b", 4))
        self.assertEqual(node.commit, 4)
        node.step(Heartbeat(1, "a", "b", 2))
        node.step(AppendEntries(1, "a", "b", 5, 1, (), 1))
        self.assertEqual(node.commit, 4)

    def test_follower_commit_is_bounded_by_what_it_matched(self) -> None:
        """leader_commit beyond the verified entries does not commit unverified ones."""
        entries = (Entry(1, 1), Entry(1, 2), Entry(1, 3))
        node = make("b", boot=BootState(HardState(2, "", 0), entries=entries))
        node.step(AppendEntries(2, "a", "b", 1, 1, (), 10))
        self.assertEqual(node.commit, 1)

    def test_conflicting_suffix_is_truncated_and_storage_told(self) -> None:
        """A follower replaces a conflicting suffix; the Ready says where to truncate."""
        entries = (Entry(1, 1), Entry(1, 2), Entry(1, 3))
        node = make("b", boot=BootState(HardState(1, "", 1), entries=entries))
        node.step(AppendEntries(2, "a", "b", 1, 1, (Entry(2, 2),), 1))
        ready = node.ready()
        self.assertEqual(ready.truncate_from, 2)
        self.assertEqual(ready.entries, (Entry(2, 2),))
        self.assertEqual(node.last_index, 2)

    def test_committed_entries_are_never_truncated(self) -> None:
        """Committed entries are skipped, never replaced, even if a message says otherwise."""
        entries = (Entry(1, 1), Entry(1, 2))
        node = make("b", boot=BootState(HardState(1, "", 2), entries=entries))
        node.step(AppendEntries(2, "a", "b", 0, 0, (Entry(1, 1), Entry(1, 2), Entry(2, 3)), 2))
        self.assertEqual([node.term_at(i) for i in (1, 2, 3)], [1, 1, 2])
        self.assertRaises(RaftError, node._truncate, 2)


class ReadIndexTests(SynchronousTestCase):
    def test_follower_refuses_reads(self) -> None:
        """ReadIndex on a follower fails at once."""
        node = make()
        token = node.read_index()
        self.assertEqual(node.ready().results, (ReadResult(token, False, reason="not leader"),))

    def test_read_waits_for_a_quorum_heartbeat_ack(self) -> None:
        """A read is released only after a majority confirms the leadership."""
        node = make()
        elect(node)
        ack(node, "b", 1)
        token = node.read_index()
        heartbeats = [m for m in sent(drain(node)) if isinstance(m, Heartbeat)]
        self.assertTrue(heartbeats)
        self.assertNotIn(token, [r.token for r in node.ready().results])
        node.step(HeartbeatResponse(node.term, "c", "a", heartbeats[0].context))
        self.assertEqual(
            [r for r in node.ready().results if r.token == token], [ReadResult(token, True, 1)]
        )

    def test_pending_reads_fail_when_leadership_is_lost(self) -> None:
        """A deposed leader answers its pending reads with a failure."""
        node = make()
        elect(node)
        ack(node, "b", 1)
        token = node.read_index()
        drain(node)
        node.step(AppendEntries(node.term + 1, "b", "a", 1, node.term, (), 1))
        self.assertIn(ReadResult(token, False, reason="leadership lost"), node.ready().results)


class MembershipAndTransferTests(SynchronousTestCase):
    def test_config_change_waits_for_a_committed_entry_of_the_term(self) -> None:
        """A fresh leader refuses membership changes until its noop commits."""
        node = make()
        elect(node)
        self.assertIsNone(node.change_membership(add_learner="d"))
        ack(node, "b", 1)
        self.assertIsNotNone(node.change_membership(add_learner="d"))
        self.assertEqual(node.config.learners, frozenset({"d"}))
        self.assertIsNone(node.change_membership(remove="c"))

    def test_change_membership_needs_exactly_one_change(self) -> None:
        """Asking for both or neither change is an error naming the arguments."""
        with self.assertRaisesRegex(ValueError, "add_learner or remove"):
            make().change_membership()

    def test_transfer_sends_timeout_now_to_an_up_to_date_target(self) -> None:
        """A caught-up target is told to campaign, and proposals are refused meanwhile."""
        node = make()
        elect(node)
        ack(node, "b", 1)
        self.assertTrue(node.transfer_leadership("b"))
        self.assertIn(TimeoutNow(node.term, "a", "b"), sent(drain(node)))
        self.assertIsNone(node.propose(b"x"))

    def test_timeout_now_starts_an_election_without_pre_vote(self) -> None:
        """The transfer target bumps its term and asks for votes with the transfer flag."""
        node = make("b")
        node.step(Heartbeat(1, "a", "b", 0))
        drain(node)
        node.step(TimeoutNow(1, "a", "b"))
        requests = [m for m in sent(drain(node)) if isinstance(m, VoteRequest)]
        self.assertEqual(node.term, 2)
        self.assertTrue(requests and all(m.transfer and not m.pre_vote for m in requests))


class SnapshotTests(SynchronousTestCase):
    def test_chunked_snapshot_is_installed_once_complete(self) -> None:
        """Chunks accumulate; the complete snapshot is handed to the adapter and acked done."""
        node = make("b")
        node.step(
            InstallSnapshot(
                1, "a", "b", 10, 1, frozenset({"a", "b", "c"}), frozenset(), 0, b"abc", False
            )
        )
        first = sent(drain(node))
        self.assertEqual(first, [SnapshotResponse(1, "b", "a", 10, 3)])
        node.step(
            InstallSnapshot(
                1, "a", "b", 10, 1, frozenset({"a", "b", "c"}), frozenset(), 3, b"def", True
            )
        )
        ready = node.ready()
        self.assertEqual(ready.snapshot[1], b"abcdef")
        self.assertEqual(ready.snapshot[0].index, 10)
        self.assertIn(SnapshotResponse(1, "b", "a", 10, 0, True), ready.messages)
        self.assertEqual((node.commit, node.applied, node.last_index), (10, 10, 10))

    def test_out_of_order_chunk_asks_for_the_right_offset(self) -> None:
        """A chunk that does not continue the buffer is answered with the offset wanted."""
        node = make("b")
        node.step(
            InstallSnapshot(1, "a", "b", 10, 1, frozenset({"a"}), frozenset(), 0, b"abc", False)
        )
        node.step(
            InstallSnapshot(1, "a", "b", 10, 1, frozenset({"a"}), frozenset(), 6, b"ghi", False)
        )
        self.assertEqual(sent(drain(node))[-1].next_offset, 3)

    def test_snapshot_done_compacts_keeping_trailing_entries(self) -> None:
        """After a snapshot at applied index i, entries up to i - trailing are dropped."""
        node = make(
            "a",
            ClusterConfig(frozenset({"a"})),
            settings=RaftSettings(election_ticks=10, snapshot_trailing=2, snapshot_threshold=5),
        )
        for _ in range(20):
            node.tick()
        drain(node)
        for i in range(6):
            node.propose(b"%d" % i)
        readies = drain(node)
        self.assertTrue(any(r.want_snapshot for r in readies))
        meta = node.snapshot_done(node.applied, b"state")
        self.assertEqual(meta.index, 7)
        self.assertEqual(node.ready().compact_to, 5)
        self.assertEqual(node.first_index, 6)

    def test_large_entries_ask_for_a_snapshot_and_bound_the_trailing_log(self) -> None:
        """
        A few large entries ask for a snapshot long before the entry-count
        threshold, and the entries kept behind it are bounded in bytes.
        """
        settings = RaftSettings(
            election_ticks=10,
            snapshot_threshold=1000,
            snapshot_trailing=100,
            snapshot_threshold_bytes=3000,
            snapshot_trailing_bytes=2500,
        )
        node = make("a", ClusterConfig(frozenset({"a"})), settings=settings)
        for _ in range(20):
            node.tick()
        drain(node)
        node.propose(b"x" * 1000)
        node.propose(b"x" * 1000)
        self.assertFalse(any(r.want_snapshot for r in drain(node)))
        node.propose(b"x" * 1000)
        self.assertTrue(any(r.want_snapshot for r in drain(node)))
        meta = node.snapshot_done(node.applied, b"state")
        self.assertEqual(meta.index, 4)
        # Two of the three 1000-byte entries fit in 2500 bytes of trailing log.
        self.assertEqual(node.first_index, 3)
        self.assertFalse(any(r.want_snapshot for r in drain(node)))

    def test_snapshot_beyond_applied_is_refused(self) -> None:
        """The core refuses a snapshot of state it has not applied."""
        self.assertRaises(RaftError, make().snapshot_done, 5, b"x")


class SettingsAndCodecTests(SynchronousTestCase):
    def test_bad_settings_name_the_field(self) -> None:
        """Invalid settings are rejected with the offending field named."""
        with self.assertRaisesRegex(ValueError, "election_ticks"):
            RaftSettings(election_ticks=0)
        with self.assertRaisesRegex(ValueError, "heartbeat_ticks"):
            RaftSettings(election_ticks=5, heartbeat_ticks=5)

    def test_every_message_type_round_trips(self) -> None:
        """encode/decode is the identity on every message kind."""
        entries = (Entry(3, 7, NOOP), Entry(3, 8, 0, b"\x00\xff", "req-\u00e9"))
        samples = [
            VoteRequest(3, "a", "b", 7, 2, True, True),
            VoteResponse(3, "b", "a", True, True),
            AppendEntries(3, "a", "b", 6, 2, entries, 5),
            AppendResponse(3, "b", "a", False, 0, 6, 2, 4),
            Heartbeat(3, "a", "b", 5, 9),
            HeartbeatResponse(3, "b", "a", 9),
            InstallSnapshot(
                3, "a", "b", 100, 3, frozenset({"a", "b"}), frozenset({"c"}), 64, b"xyz", True
            ),
            SnapshotResponse(3, "b", "a", 100, -1, False),
            TimeoutNow(3, "a", "b"),
        ]
        for message in samples:
            self.assertEqual(codec.decode(codec.encode(message)), message)

    def test_malformed_bytes_raise_decode_error(self) -> None:
        """Truncated, padded, unknown or garbage payloads raise DecodeError."""
        good = codec.encode(AppendEntries(3, "a", "b", 6, 2, (Entry(3, 7, 0, b"x"),), 5))
        for bad in (
            b"",
            b"\x01",
            good[:-1],
            good + b"\x00",
            b"\x02" + good[1:],
            b"\x01\x63" + good[2:],
            b"\x01\x00" + b"\xff" * 20,
        ):
            self.assertRaises(codec.DecodeError, codec.decode, bad)

    def test_truncated_field_is_named(self) -> None:
        """The DecodeError message names the field where the bytes ran out."""
        good = codec.encode(Heartbeat(3, "a", "b", 5, 9))
        with self.assertRaisesRegex(codec.DecodeError, "'context'"):
            codec.decode(good[:-2])

    def test_config_round_trips(self) -> None:
        """Config entries encode voters and learners."""
        config = ClusterConfig(frozenset({"a", "b"}), frozenset({"c"}))
        self.assertEqual(codec.decode_config(codec.encode_config(config)), config)
        self.assertRaises(codec.DecodeError, codec.decode_config, b"")
