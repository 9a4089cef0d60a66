"""
Which jobs this node fires, for the handover (L{scheduler0.cluster.handover}):
the jobs the replicated state says it owns, and how far each got (the later
of what this node recorded locally and what the cluster committed for the
job when it last moved, from its old owner's progress report), and how far
the old owner of a job handed over at an instant got before that instant.
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

    def last_slots_before(self, taken_up: list[TakenUp]) -> Deferred[Any]: ...

    def jobs(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def owned_jobs(self, job_uuids: list[str]) -> Deferred[Any]: ...

    def project_jobs_page(
        self, project_uuid: str, after: tuple[str, str] | None, limit: int
    ) -> Deferred[Any]: ...


@attrs.frozen
class TakenUp:
    """
    A job this node took up at a handover instant, as it was then: who had
    it before (C{prev_owner}, from log index C{prev_owner_since}; None: not
    known), the log index it came here at (C{owner_since}), and the last slot
    known sent then (C{last_slot}; None: none).
    """

    uuid: str
    prev_owner: int | None
    prev_owner_since: int | None
    owner_since: int
    last_slot: str | None

    @classmethod
    def of(cls, job: dict, last_slot: str | None, assigned_at: int | None) -> TakenUp:
        """
        C{job} as read when it was taken up at a handover instant (by the
        move at log index C{assigned_at}; None: not known), with the last
        slot known sent then. A row a later move changed already names no
        old owner: only C{last_slot} is known of the one before the instant.
        """
        since = job.get("owner_since")
        if since is None or (assigned_at is not None and since != assigned_at):
            return cls(job["uuid"], None, None, since or 0, last_slot)
        return cls(
            job["uuid"], job.get("prev_owner"), job.get("prev_owner_since"), since, last_slot
        )


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

    def last_slots_before(self, taken_up: list[TakenUp]) -> Deferred:
        """
        job_uuid -> the last instant through which the old owner of each job
        in C{taken_up} is known to have sent every slot before the handover
        instant: what was known when this node took the job up, or later, by
        that owner's progress report from the run that held the job. Jobs
        with neither are left out.

        Only the old owner can speak for the slots before the instant: what
        was committed for the job since (when it moved on again, the next
        owner's report) speaks for the slots after it, which the old owner
        did not fire.
        """
        return Deferred.fromCoroutine(self._last_slots_before(list(taken_up)))

    async def _last_slots_before(self, taken_up: list[TakenUp]) -> dict[str, str]:
        reports = await self.state.progress_reports()
        found: dict[str, str] = {}
        for job in taken_up:
            known = job.last_slot
            report = reports.get(job.prev_owner) if job.prev_owner is not None else None
            if report is not None and covers_job(report, job.prev_owner_since, job.owner_since):
                through = handled_through(report[0])
                if known is None or through > known:
                    known = through
            if known is not None:
                found[job.uuid] = known
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
