"""
Execution history as the API shows it in a cluster: what the cluster
committed (the replicated state, the same on every node) together with this
node's records that are not committed yet, so a node's own latest runs show
at once and everyone's show after the next fan-in.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred


def _order(record: dict) -> tuple[str, str]:
    return (record["scheduled_at"], record["execution_id"])


@attrs.define(eq=False)
class ClusterHistory:
    """C{query} and C{latest_per_job} over committed and local records."""

    state: Any
    local: Any

    def query(self, **filters: Any) -> Deferred:
        return Deferred.fromCoroutine(self._query(**filters))

    async def _query(self, limit: int = 50, offset: int = 0, **filters: Any) -> tuple[list, int]:
        wanted = limit + offset
        committed, committed_total = await self.state.query_executions(
            limit=wanted, offset=0, **filters
        )
        local, local_total = await self.local.query(limit=wanted, offset=0, **filters)
        merged: dict[str, dict] = {r["execution_id"]: r for r in committed}
        overlap = 0
        for record in local:
            if record["execution_id"] in merged:
                overlap += 1
            # The local record is the newer version of the same execution.
            merged[record["execution_id"]] = record
        items = sorted(merged.values(), key=_order, reverse=True)[offset : offset + limit]
        return items, committed_total + local_total - overlap

    def latest_per_job(self, job_uuids: list[str]) -> Deferred:
        return Deferred.fromCoroutine(self._latest(list(job_uuids)))

    async def _latest(self, job_uuids: list[str]) -> dict[str, dict]:
        committed = await self.state.latest_executions(job_uuids)
        local = await self.local.latest_per_job(job_uuids)
        out = dict(committed)
        for job_uuid, record in local.items():
            known = out.get(job_uuid)
            if known is None or _order(record) >= _order(known):
                out[job_uuid] = record
        return out
