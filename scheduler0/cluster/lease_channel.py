"""
Lease renewals over the Raft links (SPEC §7).

A follower renews its lease every 0.1 s. Over peer HTTP that was a treq
request, a Klein route, JSON and HTTP Basic on both ends for a few bytes of
news; here the renewal is a small message on the Raft TCP links the nodes
keep open anyway, already authenticated by their handshake (the sender's
node id is the one the handshake proved). The follower sends a
L{LeaseRequest} on its link to the leader, the leader answers with
L{grant_lease<scheduler0.cluster.node.ClusterNode.grant_lease>}'s verdict as
a L{LeaseAnswer} on its link back, and the answer carries the request's
sequence number: the follower counts a lease from the moment *that*
request left it, so a late answer to an old request extends the lease no
further than the old request's departure plus C{lease_s}, and an answer
matching no request in flight is ignored.

Wire form: both messages ride in ordinary data frames of the transport, so
they reach C{on_message} beside the Raft messages; the node tells them
apart by the first byte, L{TAG} (C{"L"}). A Raft message made by
L{scheduler0.raft.codec.encode} always starts with the codec's C{VERSION}
(1), so neither side can mistake one for the other. After the tag comes a
kind byte (C{"q"} request, C{"a"} answer) and fixed big-endian fields:

    request  seq u64, paused bool, applied_index i64                 (19 bytes)
    answer   seq u64, granted bool, term i64, lease_s f64, must_apply i64  (35 bytes)

and, for the clock offset (L{scheduler0.cluster.clock_offset}), a timed pair
of kinds (C{"Q"}, C{"A"}): the request adds C{skewed} (bool: the follower's
clock is out of bounds), the answer adds C{leader_time} (f64: the leader's
wall clock when it answered):

    timed request  seq u64, paused bool, applied_index i64, skewed bool   (20 bytes)
    timed answer   ... as the answer ..., leader_time f64                 (43 bytes)

A leader answers a timed request with a timed answer and a plain one with
a plain one. A follower sends timed requests only to a leader whose HTTP
answer carried C{leader_time} (L{HTTP_TIME_KEY}), which a leader of the
release before never sends; a follower of that release never sends a timed
request, so it is never sent a timed answer, and its offset is never
measured (unknown, which is not out of bounds).

Upgrading from a release without this channel: an old node hands every data
frame to its Raft codec, which rejects one starting with C{"L"} as an
unsupported version; its driver then counts the message and logs a warning,
and keeps the connection. Sent every 0.1 s, that would fill the old node's
log, so the channel is negotiated and an old node is never sent one:

- The leader's HTTP answer to C{POST /peer/lease} (still served: old
  followers renew there) says C{"lease_channel": 1}. An old follower ignores
  the key and goes on over HTTP; the leader never sends a lease message
  unasked.
- A follower starts each leader's term over HTTP and moves to the channel
  only after a granted HTTP answer of that leader in that term carried the
  key; an old leader's answers do not, so a new follower keeps renewing over
  HTTP with an old leader.
- A follower whose channel requests go unanswered for L{PATIENCE_S} (one
  and a half renewal intervals: the network, or a leader just restarted on
  the old release in the same term) goes back to HTTP at once and tries the
  channel again only after HTTP offers it anew and a back-off has passed
  (L{RETRY_S}, doubling up to L{RETRY_MAX_S} while the channel keeps
  failing).

This module holds the wire form and the follower's bookkeeping (pure: no
reactor, times are passed in); L{scheduler0.cluster.node} does the sending.
"""

from __future__ import annotations

import random
import struct
from math import inf

import attrs

#: First byte of every lease message; never the first byte of a Raft message.
TAG = ord("L")
_KIND_REQUEST = ord("q")
_KIND_ANSWER = ord("a")
_KIND_TIMED_REQUEST = ord("Q")
_KIND_TIMED_ANSWER = ord("A")
_REQUEST = struct.Struct(">BBQ?q")
_ANSWER = struct.Struct(">BBQ?qdq")
_TIMED_REQUEST = struct.Struct(">BBQ?q?")
_TIMED_ANSWER = struct.Struct(">BBQ?qdqd")

