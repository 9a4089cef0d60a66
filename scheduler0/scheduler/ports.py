"""
What the scheduler needs of its collaborators, as Protocols: it knows the
sender, the execution records, the job reader, the proposer (as what tells
of applied commands) and the ownership view by these alone, never by their
classes. All but the ownership view are the node's seams, declared in
L{scheduler0.ports}; mypy checks that the node's real parts and the tests'
fakes fit them.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

from scheduler0.ports import AppliedCommands, ExecutionRecords, JobReader, Sender

__all__ = ["AppliedCommands", "ExecutionRecords", "JobReader", "OwnershipView", "Sender"]


class OwnershipView(Protocol):
    """Which jobs this node owns, and how far each got (L{scheduler0.cluster.ownership})."""

    def jobs_page(self, after: tuple[str, str] | None, limit: int) -> Deferred[Any]: ...

    def last_slots_of(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def last_slots_before(
        self, job_uuids: list[str], until: str, assigned_at: int | None = None
    ) -> Deferred[Any]: ...

    def jobs(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def owned_jobs(self, job_uuids: list[str]) -> Deferred[Any]: ...
