"""
Execution history as the API shows it in a cluster. Each node keeps the
records of what it fired itself (its executions.db); nothing about single
executions crosses Raft. A read asks every member for its matching records
at once (with a short timeout) and merges them, so any node answers for the
whole cluster. History committed through Raft by releases before progress
marks (the state machine's executions table, the same on every node) is
read from this node's copy and merged in too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed

from scheduler0.ports import ExecutionHistory

if TYPE_CHECKING:
    from scheduler0.cluster.node import ClusterNode
    from scheduler0.store.state import StateStore

_FINAL = frozenset(("succeeded", "failed", "skipped"))


def _order(record: dict) -> tuple[str, str]:
    return (record["scheduled_at"], record["execution_id"])


def _version(record: dict) -> tuple[bool, str, str]:
    """Of two records of one execution (sent twice, by two nodes) the later one wins."""
    return (
        record.get("state") in _FINAL,
        record.get("finished_at") or "",
        record.get("started_at") or "",
    )


@attrs.define(eq=False)
class ClusterHistory:
    """C{query} and C{latest_per_job} over every member's records."""

    node: ClusterNode
    local: ExecutionHistory
    state: StateStore
    timeout_s: float = 1.0

    def _others(self) -> list[int]:
        me = self.node.config.node_id
        return sorted(m for m in self.node.member_ids() if m != me)

    def query(
        self,
        job_uuid: str | None = None,
        project_uuid: str | None = None,
        state: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Deferred:
        """Fire with (items, total, missing node ids): a page merged over the cluster."""
        filters = {
            "job_uuid": job_uuid,
            "project_uuid": project_uuid,
            "state": state,
            "since": since,
            "until": until,
        }
        return Deferred.fromCoroutine(self._query(limit, offset, filters))

    async def _query(
        self, limit: int, offset: int, filters: dict[str, Any]
    ) -> tuple[list, int, list[int]]:
        wanted = limit + offset
        # The local query first: it checks the filters, so bad ones fail
        # before any peer is asked.
        own = await self.local.query(limit=wanted, offset=0, **filters)
        others = self._others()
        answers = await gatherResults(
            [self.state.query_executions(limit=wanted, offset=0, **filters)]
            + [
                self.node.peers.history(
                    node_id, {**filters, "limit": wanted, "offset": 0}, self.timeout_s
                ).addCallbacks(lambda data: (data["items"], data["total"]), lambda f: None)
                for node_id in others
            ]
        )
        missing = [n for n, answer in zip(others, answers[1:], strict=True) if answer is None]
        merged: dict[str, dict] = {}
        total = 0
        for answer in (own, *answers):
            if answer is None:
                continue
            items, count = answer
            total += count
            for record in items:
                known = merged.get(record["execution_id"])
                if known is not None:
                    total -= 1
                    if _version(known) >= _version(record):
                        continue
                merged[record["execution_id"]] = record
        items = sorted(merged.values(), key=_order, reverse=True)[offset : offset + limit]
        return items, total, missing

    def latest_per_job(self, job_uuids: list[str]) -> Deferred:
        if not job_uuids:
            return succeed({})
        return Deferred.fromCoroutine(self._latest(list(job_uuids)))

    async def _latest(self, job_uuids: list[str]) -> dict[str, dict]:
        answers = await gatherResults(
            [self.local.latest_per_job(job_uuids), self.state.latest_executions(job_uuids)]
            + [
                self.node.peers.latest(node_id, job_uuids, self.timeout_s).addErrback(
                    lambda f: None
                )
                for node_id in self._others()
            ]
        )
        out: dict[str, dict] = {}
        for answer in answers:
            for job_uuid, record in (answer or {}).items():
                known = out.get(job_uuid)
                if known is None or _order(record) > _order(known):
                    out[job_uuid] = record
                elif _order(record) == _order(known) and _version(record) > _version(known):
                    out[job_uuid] = record
        return out
