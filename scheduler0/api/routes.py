"""
The route table: the single description of the HTTP API.

The application registers its Klein routes from this table and the OpenAPI
document is generated from it, so the document cannot drift from what is
actually served.
"""

from __future__ import annotations

import re

import attrs

from scheduler0.model import EXECUTION_STATES

PREFIXES = ("/api/v1", "")
ANONYMOUS = "anonymous"
CLIENT = "client"
ADMIN = "admin"

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_NEXT = 100
DEFAULT_NEXT = 10


@attrs.frozen
class Param:
    """One query-string parameter a route accepts."""

    name: str
    kind: str  # "string" | "integer" | "boolean" | "instant" | "cursor" | "selector"
    description: str
    default: object = None
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] = ()
    required: bool = False


@attrs.frozen
class Route:
    """One (method, path) the API serves; C{path} uses werkzeug C{<name>} placeholders."""

    method: str
    path: str
    handler: str
    auth: str
    summary: str
    status: int = 200
    query: tuple[Param, ...] = ()
    body: str | None = None  # component schema of the request body
    body_required: bool = True
    response: str | None = None  # component schema of C{data}
    description: str = ""
    # What a success answers: the JSON envelope, or a file of this media type.
    media_type: str = "application/json"

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", self.path)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"<(?:[a-z_]+:)?([a-z_]+)>", self.path)


PAGE = (
    Param("limit", "integer", "Page size.", DEFAULT_LIMIT, 1, MAX_LIMIT),
    Param(
        "offset", "integer", "Items to skip (with a cursor only 0, the default, is accepted).", 0, 0
    ),
    Param("cursor", "cursor", "The next_cursor of a previous page (instead of offset)."),
)
CONSISTENCY = Param(
    "consistency",
    "string",
    "linearizable (default) reads what every acknowledged write wrote; stale reads this "
    "node's copy without asking the leader.",
    "linearizable",
    enum=("linearizable", "stale"),
)
# Issue 19: a label selector (scheduler0.labels), parsed when the query is.
SELECTOR_HELP = (
    "A label selector: comma-separated terms that must all hold: key=value (or key==value),"
    " key!=value (the key is missing or has another value), key (the key is there), !key"
    " (it is not)."
)
BULK_QUERY = (
    Param("selector", "selector", "Which jobs. " + SELECTOR_HELP, required=True),
    Param("project_uuid", "string", "Only jobs of this project."),
)
BULK_HELP = (
    "The selector is resolved when the command is applied, so every node changes the same "
    "jobs. One request changes at most 1,000 jobs (in creation order); more: true says "
    "others were selected, and the same request again changes the next ones."
)
EXECUTION_FILTERS = (
    Param("state", "string", "Only executions in this state.", enum=EXECUTION_STATES),
    Param("since", "instant", "Only slots scheduled at or after this RFC 3339 instant."),
    Param(
        "until", "instant", "Only slots scheduled before this RFC 3339 instant (later than since)."
    ),
)

