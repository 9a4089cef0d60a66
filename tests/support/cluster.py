"""
Fakes around a L{ClusterNode}: the Raft core, driver and transport, and the
peer client.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred

from scheduler0.raft.core import FOLLOWER, RaftSettings
from scheduler0.raft.messages import ClusterConfig


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


@attrs.define
class FakeTransport:
    """Records what the node sends on its Raft links."""

    sent: list[tuple[int, bytes]] = attrs.field(factory=list)

    def send(self, to_node_id: int, payload: bytes) -> None:
        self.sent.append((to_node_id, payload))
