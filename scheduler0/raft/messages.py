"""
Values exchanged by the Raft core: log entries, cluster configurations and
the peer messages.

Everything here is an immutable ``attrs`` value so the core can hand the same
object to storage, the transport and the tests without copies.  Node ids are
strings; ``term`` and log indexes are ints starting at 1 (index 0 / term 0
is the empty log).  The wire form lives in :mod:`scheduler0.raft.codec`.
"""

from __future__ import annotations

import attrs

#: Entry kinds.  ``NORMAL`` carries client data for the state machine,
#: ``NOOP`` is the entry a new leader appends to commit its term, and
#: ``CONFIG`` carries an encoded :class:`ClusterConfig` (see
#: :func:`scheduler0.raft.codec.encode_config`).
NORMAL = 0
NOOP = 1
CONFIG = 2
ENTRY_KINDS = (NORMAL, NOOP, CONFIG)


@attrs.frozen
class Entry:
    """One replicated log entry."""

    term: int
    index: int
    kind: int = NORMAL
    data: bytes = b""
    #: Client request id used for de-duplication by the state machine
    #: (``""`` when the client gave none).
    request_id: str = ""


@attrs.frozen
class ClusterConfig:
    """Membership: voters decide elections and commits, learners only follow."""

    voters: frozenset[str]
    learners: frozenset[str] = frozenset()

    def members(self) -> frozenset[str]:
        """Every node the leader replicates to (voters and learners)."""
        return self.voters | self.learners


@attrs.frozen
class HardState:
    """What must be durable before a node says anything that depends on it."""

    term: int = 0
    vote: str = ""
    commit: int = 0


@attrs.frozen
class SnapshotMeta:
    """Identity of a snapshot: the last entry it covers and the config then."""

    index: int
    term: int
    config: ClusterConfig


@attrs.frozen
class VoteRequest:
    """RequestVote, or a pre-vote probe when ``pre_vote`` (term not bumped)."""

    term: int
    sender: str
    recipient: str
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    #: Set by a leadership-transfer election, so voters ignore their leader lease.
    transfer: bool = False


@attrs.frozen
class VoteResponse:
    term: int
    sender: str
    recipient: str
    granted: bool
    pre_vote: bool = False


@attrs.frozen
class AppendEntries:
    """Replication (and, with no entries, a probe)."""

    term: int
    sender: str
    recipient: str
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


@attrs.frozen
class AppendResponse:
    """Answer to AppendEntries.

    On success ``match_index`` is the last index known to match the leader.
    On rejection ``reject_index`` echoes the rejected ``prev_log_index`` and
    ``conflict_term``/``conflict_index`` let the leader skip a whole term at a
    time (``conflict_term`` 0 means the follower's log is simply too short and
    ``conflict_index`` is its last index + 1).
    """

    term: int
    sender: str
    recipient: str
    success: bool
    match_index: int = 0
    reject_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0


@attrs.frozen
class Heartbeat:
    """Leader liveness; carries a commit index the recipient already matches
    and a read context that ReadIndex reads wait on."""

    term: int
    sender: str
    recipient: str
    commit: int
    context: int = 0


@attrs.frozen
class HeartbeatResponse:
    term: int
    sender: str
    recipient: str
    context: int = 0


@attrs.frozen
class InstallSnapshot:
    """One chunk of a snapshot; ``offset`` is the byte position of ``data``."""

    term: int
    sender: str
    recipient: str
    last_index: int
    last_term: int
    voters: frozenset[str]
    learners: frozenset[str]
    offset: int
    data: bytes
    done: bool


@attrs.frozen
class SnapshotResponse:
    """Ack of a snapshot chunk: ``next_offset`` is the byte wanted next, or
    ``-1`` to ask the leader to restart from 0.  ``done`` once installed."""

    term: int
    sender: str
    recipient: str
    last_index: int
    next_offset: int
    done: bool = False


@attrs.frozen
class TimeoutNow:
    """Leadership transfer: the recipient should campaign at once."""

    term: int
    sender: str
    recipient: str


Message = (
    VoteRequest
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | SnapshotResponse
    | TimeoutNow
)

#: Stable wire tags; never renumber.
MESSAGE_TYPES: tuple[type[Message], ...] = (
    VoteRequest,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    SnapshotResponse,
    TimeoutNow,
)
