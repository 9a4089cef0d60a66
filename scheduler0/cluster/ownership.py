"""
Which jobs this node fires, for the handover (L{scheduler0.cluster.handover}):
the jobs the replicated state says it owns, and how far each got (the later
of what this node recorded locally and what the cluster committed for the
job when it last moved, from its old owner's progress report).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet.defer import Deferred

from scheduler0.ports import ExecutionRecords
from scheduler0.store.state import covers_job, handled_through

if TYPE_CHECKING:
    from scheduler0.store.state import StateStore


class OwnershipView(Protocol):
    """Which jobs this node owns, and how far each got (L{Ownership} or a fake)."""

    def jobs_page(self, after: tuple[str, str] | None, limit: int) -> Deferred[Any]: ...

    def last_slots_of(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def last_slots_before(
        self, job_uuids: list[str], until: str, assigned_at: int | None = None
    ) -> Deferred[Any]: ...

    def jobs(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def owned_jobs(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def project_jobs_page(
        self, project_uuid: str, after: tuple[str, str] | None, limit: int
    ) -> Deferred[Any]: ...


@attrs.define(eq=False)
class Ownership:
    """The scheduler's view of this node's share of the jobs."""

    state: StateStore
    executions: ExecutionRecords
    node_id: int

    def jobs_page(self, after: tuple[str, str] | None, limit: int) -> Deferred:
        """A page of this node's jobs in creation order (with C{handover_at})."""
        return self.state.owned_jobs_page(self.node_id, after, limit)

    def last_slots_of(self, job_uuids: list[str]) -> Deferred:
        return Deferred.fromCoroutine(self._last_slots_of(list(job_uuids)))

    async def _last_slots_of(self, job_uuids: list[str]) -> dict[str, str]:
        local = await self.executions.last_slots_of(job_uuids)
        committed = await self.state.job_progress(job_uuids)
        merged = dict(committed)
        for job_uuid, slot in local.items():
            if job_uuid not in merged or slot > merged[job_uuid]:
                merged[job_uuid] = slot
        return merged

    def last_slots_before(
        self, job_uuids: list[str], until: str, assigned_at: int | None = None
    ) -> Deferred:
        """
        job_uuid -> the last instant through which the job's old owner is
        known to have sent every slot, for a handover at C{until} (an instant
        at or after C{until} means nothing before it is owed): by that
        owner's last progress report when it speaks for the job (the job is
        still as the handover at log index C{assigned_at} left it), else what
        was committed for the job when it moved. Jobs with neither are left out.
        """
        return Deferred.fromCoroutine(self._last_slots_before(list(job_uuids), until, assigned_at))

    async def _last_slots_before(
        self, job_uuids: list[str], until: str, assigned_at: int | None
    ) -> dict[str, str]:
        jobs = await self.state.owned_jobs_of(None, job_uuids)
        reports = await self.state.progress_reports()
        found = await self.state.job_progress(job_uuids)
        for job in jobs:
            since = job.get("owner_since")
            if assigned_at is not None and since != assigned_at:
                continue  # moved again since: only the committed progress is known
            report = reports.get(job.get("prev_owner"))
            if report is None or not covers_job(report, job.get("prev_owner_since"), since or 0):
                continue
            through = handled_through(report[0])
            known = found.get(job["uuid"])
            if known is None or through > known:
                found[job["uuid"]] = through
        return found

    def jobs(self, job_uuids: list[str]) -> Deferred:
        """The jobs among C{job_uuids} that exist, whoever owns them."""
        return self.state.owned_jobs_of(None, list(job_uuids))

    def owned_jobs(self, job_uuids: list[str]) -> Deferred:
        """The jobs among C{job_uuids} this node owns now, as stored now."""
        return Deferred.fromCoroutine(self._owned_jobs(list(job_uuids)))

    async def _owned_jobs(self, job_uuids: list[str]) -> list[dict]:
        if not job_uuids:
            return []
        return list(await self.state.owned_jobs_of(self.node_id, job_uuids))

    def project_jobs_page(
        self, project_uuid: str, after: tuple[str, str] | None, limit: int
    ) -> Deferred:
        """A page of the active jobs of C{project_uuid} that this node owns."""
        return self.state.project_jobs_page(project_uuid, self.node_id, after, limit)