#: The key, and its value, by which a leader's HTTP lease answer offers the channel.
HTTP_OFFER_KEY = "lease_channel"
HTTP_OFFER = 1
#: The key of a leader's HTTP lease answer (and refusal) that holds its wall
#: time; a follower's HTTP request says its clock is out of bounds with L{HTTP_SKEWED_KEY}.
HTTP_TIME_KEY = "leader_time"
HTTP_SKEWED_KEY = "clock_skewed"

#: A follower whose channel requests went unanswered this long renews over HTTP.
PATIENCE_S = 0.15
#: How long a follower that gave up on the channel stays on HTTP (the first time).
RETRY_S = 5.0
RETRY_MAX_S = 60.0

_SEQ_LIMIT = 1 << 64


class LeaseDecodeError(ValueError):
    """The bytes are not a well-formed lease message."""


@attrs.frozen
class LeaseRequest:
    """A follower asks the leader for its lease (what C{POST /peer/lease} carries)."""

    seq: int
    paused: bool
    applied_index: int
    #: Is the follower's clock out of bounds? (None: a plain request, which does not say.)
    skewed: bool | None = None


@attrs.frozen
class LeaseAnswer:
    """The leader's verdict on the request C{seq} (C{lease_s} etc. are 0 when refused)."""

    seq: int
    granted: bool
    term: int = 0
    lease_s: float = 0.0
    must_apply: int = 0
    #: The leader's wall clock as it answered (None: a plain answer).
    leader_time: float | None = None

    @classmethod
    def from_grant(cls, seq: int, grant: dict) -> LeaseAnswer:
        """The answer to request C{seq} from what C{ClusterNode.grant_lease} returned."""
        stamp = grant.get(HTTP_TIME_KEY)
        leader_time = float(stamp) if stamp is not None else None
        if not grant.get("granted"):
            return cls(seq, False, leader_time=leader_time)
        return cls(
            seq,
            True,
            int(grant["term"]),
            float(grant["lease_s"]),
            int(grant.get("must_apply", 0)),
            leader_time,
        )


def is_lease_message(payload: bytes) -> bool:
    """Is this payload off the Raft link a lease message (and not a Raft message)?"""
    return bool(payload) and payload[0] == TAG


def encode(message: LeaseRequest | LeaseAnswer) -> bytes:
    """The wire form of a lease message."""
    if isinstance(message, LeaseRequest):
        if message.skewed is not None:
            return _TIMED_REQUEST.pack(
                TAG,
                _KIND_TIMED_REQUEST,
                message.seq,
                message.paused,
                message.applied_index,
                message.skewed,
            )
        return _REQUEST.pack(TAG, _KIND_REQUEST, message.seq, message.paused, message.applied_index)
    if message.leader_time is not None:
        return _TIMED_ANSWER.pack(
            TAG,
            _KIND_TIMED_ANSWER,
            message.seq,
            message.granted,
            message.term,
            message.lease_s,
            message.must_apply,
            message.leader_time,
        )
    return _ANSWER.pack(
        TAG,
        _KIND_ANSWER,
        message.seq,
        message.granted,
        message.term,
        message.lease_s,
        message.must_apply,
    )


def decode(payload: bytes) -> LeaseRequest | LeaseAnswer:
    """Parse what L{encode} made; L{LeaseDecodeError} for anything else."""
    if len(payload) < 2 or payload[0] != TAG:
        raise LeaseDecodeError("not a lease message")
    try:
        if payload[1] == _KIND_REQUEST:
            _, _, seq, paused, applied = _REQUEST.unpack(payload)
            return LeaseRequest(seq, paused, applied)
        if payload[1] == _KIND_ANSWER:
            _, _, seq, granted, term, lease_s, must_apply = _ANSWER.unpack(payload)
            return LeaseAnswer(seq, granted, term, lease_s, must_apply)
        if payload[1] == _KIND_TIMED_REQUEST:
            _, _, seq, paused, applied, skewed = _TIMED_REQUEST.unpack(payload)
            return LeaseRequest(seq, paused, applied, skewed)
        if payload[1] == _KIND_TIMED_ANSWER:
            _, _, seq, granted, term, lease_s, must_apply, at = _TIMED_ANSWER.unpack(payload)
            return LeaseAnswer(seq, granted, term, lease_s, must_apply, at)
    except struct.error:
        raise LeaseDecodeError(f"a lease message of {len(payload)} bytes") from None
    raise LeaseDecodeError(f"unknown lease message kind {payload[1]}")