_TABLE: tuple[Route, ...] = (
    Route(
        "GET",
        "/healthcheck",
        "health_check",
        ANONYMOUS,
        "Node and cluster health; 200 only while this node is ready.",
        response="Health",
        description=(
            "Ready: this node can serve writes (a leader is known and has a quorum) and fire "
            "its jobs (its lease is valid, the resource guard does not pause it). Otherwise "
            "503 with the same data, ready false and the reasons (for readiness probes and "
            "load balancers)."
        ),
    ),
    Route(
        "GET",
        "/livez",
        "liveness",
        ANONYMOUS,
        "200 whenever the process serves HTTP (for liveness probes).",
        response="Live",
    ),
    Route(
        "GET",
        "/openapi.json",
        "openapi_document",
        CLIENT,
        "This OpenAPI document.",
        response=None,
        description="Returned as is, without the success/data envelope.",
    ),
    # projects
    Route(
        "POST",
        "/projects",
        "create_project",
        CLIENT,
        "Create a project.",
        201,
        body="ProjectInput",
        response="NewProject",
        description="The answer holds the project's callback signing secret, shown only here.",
    ),
    Route(
        "GET",
        "/projects",
        "list_projects",
        CLIENT,
        "List projects.",
        query=PAGE,
        response="ProjectPage",
    ),
    Route("GET", "/projects/<uuid>", "get_project", CLIENT, "Get a project.", response="Project"),
    Route(
        "PATCH",
        "/projects/<uuid>",
        "update_project",
        CLIENT,
        "Change a project's name, description or notify_url.",
        body="ProjectPatch",
        response="Project",
        description="Fields not given keep their value; notify_url null removes it.",
    ),
    Route(
        "PUT",
        "/projects/<uuid>",
        "update_project",
        CLIENT,
        "Change a project's name, description or notify_url (same as PATCH).",
        body="ProjectPatch",
        response="Project",
        description="Partial like PATCH: fields not given keep their value.",
    ),
    Route(
        "DELETE",
        "/projects/<uuid>",
        "delete_project",
        CLIENT,
        "Delete a project (409 while it has jobs, unless cascade=true).",
        query=(Param("cascade", "boolean", "Delete the project's jobs too.", False),),
        response="ProjectDeleted",
    ),
    Route(
        "POST",
        "/projects/<uuid>/signing-secret",
        "rotate_signing_secret",
        CLIENT,
        "Replace the project's callback signing secret; the old one signs too for grace_s.",
        body="SigningSecretInput",
        body_required=False,
        response="SigningSecret",
    ),
    Route(
        "POST",
        "/signing-secrets/seal",
        "seal_signing_secrets",
        ADMIN,
        "Seal every stored signing secret under this node's SecretKey or new_secret_key.",
        body="SealInput",
        body_required=False,
        response="SealResult",
        description=(
            "Rotating SecretKey: seal under new_secret_key, then give every node the new "
            "SecretKey and restart; old_secret_key opens secrets still sealed under the old one."
        ),
    ),
    # jobs
    Route(
        "POST",
        "/jobs",
        "create_jobs",
        CLIENT,
        "Create one job (object body) or up to 10,000 jobs atomically (array body).",
        201,
        body="JobInputOrList",
        response="JobOrList",
    ),
    Route(
        "GET",
        "/jobs",
        "list_jobs",
        CLIENT,
        "List jobs.",
        query=(
            Param("project_uuid", "string", "Only jobs of this project."),
            Param("paused", "boolean", "Only paused (true) or active (false) jobs."),
            Param(
                "name_prefix",
                "string",
                "Only jobs whose name starts with this text (case-sensitive).",
            ),
            Param("selector", "selector", "Only the jobs it selects. " + SELECTOR_HELP),
            *PAGE,
        ),
        response="JobPage",
    ),
    Route(
        "POST",
        "/jobs/bulk/pause",
        "pause_jobs",
        CLIENT,
        "Pause the active jobs a label selector selects.",
        query=BULK_QUERY,
        body_required=False,
        response="BulkResult",
        description=BULK_HELP,
    ),
    Route(
        "POST",
        "/jobs/bulk/resume",
        "resume_jobs",
        CLIENT,
        "Resume the paused jobs a label selector selects.",
        query=BULK_QUERY,
        body_required=False,
        response="BulkResult",
        description=BULK_HELP,
    ),
    Route(
        "POST",
        "/jobs/bulk/delete",
        "delete_jobs",
        CLIENT,
        "Delete the jobs a label selector selects.",
        query=BULK_QUERY,
        body_required=False,
        response="BulkResult",
        description=BULK_HELP,
    ),
    Route("GET", "/jobs/<uuid>", "get_job", CLIENT, "Get a job.", response="Job"),
    Route(
        "PATCH",
        "/jobs/<uuid>",
        "update_job",
        CLIENT,
        "Change some fields of a job.",
        body="JobPatch",
        response="Job",
        description=(
            "Fields not given keep their value. A spec or timezone change re-anchors the schedule."
        ),
    ),
    Route(
        "PUT",
        "/jobs/<uuid>",
        "update_job",
        CLIENT,
        "Change some fields of a job (same as PATCH).",
        body="JobPatch",
        response="Job",
        description="Partial like PATCH: fields not given keep their value.",
    ),
    Route("DELETE", "/jobs/<uuid>", "delete_job", CLIENT, "Delete a job.", response="Deleted"),
    Route(
        "POST",
        "/jobs/<uuid>/run",
        "run_job",
        CLIENT,
        "Fire one extra execution of the job now.",
        202,
        body_required=False,
        response="Execution",
    ),
    Route(
        "GET",
        "/jobs/<uuid>/next",
        "next_runs",
        CLIENT,
        "Preview the job's next fire instants, in UTC and in the job's zone.",
        query=(Param("n", "integer", "How many instants.", DEFAULT_NEXT, 1, MAX_NEXT),),
        response="NextRuns",
    ),
    Route(
        "POST",
        "/schedule/preview",
        "preview_schedule",
        CLIENT,
        "Preview the next fire instants of a spec and timezone without storing anything.",
        body="SchedulePreviewInput",
        response="NextRuns",
        description=(
            "The instants a job created now with this spec and timezone would fire at; the "
            "spec and timezone are refused with 400 naming them as when a job is created."
        ),
    ),
    Route(
        "GET",
        "/jobs/<uuid>/executions",
        "job_executions",
        CLIENT,
        "Execution history of one job, newest first.",
        query=(*EXECUTION_FILTERS, *PAGE),
        response="ExecutionPage",
    ),
    Route(
        "GET",
        "/executions",
        "list_executions",
        CLIENT,
        "Execution history, newest first.",
        query=(
            Param("job_uuid", "string", "Only executions of this job."),
            Param("project_uuid", "string", "Only executions of this project's jobs."),
            *EXECUTION_FILTERS,
            *PAGE,
        ),
        response="ExecutionPage",
    ),
    Route(
        "GET",
        "/executions/summary",
        "execution_summary",
        CLIENT,
        "Executions per minute over the last minutes, summed over the cluster.",
        query=(
            Param(
                "minutes",
                "integer",
                "Minutes to cover, the current (partial) one last.",
                60,
                1,
                60,
            ),
        ),
        response="ExecutionSummary",
        description=(
            "Outcomes by the minute they were recorded, first attempts and their lateness by "
            "the minute they started. Each node counts in memory what it executed (a restarted "
            "node starts from zero); members that do not answer in time are listed in "
            "missing_nodes."
        ),
    ),
    # cluster
    Route(
        "GET",
        "/cluster",
        "cluster_status",
        CLIENT,
        "The cluster: every member with its role, health and share of the jobs.",
        response="Cluster",
    ),
    Route(
        "POST",
        "/cluster/members",
        "add_member",
        ADMIN,
        "Add a node: it joins as a non-voter and is promoted once it has caught up.",
        201,
        body="MemberInput",
        response="Cluster",
        description=(
            "Start the new node with Bootstrap: false and Replicas listing the current "
            "members and itself."
        ),
    ),
    Route(
        "DELETE",
        "/cluster/members/<node_id>",
        "remove_member",
        ADMIN,
        "Remove a node from the cluster; its jobs move to the others.",
        response="Cluster",
    ),
    # credentials (admin)
    Route(
        "POST",
        "/credentials",
        "post_credential",
        ADMIN,
        "Create a client credential; the secret is shown only in this response.",
        201,
        body="CredentialInput",
        body_required=False,
        response="NewCredential",
    ),
    Route(
        "GET",
        "/credentials",
        "list_credentials",
        ADMIN,
        "List client credentials.",
        query=PAGE,
        response="CredentialPage",
    ),
    Route(
        "GET",
        "/credentials/<uuid>",
        "get_credential",
        ADMIN,
        "Get a client credential.",
        response="Credential",
    ),
    Route(
        "DELETE",
        "/credentials/<uuid>",
        "archive_credential",
        ADMIN,
        "Archive a client credential; it is rejected from then on.",
        response="Credential",
    ),
    # backup (admin): one file, not the JSON envelope
    Route(
        "GET",
        "/backup",
        "backup",
        ADMIN,
        "Download a backup of the replicated state, consistent at one log index.",
        media_type="application/octet-stream",
        description=(
            "One line of JSON (format, backup_version, release, entry_version, index, "
            "created_at, counts, payload_sha256) and the gzip-compressed state machine image: "
            "projects, jobs, credentials as hashes, signing secrets as sealed, job progress. "
            "Restore it offline with scheduler0 restore (README: Backup and restore)."
        ),
    ),
    # audit log (admin; issue 19)
    Route(
        "GET",
        "/audit",
        "list_audit",
        ADMIN,
        "The audit log: every user write (who, what, which object, when, via which node).",
        query=(
            Param("actor", "string", "Only writes by this actor: admin or a credential uuid."),
            Param(
                "object",
                "string",
                "Only writes to this object (a project, job or credential uuid).",
            ),
            Param("op", "string", "Only writes of this command op (e.g. update_job)."),
            Param("via", "integer", "Only writes made through this node id.", minimum=1),
            Param("since", "instant", "Only writes at or after this RFC 3339 instant."),
            Param("until", "instant", "Only writes before this RFC 3339 instant."),
            *PAGE,
        ),
        response="AuditPage",
        description=(
            "Newest first. Kept in the replicated state, so every node answers alike; the "
            "newest AuditLogMaxEntries records are kept. Writes refused by the state machine "
            "are there with outcome refused; requests refused before they were proposed "
            "(400, 403, 404 from the node's own checks) are not."
        ),
    ),
)


def _with_consistency(route: Route) -> Route:
    """Reads of replicated state take C{?consistency=}; other routes do not."""
    if (
        route.method != "GET"
        or route.auth == ANONYMOUS
        or route.handler in ("openapi_document", "execution_summary")
    ):
        return route
    return attrs.evolve(route, query=(*route.query, CONSISTENCY))


ROUTES: tuple[Route, ...] = tuple(_with_consistency(route) for route in _TABLE)
