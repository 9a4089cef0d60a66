"""
What the API needs from the rest of the node, as Protocols: the proposer, the
state reader and the execution history (the node's seams, declared in
L{scheduler0.ports}),
the scheduler and (with Replicas) the cluster node. The API imports none of
them, so it can be served over fakes and over a single node alike.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

from scheduler0.ports import ExecutionHistory, Proposer, StateReader

__all__ = [
    "Cluster",
    "ClusterConfig",
    "ExecutionHistory",
    "Proposer",
    "Scheduler",
    "StateReader",
]


class Scheduler(Protocol):
    """What the API asks the scheduler: a job's next slot, and to fire one now."""

    def next_run_at(self, job: dict[str, Any]) -> Any: ...

    def run_now(self, job: dict[str, Any]) -> Any: ...


class ClusterConfig(Protocol):
    @property
    def raft_apply_timeout(self) -> float: ...


class Cluster(Protocol):
    """The node's C{ClusterNode}, as the API uses it (membership, views, settling)."""

    @property
    def config(self) -> ClusterConfig: ...

    @property
    def leader_id(self) -> int | None: ...

    @property
    def change_settle_s(self) -> float: ...

    def cluster_view(self) -> Any: ...

    def member_ids(self) -> set[int]: ...

    def change_members(
        self, add: dict[str, Any] | None = None, remove: int | None = None
    ) -> Deferred[Any]: ...

    def wait_members_applied(self, timeout: float) -> Any: ...

    def execution_summary(self, minutes: int) -> Any: ...