@attrs.frozen
class Sent:
    """A channel request in flight: when it left, to which leader, in which term."""

    at: float
    leader: int
    term: int


def _first_seq() -> int:
    # A random start: an answer meant for this node's previous process (a
    # leader's queued frame delivered after a quick restart) matches no
    # request of this one.
    return random.SystemRandom().getrandbits(62)


@attrs.define(eq=False)
class FollowerChannel:
    """
    A follower's side of the channel: which leader (in which term) offered
    it, the requests in flight by sequence number, and when to give up on it.
    """

    next_seq: int = attrs.field(factory=_first_seq)
    #: (leader, term) whose granted HTTP answer offered the channel, if any.
    offered: tuple[int, int] | None = None
    #: Did that answer carry the leader's time (so it takes timed requests)?
    timed: bool = False
    pending: dict[int, Sent] = attrs.field(factory=dict)
    #: When the oldest request sent since the last answer left (None: none).
    unanswered_since: float | None = None
    failures: int = 0
    retry_at: float = -inf
    #: Counters for the curious (and the tests).
    requests: int = 0
    answers: int = 0
    fallbacks: int = 0

    def offer(self, leader: int, term: int, now: float, timed: bool = False) -> None:
        """
        A granted HTTP answer of C{leader} in C{term} offered the channel
        (C{timed}: it carried the leader's time, so timed requests are understood).
        """
        if now < self.retry_at or self.offered == (leader, term):
            return
        self.offered = (leader, term)
        self.timed = timed
        self.unanswered_since = None

    def usable(self, leader: int, term: int) -> bool:
        """Renew over the channel with C{leader} in C{term}?"""
        return self.offered == (leader, term)

    def silent(self, now: float) -> bool:
        """Have the requests sent since the last answer gone unanswered too long?"""
        return self.unanswered_since is not None and now - self.unanswered_since > PATIENCE_S

    def give_up(self, now: float) -> float:
        """Back to HTTP; return how long before the channel may be offered again."""
        self.offered = None
        self.unanswered_since = None
        self.failures += 1
        self.fallbacks += 1
        delay = min(RETRY_MAX_S, RETRY_S * 2.0 ** min(self.failures - 1, 16))
        self.retry_at = now + delay
        return delay

    def request(self, leader: int, term: int, now: float, keep_s: float) -> int:
        """
        Record a request leaving now for C{leader}; return its sequence
        number. Requests older than C{keep_s} (a lease: an answer to them
        could extend nothing) are forgotten.
        """
        for seq in [s for s, sent in self.pending.items() if now - sent.at > keep_s]:
            del self.pending[seq]
        seq = self.next_seq
        self.next_seq = (seq + 1) % _SEQ_LIMIT
        self.pending[seq] = Sent(now, leader, term)
        if self.unanswered_since is None:
            self.unanswered_since = now
        self.requests += 1
        return seq

    def answered(self, sender: int, seq: int) -> Sent | None:
        """
        The request an answer from C{sender} belongs to, or None when it
        belongs to none in flight (answered already, forgotten, or sent to
        another node). Any such answer shows the channel works.
        """
        sent = self.pending.get(seq)
        if sent is None or sent.leader != sender:
            return None
        del self.pending[seq]
        later = [other.at for other in self.pending.values() if other.at > sent.at]
        self.unanswered_since = min(later) if later else None
        self.failures = 0
        self.answers += 1
        return sent
