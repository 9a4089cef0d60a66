"""
Leases (SPEC §7): a node may fire only while its lease is valid. A leader's
own lease rests on a heartbeat round a majority answered; it grants the
others theirs, which followers renew over the Raft links
(L{scheduler0.cluster.lease_channel}), or over peer HTTP with a leader that
does not offer that. The leader's view of who holds a lease decides whose
jobs move (L{Leases.live_nodes}).

The lease answers also carry the leader's wall time, from which a follower
measures how far its own clock is from the leader's
(L{scheduler0.cluster.clock_offset}); a follower whose offset is beyond
C{MaxClockOffsetMs} fires nothing, says so in its requests, and the leader
moves its jobs at once, until its clock agrees again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from math import inf
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from scheduler0.cluster import lease_channel
from scheduler0.cluster.clock_offset import ClockOffset
from scheduler0.cluster.lease_channel import (
    HTTP_SKEWED_KEY,
    HTTP_TIME_KEY,
    FollowerChannel,
    LeaseAnswer,
    LeaseRequest,
)
from scheduler0.cluster.peer import PeerClient
from scheduler0.logs import LeadershipEvents
from scheduler0.raft.core import LEADER, RaftNode
from scheduler0.raft.driver import RaftDriver
from scheduler0.raft.transport import IRaftTransport

log = Logger()

# The Raft clock: every Raft timeout is a whole number of these ticks.
TICK_S = 0.05
# How often a node renews its lease, and how much longer than a lease the
# leader waits before it takes a silent node's jobs away.
LEASE_RENEW_S = 0.1
LEASE_MARGIN_S = 0.15
# How often a leader confirms its own lease (a heartbeat round).
LEADER_RENEW_S = 0.1
# A node whose Raft messages reached the leader this recently is running,
# even if its lease lapsed: it is slow (an overloaded machine), not gone.
RAFT_SILENCE_S = 0.5
# How long such a node may stay without a lease before its jobs move anyway.
STUCK_S = 5.0


@attrs.define(eq=False)
class Leases:
    """
    This node's lease and, while it leads, the leases it grants. C{renew}
    runs every LEADER_RENEW_S (C{start}/C{stop}); C{lease_valid} is asked
    on every slot fire, so it only compares numbers.
    """

    clock: IReactorTime
    node_id: int
    core: RaftNode
    driver: RaftDriver
    transport: IRaftTransport
    peers: PeerClient
    # The members now, and when a Raft message from a node last arrived
    # (monotonic; -inf: never), both kept by the membership.
    member_ids: Callable[[], set[int]]
    last_heard: Callable[[int], float]
    is_paused: Callable[[], bool] = lambda: False
    lease_s: float = 1.0
    # Leases are durations on this process's monotonic clock, so a wall
    # clock stepped back cannot stretch one.
    monotonic: Callable[[], float] = time.monotonic
    # The wall clock the leader stamps its answers with and a follower
    # compares with them (None: the reactor's, which is the wall clock).
    wall: Callable[[], float] | None = None
    #: s, the largest offset from the leader's clock at which a node fires (MaxClockOffsetMs).
    max_clock_offset_s: float = 0.5
    #: Nodes whose jobs the leader is moving away right now (no lease for them).
    moving_off: set[int] = attrs.field(factory=set)
    #: The leader's view: nodes that said their clock is out of bounds (they
    #: fire nothing; their jobs move at once).
    skewed_nodes: set[int] = attrs.field(factory=set)
    #: This node's clock offset from its leader's, as measured from the lease answers.
    clock_offset: ClockOffset = attrs.field(
        default=attrs.Factory(lambda self: ClockOffset(self.max_clock_offset_s), takes_self=True)
    )
    # Grants to requests that left before this (monotonic) are not taken:
    # the node's clock went out of bounds after they left.
    _no_grant_before: float = -inf
    _lease_until: float = 0.0
    _leader_since: float | None = None
    _leader_term: int = 0
    _grants: dict[int, dict] = attrs.field(factory=dict)
    _renewing: LoopingCall | None = None
    _confirming: bool = False
    _last_follower_renewal: float = float("-inf")
    _renewal_in_flight: bool = False
    # The follower's renewals over the Raft links (lease_channel).
    _lease_channel: FollowerChannel = attrs.field(factory=FollowerChannel)
    # (node id, term) of the last leader this node followed.
    _previous_leader: tuple[int, int] | None = None
    # The latest log index that changed what fires, and this leader's first
    # entry: a node must have applied both before it uses a lease.
    _last_change_index: int = 0
    _term_start_index: int = 0
    _lease_requires: int = 0
    _lease_was_valid: bool = False
    # When lease_valid() last found the node free to fire (monotonic; -inf:
    # not since it started): the health check tells a node a few entries
    # behind its lease for a moment from one that cannot fire for a while.
    _could_fire_at: float = -inf
    # Logs one event per change of role, term or leader.
    _leadership: LeadershipEvents | None = None

    def start(self) -> None:
        """Renew every LEADER_RENEW_S from now on."""
        self._renewing = LoopingCall(self.renew)
        self._renewing.clock = self.clock
        self._renewing.start(LEADER_RENEW_S, now=False)

    def stop(self) -> None:
        if self._renewing is not None and self._renewing.running:
            self._renewing.stop()

    @property
    def _leader_id(self) -> int | None:
        leader = self.core.leader_id
        return int(leader) if leader else None

    def _wall_time(self) -> float:
        return self.wall() if self.wall is not None else self.clock.seconds()

    def lease_valid(self) -> bool:
        """
        May this node fire now? Its lease (from the current leader, or its
        own) runs, it has applied what the lease was granted against, and
        its clock agrees with the leader's.
        """
        now = self.monotonic()
        valid = (
            now < self._lease_until
            and self.driver.applied_index >= self._lease_requires
            and not self.clock_out_of_bounds(now)
        )
        if valid:
            self._could_fire_at = now
        if valid != self._lease_was_valid:
            self._lease_was_valid = valid
            log.info(
                "lease {state} (applied {applied}, needs {needs})",
                state="held: firing" if valid else "lapsed: not firing",
                applied=self.driver.applied_index,
                needs=self._lease_requires,
            )
        return valid

    def clock_out_of_bounds(self, now: float | None = None) -> bool:
        """
        Is this node's clock further from its leader's than
        C{max_clock_offset_s}? (Judged now; a leader is the reference.)
        """
        clock = self.clock_offset
        if self.core.role == LEADER:
            if clock.reference():
                self._clock_agrees("it leads now: its clock is the reference")
            return False
        if now is None:
            now = self.monotonic()
        change = clock.judge(self._wall_time(), now)
        if change is True:
            self._clock_disagrees(now)
        elif change is False:
            self._clock_agrees(f"offset {clock.last_offset:+.3f} s")
        return clock.skewed

    def _clock_disagrees(self, now: float) -> None:
        """The clock went out of bounds: the lease ends now, and so do the grants in flight."""
        self._lease_until = min(self._lease_until, now)
        self._no_grant_before = now
        log.warn(
            "this node's clock is {offset:+.3f} s from the leader's (node {leader}), "
            "beyond MaxClockOffsetMs ({bound:g} ms): it fires none of its jobs, which move to "
            "other nodes, until its clock agrees again",
            offset=self.clock_offset.last_offset,
            leader=self._leader_id,
            bound=self.max_clock_offset_s * 1000,
            event="clock_skew",
        )

    def _clock_agrees(self, how: str) -> None:
        log.info(
            "this node's clock agrees with the leader's again ({how}): it fires "
            "again once the leader grants it a lease",
            how=how,
            event="clock_agrees",
        )

    @property
    def lease_requires(self) -> int:
        """The log index this node must have applied before it uses its lease."""
        return self._lease_requires

    @property
    def could_fire_at(self) -> float:
        """When C{lease_valid} last found the node free to fire (monotonic; -inf: never)."""
        return self._could_fire_at

    def lease_left(self, now: float) -> float | None:
        """Seconds its lease still runs at C{now} (None: it never had one)."""
        return self._lease_until - now if self._lease_until else None

    def last_grant_at(self, node_id: int) -> float | None:
        """When this leader last granted C{node_id} a lease (monotonic; None: not this term)."""
        grant = self._grants.get(node_id)
        return grant["at"] if grant else None

    @property
    def leader_lease_s(self) -> float:
        """
        How long after a heartbeat round a majority answered no other leader
        can exist: a follower refuses to vote for (election_ticks - 1) ticks
        after hearing from its leader; one more tick is kept as a margin.
        """
        return (self.core.settings.election_ticks - 2) * TICK_S

    def change_appended(self, index: int) -> None:
        """
        This leader appended a change to what fires at C{index}: it counts
        from now, not once this node applied it (see Forwarding.propose_here).
        """
        self._last_change_index = max(self._last_change_index, index)
        self._lease_requires = max(self._lease_requires, index)

    def change_applied(self, index: int) -> None:
        """This node applied a change to what fires at C{index}."""
        self._last_change_index = max(self._last_change_index, index)

    def notice_leadership(self) -> None:
        """Follow this node's role, term and leader (and log each change)."""
        if self._leadership is None:
            self._leadership = LeadershipEvents(self.node_id)
        leader = self._leader_id
        self._leadership.observe(self.core.role, self.core.term, leader)
        now = self.monotonic()
        if self.core.role == LEADER:
            if self._leader_since is None or self._leader_term != self.core.term:
                self._leader_since = now
                self._leader_term = self.core.term
                self._grants = {}
                self.skewed_nodes = set()
                # Everything before this term's first entry may hold moves
                # (changes appended in an earlier term of its own, perhaps
                # since overwritten, are covered by it).
                self._term_start_index = self.core.last_index
                self._last_change_index = 0
            return
        if self._leader_since is not None:
            # Stepped down: what it must have applied now comes with the next
            # leader's grants (its own last appends may never be committed).
            self._lease_requires = 0
        self._leader_since = None
        if leader is not None and leader != self.node_id:
            self._previous_leader = (leader, self.core.term)

    def renew(self) -> None:
        """The renewal loop's body: confirm a leader's own lease, or ask the leader for one."""
        self.notice_leadership()
        # Sampled here too, so the health check knows when the node last
        # could fire even while the scheduler has nothing to fire.
        self.lease_valid()
        now = self.monotonic()
        if self.core.role == LEADER:
            # A leader's own lease: a heartbeat round begun now that a
            # majority answers proves no other leader can be elected for
            # leader_lease_s from now.
            if self._confirming:
                return
            self._confirming = True

            def confirmed(_: Any) -> None:
                if self.core.role == LEADER:
                    self._lease_until = max(self._lease_until, now + self.leader_lease_s)
                    # It fires from its own copy only once that holds every
                    # entry of the terms before its own.
                    self._lease_requires = max(self._lease_requires, self._term_start_index)
                    self._grants[self.node_id] = {
                        "at": self.monotonic(),
                        "paused": self.is_paused(),
                    }

            # Only the round: what the state machine still has to apply does
            # not hold up the lease (grants and the followers need only time).
            d = self.driver.confirm_leadership()
            d.addCallbacks(confirmed, lambda f: None)
            d.addBoth(lambda _: setattr(self, "_confirming", False))
            return
        # The loop wakes every LEASE_RENEW_S on the reactor's clock, give or
        # take its latency: a tenth of slack, or some 4 wakings in 10 would
        # find the last renewal a hair too recent and skip.
        if now - self._last_follower_renewal < 0.9 * LEASE_RENEW_S or self._renewal_in_flight:
            return
        self._last_follower_renewal = now
        leader = self._leader_id
        if leader is None:
            return
        channel = self._lease_channel
        term = self.core.term
        if channel.usable(leader, term):
            if not channel.silent(now):
                seq = channel.request(leader, term, now, self.lease_s)
                request = LeaseRequest(
                    seq,
                    self.is_paused(),
                    self.driver.applied_index,
                    self.clock_offset.skewed if channel.timed else None,
                )
                self.transport.send(leader, lease_channel.encode(request))
                return
            delay = channel.give_up(now)
            log.info(
                "lease renewals over the Raft link to node {leader} went unanswered: "
                "renewing over HTTP (the link is tried again in {delay:g} s at the earliest)",
                leader=leader,
                delay=delay,
            )
        self._renew_over_http(leader, now)

    def _renew_over_http(self, leader: int, now: float) -> None:
        request = {
            "node_id": self.node_id,
            "paused": self.is_paused(),
            "applied_index": self.driver.applied_index,
            HTTP_SKEWED_KEY: self.clock_offset.skewed,
        }
        # An answer later than a lease would be of no use (a lease counts from
        # when its request left); one renewal at a time.
        self._renewal_in_flight = True
        d = self.peers.lease(leader, request, self.lease_s)

        def answered(result: object) -> object:
            self._renewal_in_flight = False
            return result

        d.addBoth(answered)

        def granted(answer: dict) -> None:
            stamp = answer.get(HTTP_TIME_KEY)
            if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
                self.clock_offset.reading(leader, float(stamp), now, self.monotonic())
            if answer.get("granted"):
                self._take_grant(now, float(answer["lease_s"]), int(answer.get("must_apply", 0)))
                # A leader of this release offers the Raft link for the next ones.
                if answer.get(lease_channel.HTTP_OFFER_KEY) == lease_channel.HTTP_OFFER:
                    self._lease_channel.offer(
                        leader, int(answer["term"]), self.monotonic(), timed=stamp is not None
                    )

        d.addCallbacks(granted, lambda f: None)

    def _take_grant(self, sent_at: float, lease_s: float, must_apply: int) -> None:
        """A lease granted to a request that left at C{sent_at}."""
        if sent_at < self._no_grant_before or self.clock_out_of_bounds():
            return
        # Counted from when the request left, not when the answer came.
        self._lease_until = max(self._lease_until, sent_at + lease_s)
        self._lease_requires = max(self._lease_requires, must_apply)

    def lease_message(self, sender: int, payload: bytes) -> None:
        """
        A lease message off the Raft link from C{sender} (authenticated by
        the link's handshake): a leader answers a request with
        L{grant_lease}'s verdict; a follower takes a granted answer to one
        of its requests in flight if C{sender} still leads the term the
        request was sent in.
        """
        try:
            message = lease_channel.decode(payload)
        except lease_channel.LeaseDecodeError as e:
            log.warn(
                "dropped a malformed lease message from node {peer}: {why}", peer=sender, why=e
            )
            return
        if isinstance(message, LeaseRequest):
            grant = self.grant_lease(
                sender, message.paused, message.applied_index, bool(message.skewed)
            )
            answer = LeaseAnswer.from_grant(message.seq, grant)
            if message.skewed is None:
                # A plain request (a follower of the release before): a plain answer.
                answer = attrs.evolve(answer, leader_time=None)
            self.transport.send(sender, lease_channel.encode(answer))
            return
        sent = self._lease_channel.answered(sender, message.seq)
        if sent is None:
            return
        if message.leader_time is not None and self._leader_id == sender:
            self.clock_offset.reading(sender, message.leader_time, sent.at, self.monotonic())
        if not message.granted:
            return
        if (
            self.core.role == LEADER
            or message.term != sent.term
            or (self._leader_id, self.core.term) != (sender, sent.term)
        ):
            # Not (any more) the leader this node knows for that term.
            return
        self._take_grant(sent.at, message.lease_s, message.must_apply)

    def grant_lease(
        self, node_id: int, paused: bool, applied_index: int, skewed: bool = False
    ) -> dict:
        """
        The leader's side of a renewal. Granted only while this leader's own
        lease runs, so every lease it grants ends within lease_s of the
        moment another leader could be elected. Every answer of a leader
        carries its wall time (the followers' clock reference); a node whose
        clock is out of bounds (C{skewed}) is refused, and counts as holding
        no lease from now on (it stopped firing before it said so).
        """
        self.notice_leadership()
        if self.core.role != LEADER:
            return {"granted": False, "leader_id": self._leader_id}
        stamp = {HTTP_TIME_KEY: self._wall_time()}
        refused = {"granted": False, "leader_id": self._leader_id, **stamp}
        if skewed:
            self._grants.pop(node_id, None)
            if node_id not in self.skewed_nodes:
                self.skewed_nodes.add(node_id)
                log.info("node {node} says its clock is out of bounds: its jobs move", node=node_id)
            return {**refused, "reason": "clock skew"}
        self.skewed_nodes.discard(node_id)
        # The leader's own time lease bounds every grant; whether its state
        # machine has caught up matters only to its own firing.
        if self.monotonic() >= self._lease_until:
            return refused
        if node_id not in self.member_ids():
            return {**refused, "reason": "not a member"}
        if node_id in self.moving_off:
            # Judged gone, its jobs are being moved: a lease now would let it
            # fire them beside the new owners until it applies the move.
            return {**refused, "reason": "jobs moving"}
        self._grants[node_id] = {"at": self.monotonic(), "paused": paused}
        return {
            **stamp,
            "granted": True,
            "lease_s": self.lease_s,
            "term": self.core.term,
            # The node may use the lease only once it has applied every
            # change to what fires that this leader knows of (a node back
            # from a crash or partition would fire from an older copy).
            "must_apply": max(self._term_start_index, self._last_change_index),
        }

    def live_nodes(self) -> tuple[dict[int, bool], Callable[[Any], bool]] | None:
        """
        The leader's view: (node id -> paused, for each node whose lease it
        granted recently; a test of whether a job's owner surely holds no
        lease now), or None when this node does not lead.

        A node it has not heard from may still hold a lease an earlier
        leader granted, for up to lease_s after this leader was elected;
        the leader of the term just before this one held only its own
        lease, which ended before this election could happen.
        """
        self.notice_leadership()
        if self.core.role != LEADER or self._leader_since is None:
            return None
        now = self.monotonic()
        horizon = self.lease_s + LEASE_MARGIN_S
        live = {
            node: grant["paused"]
            for node, grant in self._grants.items()
            if now - grant["at"] <= horizon
        }
        settled = now - self._leader_since >= horizon
        previous = self._previous_leader
        just_before = (
            previous[0] if previous is not None and previous[1] == self.core.term - 1 else None
        )

        def gone(owner: Any) -> bool:
            if owner is None:
                return True
            if owner in live:
                return False
            if owner in self.skewed_nodes:
                # It said its clock is out of bounds, so it fires nothing.
                return True
            if not (settled or owner == just_before):
                return False
            # Its lease has surely lapsed. If it still talks Raft to this
            # leader it is running but slow (its renewals are late on an
            # overloaded machine): it fires again once it renews, and moving
            # its jobs would only add the catch-up work and the duplicates of
            # a move to that load. Only a node stuck like that for STUCK_S
            # loses its jobs anyway.
            if owner == self.node_id or now - self.last_heard(owner) < RAFT_SILENCE_S:
                grant = self._grants.get(owner)
                lapsed_since = max(
                    grant["at"] + self.lease_s if grant else -inf, self._leader_since or -inf
                )
                return now - lapsed_since >= STUCK_S
            return True

        return live, gone

    def tenure(self) -> float:
        """Seconds this node has led in its current term (0 when it does not lead)."""
        self.notice_leadership()
        if self._leader_since is None:
            return 0.0
        return self.monotonic() - self._leader_since
