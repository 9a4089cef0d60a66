"""
Executions: the history of executions (this node's, or in a cluster every
member's merged), a job's executions, and the per-minute summary.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from scheduler0.api.errors import APIError, invalid
from scheduler0.api.jobs import job_or_404
from scheduler0.api.ports import Cluster, ExecutionHistory, StateReader
from scheduler0.api.request import Call, list_page, maybe
from scheduler0.api.scope import forbidden


@attrs.define(eq=False, kw_only=True)
class ExecutionsResource:
    """
    The execution routes. C{summary} is the node's ExecutionSummary
    (scheduler0.summary); in a cluster the cluster node gathers every
    member's instead.
    """

    HANDLERS: ClassVar[tuple[str, ...]] = ("list_executions", "job_executions", "execution_summary")

    state: StateReader
    executions: ExecutionHistory
    defaults: Any
    summary: Any = None
    cluster: Cluster | None = None

    async def _executions_page(self, call: Call, **filters: Any) -> dict:
        limit, offset = call.query["limit"], call.query["offset"]
        since, until = call.query.get("since"), call.query.get("until")
        if since is not None and until is not None and until <= since:
            raise invalid("until", "until: must be later than since")
        answer = await maybe(
            self.executions.query(
                state=call.query.get("state"),
                since=since,
                until=until,
                limit=limit,
                offset=offset,
                **filters,
            )
        )
        page = list_page(list(answer[0]), answer[1], limit, offset)
        # In a cluster: the members whose records could not be read now.
        page["missing_nodes"] = list(answer[2]) if len(answer) > 2 else []
        return page

    async def list_executions(self, call: Call) -> dict:
        job_uuid, project_uuid = call.query.get("job_uuid"), call.query.get("project_uuid")
        project_uuid = await self._scoped_project(call, job_uuid, project_uuid)
        return await self._executions_page(call, job_uuid=job_uuid, project_uuid=project_uuid)

    async def _scoped_project(
        self, call: Call, job_uuid: str | None, project_uuid: str | None
    ) -> str | None:
        """
        The project_uuid filter of a listing: a credential limited to some
        projects reads the history of those: a project_uuid (or a job_uuid
        of a job of one) in its scope; without either, the only project of
        its scope (several: it must name one).
        """
        projects = call.project_filter()
        if projects is None:
            return project_uuid
        if project_uuid is not None:
            call.check_project(project_uuid, write=False)
        if job_uuid is not None:
            job = await self.state.get_job(job_uuid)
            if job is None:
                raise forbidden(call.scope, f"this call reads job {job_uuid}, not a job of these")
            call.check_project(job["project_uuid"], write=False)
        if job_uuid is None and project_uuid is None and len(projects) != 1:
            raise forbidden(
                call.scope, "this call reads every project's executions: give project_uuid"
            )
        if job_uuid is None and project_uuid is None:
            return next(iter(projects))
        return project_uuid

    async def job_executions(self, call: Call) -> dict:
        job = await job_or_404(self.state, call.path["uuid"], call)
        return await self._executions_page(call, job_uuid=job["uuid"], project_uuid=None)

    async def execution_summary(self, call: Call) -> dict:
        """
        Executions per minute: in a cluster every member's counts summed
        (the cluster node asks them), alone this node's.
        """
        minutes = call.query["minutes"]
        if self.cluster is not None:
            return await self.cluster.execution_summary(minutes)
        if self.summary is None:
            raise APIError(404, "the execution summary is not kept by this node")
        return {
            **self.summary.snapshot(minutes),
            "nodes": [getattr(self.defaults, "node_id", 1)],
            "missing_nodes": [],
        }
