"""
What the scheduler needs of its collaborators, as Protocols: it knows the
sender, the execution records, the job reader, the proposer (as what tells
of applied commands) and (in a cluster) the handover by these alone, never
by their classes. All but the handover are the node's seams, declared in
L{scheduler0.ports}; mypy checks that the node's real parts and the tests'
fakes fit them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from scheduler0.ports import AppliedCommands, ExecutionRecords, JobReader, Sender
from scheduler0.store.commands import Command, Result

if TYPE_CHECKING:
    from scheduler0.scheduler.service import SchedulerService

__all__ = ["AppliedCommands", "ExecutionRecords", "Handover", "JobReader", "Sender"]


class Handover(Protocol):
    """
    In a cluster, what follows who owns which job and drives the scheduler
    accordingly (L{scheduler0.cluster.handover.Handover}); none on one node.
    """

    def attach(self, scheduler: SchedulerService) -> None: ...

    def sources(self) -> tuple[Callable[..., Deferred[Any]], Callable[..., Deferred[Any]]]: ...

    def loaded(self, job: dict[str, Any], since: datetime) -> datetime: ...

    def after_handover(self, job: dict[str, Any], since: datetime) -> datetime: ...

    def not_before(self, job_uuid: str, since: datetime) -> datetime: ...

    def reloaded(self, kept: set[str]) -> None: ...

    def follow(self, command: Command, result: Result, index: int) -> bool: ...

    def unread_before(self) -> int | None: ...

    def owned_count(self) -> int: ...
