"""
What the scheduler needs of its collaborators, as Protocols: it knows the
sender, the execution records, the job reader, the proposer and (in a
cluster) the handover by these alone (mypy checks that the node's real
parts and the tests' fakes fit them), never by their classes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from scheduler0.executor.http import Delivery
from scheduler0.store.commands import Command, Result, Subscriber

if TYPE_CHECKING:
    from scheduler0.scheduler.service import SchedulerService


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


class Handover(Protocol):
    """
    In a cluster, what follows who owns which job and drives the scheduler
    accordingly (L{scheduler0.cluster.handover.Handover}); none on one node.
    """

    def attach(self, scheduler: SchedulerService) -> None: ...

    def sources(self) -> tuple[Callable[..., Deferred], Callable[..., Deferred]]: ...

    def loaded(self, job: dict, since: datetime) -> datetime: ...

    def after_handover(self, job: dict, since: datetime) -> datetime: ...

    def not_before(self, job_uuid: str, since: datetime) -> datetime: ...

    def reloaded(self, kept: set[str]) -> None: ...

    def follow(self, command: Command, result: Result, index: int) -> bool: ...

    def unread_before(self) -> int | None: ...

    def owned_count(self) -> int: ...
