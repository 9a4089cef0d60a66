"""
What a client credential may do (issue 19): its scope, the projects it may
touch (all, or a list) and its role (C{read}, or C{write}: read and write),
and how each client route is checked against it.

A credential made before scopes, or without any, has full access: every
project, role write. A call outside the scope is refused with 403 (code
C{forbidden}) naming the scope and what the call needed, before anything
is proposed.

L{ROUTE_SCOPES} says, for every client route of the table, how the project
a call touches is found; the request layer checks the role of every write
(a method other than GET) and the routes whose project is in the path or
that need every project, and the resources check the others (a job's
project, once they have read the job; a listing is narrowed to the scope).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from scheduler0.api.errors import APIError
from scheduler0.model import CREDENTIAL_ROLES

READ = "read"
WRITE = "write"
ROLES = CREDENTIAL_ROLES

#: How a client route finds the project a call touches.
#: No project: any credential may call it (read or write by its method).
NO_PROJECT = "no_project"
#: No project and nothing stored, whatever its method (a POST that only
#: computes, like the schedule preview): any credential, read included.
COMPUTES = "computes"
#: The project is the path's C{uuid}.
PATH_PROJECT = "path_project"
#: The project is the job's (path C{uuid}), checked once the job is read.
JOB_PROJECT = "job_project"
#: The projects named in the body (the jobs' C{project_uuid}s).
BODY_PROJECTS = "body_projects"
#: A listing: narrowed to the projects in scope (a filter naming one out of
#: scope is refused).
LISTING = "listing"
#: The project is the C{project_uuid} query parameter, checked by the
#: resource; without it the call needs a credential for every project (the
#: bulk actions by label selector).
QUERY_PROJECT = "query_project"
#: Needs a credential for every project (creating or deleting a project,
#: counts over all projects).
ALL_PROJECTS = "all_projects"

ROUTE_SCOPES: Mapping[str, str] = {
    "openapi_document": NO_PROJECT,
    "cluster_status": NO_PROJECT,
    "create_project": ALL_PROJECTS,
    "list_projects": LISTING,
    "get_project": PATH_PROJECT,
    "update_project": PATH_PROJECT,
    "delete_project": ALL_PROJECTS,
    "rotate_signing_secret": PATH_PROJECT,
    "create_jobs": BODY_PROJECTS,
    "list_jobs": LISTING,
    "get_job": JOB_PROJECT,
    "update_job": JOB_PROJECT,
    "delete_job": JOB_PROJECT,
    "run_job": JOB_PROJECT,
    "next_runs": JOB_PROJECT,
    "job_executions": JOB_PROJECT,
    "list_executions": LISTING,
    "execution_summary": ALL_PROJECTS,
    "preview_schedule": COMPUTES,
    "pause_jobs": QUERY_PROJECT,
    "resume_jobs": QUERY_PROJECT,
    "delete_jobs": QUERY_PROJECT,
}


@attrs.frozen
class Scope:
    """
    A credential's scope: C{projects} it may touch (None: every one) and its
    C{role}. L{FULL} is full access.
    """

    projects: frozenset[str] | None = None
    role: str = WRITE

    @classmethod
    def of(cls, credential: Mapping[str, Any]) -> Scope:
        """The scope of a stored credential (without one: full access)."""
        projects = credential.get("projects")
        return cls(
            None if projects is None else frozenset(projects), credential.get("role") or WRITE
        )

    @property
    def full(self) -> bool:
        return self.projects is None and self.role == WRITE

    def allows(self, project_uuid: str, write: bool) -> bool:
        """Whether a call that reads (or C{write}s) C{project_uuid} is in this scope."""
        if write and self.role != WRITE:
            return False
        return self.projects is None or project_uuid in self.projects

    def describe(self) -> str:
        """The scope in words: what this credential may do."""
        verb = "read and write" if self.role == WRITE else "read"
        if self.projects is None:
            where = "every project"
        elif not self.projects:
            where = "no project"
        else:
            where = "projects " + ", ".join(sorted(self.projects))
        return f"this credential may {verb} {where} (role {self.role})"


FULL = Scope()


def forbidden(scope: Scope, needed: str, field: str = "project_uuid") -> APIError:
    """The 403 of a call outside C{scope}: the scope, then what the call C{needed}."""
    message = f"{scope.describe()}; {needed}"
    return APIError(403, message, {field: message}, code="forbidden")


def check_project(scope: Scope, project_uuid: str, write: bool) -> None:
    """Refuse (403) a call that reads or C{write}s C{project_uuid} outside C{scope}."""
    if not scope.allows(project_uuid, write):
        verb = "writes" if write else "reads"
        raise forbidden(scope, f"this call {verb} project {project_uuid}")


def check_query_project(scope: Scope, project_uuid: str | None, write: bool) -> None:
    """
    Refuse (403) a call of a L{QUERY_PROJECT} route outside C{scope}: the
    project it names, or every project when it names none.
    """
    if project_uuid is None:
        if scope.projects is not None:
            raise forbidden(scope, "this call touches every project (name one with project_uuid)")
        return
    check_project(scope, project_uuid, write)


def check_projects(scope: Scope, project_uuids: Iterable[str], write: bool) -> None:
    """L{check_project} for each of C{project_uuids}, in order."""
    for project_uuid in sorted(set(project_uuids)):
        check_project(scope, project_uuid, write)


def check_route(handler: str, method: str, scope: Scope, path: Mapping[str, str]) -> None:
    """
    What the request layer checks of a client route before its handler
    runs: a write needs role write; a route that needs every project, a
    credential for every project; a project in the path, that project.
    """
    if scope.full:
        return
    kind = ROUTE_SCOPES.get(handler, ALL_PROJECTS)
    write = method != "GET" and kind != COMPUTES
    if write and scope.role != WRITE:
        raise forbidden(scope, f"this call writes ({method} needs role write)", "role")
    if kind == ALL_PROJECTS and scope.projects is not None:
        raise forbidden(scope, "this call needs a credential for every project")
    if kind == PATH_PROJECT:
        check_project(scope, path["uuid"], write)
