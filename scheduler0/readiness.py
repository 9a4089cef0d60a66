"""
Is this node ready, and if not, why: what C{GET /healthcheck} answers
(200 or 503) and C{scheduler0 status} exits with.

A node is ready when it can serve writes (a leader is known and has a
quorum, and its data directory can store them) and fire its jobs (its
lease is valid, the resource guard does not pause it). These are pure
functions of what the node observed;
L{scheduler0.cluster.node.ClusterNode} and L{scheduler0.service.NodeService}
gather the observations.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import inf

import attrs

#: The node's parts are not all up yet.
STARTING = "starting"
#: No leader is known (an election is under way, or cannot succeed).
NO_LEADER = "no_leader"
#: The leader has not heard from a majority of the voters, or this follower
#: from its leader, for longer than an election timeout.
NO_QUORUM = "no_quorum"
#: This node holds no valid lease: it fires none of its jobs.
LEASE_LAPSED = "lease_lapsed"
#: Its lease runs, but it has not applied what the lease was granted
#: against, for longer than an election timeout (a node back from a crash).
CATCHING_UP = "catching_up"
#: The resource guard (MaxMemory/MaxCPU) pauses scheduling on this node.
SCHEDULING_PAUSED = "scheduling_paused"
#: This node's wall clock is further from the leader's than MaxClockOffsetMs:
#: it fires none of its jobs (they move) until its clock agrees again.
CLOCK_SKEW = "clock_skew"

#: The data directory cannot store writes (below DataDirMinFreeMB, full or
#: read-only): writes answer 507 until space returns.
WRITES_REFUSED = "writes_refused"
#: Execution records cannot be written (a full disk) and
#: ExecutionRecordsMaxPending of them wait in memory: it fires no new slot.
RECORDS_HELD = "records_held"

CODES = (
    STARTING,
    NO_LEADER,
    NO_QUORUM,
    LEASE_LAPSED,
    CATCHING_UP,
    SCHEDULING_PAUSED,
    WRITES_REFUSED,
    RECORDS_HELD,
    CLOCK_SKEW,
)


def reason(code: str, message: str) -> dict:
    """One entry of C{reasons} in the health check: a code and a sentence."""
    return {"code": code, "message": message}


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


@attrs.frozen
class ClusterObservation:
    """What a cluster node knows of itself now, for L{cluster_reasons}."""

    node_id: int
    leader_id: int | None
    voters: frozenset[int]
    #: Seconds since a Raft message from each member arrived (missing: never).
    silence: Mapping[int, float]
    election_s: float
    #: Seconds its lease still runs (<= 0: lapsed that long ago); None: it
    #: has held none since it started.
    lease_left: float | None
    applied_index: int
    #: The index its lease may be used from (see ClusterNode.lease_valid).
    lease_requires: int
    #: Seconds since it last could fire (inf: not since it started).
    unable_to_fire_s: float
    #: Its wall clock minus the leader's (None: not measured), the bound on
    #: it, and whether the node is out of bounds now.
    clock_offset_s: float | None = None
    max_clock_offset_s: float = 0.5
    clock_out_of_bounds: bool = False


def cluster_reasons(seen: ClusterObservation) -> list[dict]:
    """
    Why a cluster node is not ready (empty: it is). Brief, expected
    transients do not count: quorum is judged over a whole election timeout,
    and a node a few entries behind its lease only once that has lasted an
    election timeout; a lapsed lease counts at once, since nothing fires.
    """
    out = []
    window = seen.election_s
    if seen.leader_id is None:
        out.append(
            reason(
                NO_LEADER,
                "no leader is known: an election is under way, or a majority of the voters "
                "cannot be reached",
            )
        )
    elif seen.leader_id == seen.node_id:
        heard = sorted(
            v for v in seen.voters if v == seen.node_id or seen.silence.get(v, inf) <= window
        )
        needed = len(seen.voters) // 2 + 1
        if len(heard) < needed:
            nodes = ", ".join(str(v) for v in heard) or "none"
            out.append(
                reason(
                    NO_QUORUM,
                    f"this leader heard from {len(heard)} of {len(seen.voters)} voters (nodes "
                    f"{nodes}) within an election timeout ({_seconds(window)}); a quorum is "
                    f"{needed}",
                )
            )
    else:
        silent = seen.silence.get(seen.leader_id, inf)
        if silent > window:
            since = "ever" if silent == inf else f"for {_seconds(silent)}"
            out.append(
                reason(
                    NO_QUORUM,
                    f"nothing heard from the leader (node {seen.leader_id}) {since}, longer "
                    f"than an election timeout ({_seconds(window)})",
                )
            )
    if seen.clock_out_of_bounds:
        offset = seen.clock_offset_s
        how = (
            f"{abs(offset):.3f} s {'ahead of' if offset > 0 else 'behind'}"
            if offset is not None
            else "out of bounds from"
        )
        out.append(
            reason(
                CLOCK_SKEW,
                f"this node's clock is {how} the leader's (node {seen.leader_id}), beyond "
                f"MaxClockOffsetMs ({seen.max_clock_offset_s * 1000:g} ms): it fires none of "
                "its jobs (they move to other nodes) until its clock agrees again",
            )
        )
    if seen.lease_left is None or seen.lease_left <= 0:
        what = (
            "this node holds no lease yet"
            if seen.lease_left is None
            else f"this node's lease lapsed {_seconds(abs(seen.lease_left))} ago"
        )
        out.append(
            reason(LEASE_LAPSED, f"{what}: it fires none of its jobs until the leader grants one")
        )
    elif seen.applied_index < seen.lease_requires and seen.unable_to_fire_s > window:
        out.append(
            reason(
                CATCHING_UP,
                f"this node has applied the log up to {seen.applied_index} and fires nothing "
                f"until it reaches {seen.lease_requires}",
            )
        )
    return out


def writes_refused_reason(message: str) -> dict:
    """The reason of a node whose data directory cannot store writes (C{message} says why)."""
    return reason(WRITES_REFUSED, f"writes are refused: {message}; they resume when space returns")


def records_held(hold: Mapping) -> dict | None:
    """
    The C{records_held} reason, from the execution records' hold state
    (L{scheduler0.store.executions.ExecutionStore.hold_state}), while they
    stop firing; None otherwise.
    """
    if not hold.get("firing_stopped"):
        return None
    return reason(
        RECORDS_HELD,
        f"{hold['pending']} execution records are held in memory since {hold['held_since']}"
        f" (ExecutionRecordsMaxPending {hold['max_pending']}) because they cannot be written"
        f" ({hold['cause']}): this node fires no new slots until they are",
    )
