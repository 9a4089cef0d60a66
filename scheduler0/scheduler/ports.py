"""
What the scheduler needs of its collaborators, as Protocols: it knows the
sender, the execution records, the job reader, the proposer and the
ownership view by these alone (mypy checks that the node's real parts and
the tests' fakes fit them), never by their classes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from scheduler0.executor.http import Delivery
from scheduler0.store.commands import Subscriber


class Sender(Protocol):
    """Sends due deliveries (L{scheduler0.executor.http.HTTPExecutor})."""

    def submit(self, delivery: Delivery) -> None: ...

    def cancel_job(self, job_uuid: str, reason: str) -> int: ...

    def congested(self, before: float) -> set[str]: ...

    def stop(self, grace_s: float = ...) -> Deferred[None]: ...


class ExecutionRecords(Protocol):
    """This node's execution records (L{scheduler0.store.executions.ExecutionStore})."""

    def record(self, execution: dict, *, trusted: bool = False) -> None: ...

    def last_slots_of(self, job_uuids: list[str]) -> Deferred[Any]: ...


class JobReader(Protocol):
    """Reads the active jobs page by page (L{scheduler0.store.state.StateStore})."""

    def jobs_page(self, after: tuple[str, str] | None, limit: int) -> Deferred[Any]: ...


class AppliedCommands(Protocol):
    """Tells of each command applied (a proposer, or the cluster node)."""

    def subscribe(self, fn: Subscriber, ops: Collection[str] | None = None) -> None: ...


class OwnershipView(Protocol):
    """Which jobs this node owns, and how far each got (L{scheduler0.cluster.ownership})."""

    def jobs_page(self, after: tuple[str, str] | None, limit: int) -> Deferred[Any]: ...

    def last_slots_of(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def last_slots_before(
        self, job_uuids: list[str], until: str, assigned_at: int | None = None
    ) -> Deferred[Any]: ...

    def jobs(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def owned_jobs(self, job_uuids: list[str]) -> Deferred[Any]: ...
