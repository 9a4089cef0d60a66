"""
Which jobs this node fires, for the scheduler: the jobs the replicated
state says it owns, and how far each got (the later of what this node
recorded locally and what the cluster committed from any node).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred


@attrs.define(eq=False)
class Ownership:
    """The scheduler's view of this node's share of the jobs."""

    state: Any
    executions: Any
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

    def last_slots_before(self, job_uuids: list[str], until: str) -> Deferred:
        """
        job_uuid -> the latest slot before C{until} any node recorded (that
        the cluster committed, or this node holds): where an old owner got
        before a handover instant.
        """
        return Deferred.fromCoroutine(self._last_slots_before(list(job_uuids), until))

    async def _last_slots_before(self, job_uuids: list[str], until: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for job_uuid in job_uuids:
            for source in (self.state.query_executions, self.executions.query):
                items, _ = await source(job_uuid=job_uuid, until=until, limit=1)
                for item in items:
                    if item["state"] != "scheduled" and item["scheduled_at"] > found.get(
                        job_uuid, ""
                    ):
                        found[job_uuid] = item["scheduled_at"]
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
