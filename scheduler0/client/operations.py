"""
The transport-free half of the Python client: what each API operation sends
(L{Request}), how an answer becomes data or an L{APIError}, and when a failed
request may be sent again.

L{Client} (blocking, urllib) and L{AsyncClient} (treq, Deferreds) both
inherit every operation from L{Operations}; each only says how to send one
L{Request}, so no operation is written twice.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

API_PREFIX = "/api/v1"
NO_BODY = object()


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


#: The default of an optional field that None would clear: leave it as it is.
UNCHANGED: Any = _Unchanged()

# Statuses worth sending again: the node is busy, or the cluster had no
# leader/quorum for a moment.
RETRYABLE_STATUSES = (429, 502, 503, 504)
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 10.0


class APIError(Exception):
    """
    The node answered with an error envelope (or with something that is not
    the API's JSON). C{fields} maps each offending input to what is wrong;
    C{data} is the envelope's C{data} (None but for the health check of a
    node that is not ready: its health, with the reasons).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(status, code, message, dict(fields or {}))
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.retry_after = retry_after
        self.data = data

    def __str__(self) -> str:
        return f"{self.status} {self.message}"

    def __repr__(self) -> str:
        return f"APIError({self.status!r}, {self.code!r}, {self.message!r}, {self.fields!r})"


class NodeUnreachable(ConnectionError):
    """No HTTP answer from the node at C{endpoint}: refused, timed out, reset, DNS..."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot reach the node at {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Request:
    """
    One API call, independent of how it is sent. (A dataclass, not attrs:
    the blocking client needs only the standard library.)
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: Any = NO_BODY
    idempotency_key: str | None = None
    envelope: bool = True  # False: the answer is returned as is (the OpenAPI document)

    @property
    def is_write(self) -> bool:
        return self.method not in ("GET", "HEAD")

    def url(self, endpoint: str) -> str:
        """The absolute URL under C{endpoint} (C{http://host:port}, with or without /api/v1)."""
        base = endpoint.rstrip("/")
        if not base.endswith(API_PREFIX):
            base += API_PREFIX
        url = base + self.path
        if self.query:
            url += "?" + urlencode(self.query)
        return url

    def body_bytes(self) -> bytes | None:
        if self.body is NO_BODY:
            return None
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")

    def headers(self, auth: Mapping[str, str]) -> dict[str, str]:
        """The headers to send: auth, content type, and the Idempotency-Key if any."""
        headers = {"Accept": "application/json", **auth}
        if self.body is not NO_BODY:
            headers["Content-Type"] = "application/json"
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers

    def next_page(self, cursor: str) -> Request:
        """This list request for the page after the one that answered C{cursor}."""
        kept = tuple((k, v) for k, v in self.query if k not in ("cursor", "offset"))
        return dataclasses.replace(self, query=(*kept, ("cursor", cursor)))

    @property
    def may_retry(self) -> bool:
        """Sending it again cannot apply it twice: a read, or a write under an Idempotency-Key."""
        return not self.is_write or self.idempotency_key is not None


def auth_headers(
    api_key: str | None,
    api_secret: str | None,
    username: str | None,
    password: str | None,
) -> dict[str, str]:
    """Client key headers, or HTTP Basic admin credentials, or nothing (health only)."""
    if (api_key is None) != (api_secret is None):
        raise ValueError("api_key and api_secret go together: give both or neither")
    if (username is None) != (password is None):
        raise ValueError("username and password go together: give both or neither")
    if api_key is not None and username is not None:
        raise ValueError("give api_key/api_secret or username/password, not both")
    if api_key is not None:
        return {"x-api-key": api_key, "x-secret-key": str(api_secret)}
    if username is not None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    return {}


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def parse_response(request: Request, status: int, headers: Mapping[str, Any], raw: bytes) -> Any:
    """The C{data} of a successful answer; anything else raises L{APIError}."""
    try:
        payload = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        payload = None
    if 200 <= status < 300:
        if not request.envelope:
            return payload
        if isinstance(payload, dict) and payload.get("success") is True:
            return payload.get("data")
        raise APIError(status, "bad_response", f"answer {status} is not a success envelope")
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        given = error.get("fields")
        fields = given if isinstance(given, dict) else {}
        raise APIError(
            status,
            str(error.get("code") or "error"),
            str(error.get("message") or error.get("code") or f"HTTP {status}"),
            {str(k): str(v) for k, v in fields.items()},
            _retry_after(headers),
            payload.get("data") if isinstance(payload, dict) else None,
        )
    text = raw[:200].decode("utf-8", "replace").strip()
    raise APIError(
        status,
        "bad_response",
        f"HTTP {status}" + (f": {text}" if text else ""),
        {},
        _retry_after(headers),
    )


def retry_delay(request: Request, error: Exception, attempt: int) -> float | None:
    """
    Seconds to wait before sending C{request} again after C{error} on try
    number C{attempt} (0 for the first), or C{None} when it must not be sent
    again: an API answer other than 429/5xx-busy, or a write without an
    Idempotency-Key that may already have been applied.
    """
    backoff = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * (2**attempt))
    if isinstance(error, APIError):
        if error.status not in RETRYABLE_STATUSES:
            return None
        if error.status != 429 and not request.may_retry:
            return None  # 503 on a write: it may still apply
        if error.retry_after is not None:
            return min(BACKOFF_MAX_S, max(error.retry_after, backoff / 2))
        return backoff
    if isinstance(error, NodeUnreachable) and request.may_retry:
        return backoff
    return None


def new_idempotency_key() -> str:
    return "py-" + uuid_module.uuid4().hex


def _query(**params: Any) -> tuple[tuple[str, str], ...]:
    """Query pairs for the given parameters, leaving out those that are C{None}."""
    pairs = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((name, str(value)))
    return tuple(pairs)


def _segment(value: Any) -> str:
    text = str(value)
    if not text:
        raise ValueError("an id in the path must not be empty")
    return quote(text, safe="")


def _fields(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not None}


# -- the operations ---------------------------------------------------------


def _operation(build: Callable[..., Request]) -> Any:
    """
    A method that builds its L{Request} with C{build} (a staticmethod: it
    needs no client) and sends it with C{_perform}.
    """

    @functools.wraps(build)
    def method(self: Operations, *args: Any, **kwargs: Any) -> Any:
        return self._perform(build(*args, **kwargs))

    method.build = build  # type: ignore[attr-defined]
    return method


def _iteration(operation: Any) -> Any:
    """A method that follows C{next_cursor} through every page of a list C{operation}."""

    def method(self: Operations, *args: Any, **kwargs: Any) -> Any:
        return self._iterate(operation.build(*args, **kwargs))

    method.__doc__ = (
        "Every item of the list, page after page (following next_cursor); takes the "
        "filters of the matching list method. An async iterator on AsyncClient."
    )
    method.build = operation.build  # type: ignore[attr-defined]
    return method


def _page(limit: int | None, offset: int | None, cursor: str | None) -> dict[str, Any]:
    return {"limit": limit, "offset": offset, "cursor": cursor}


def _bulk(
    action: str, selector: str, project_uuid: str | None, idempotency_key: str | None
) -> Request:
    """A bulk C{action} (pause, resume, delete) on the jobs C{selector} selects."""
    query = _query(selector=selector, project_uuid=project_uuid)
    key = idempotency_key or new_idempotency_key()
    return Request("POST", f"/jobs/bulk/{action}", query, idempotency_key=key)


def _by_path(method: str, template: str, doc: str, **fixed: Any) -> Any:
    """
    An operation whose only arguments are the ids in its path, in order
    (C{template} has a C{{}} for each), e.g. C{get_job(uuid)}.
    """

    def build(*ids: Any) -> Request:
        wanted = template.count("{}")
        if len(ids) != wanted:
            raise TypeError(f"{method} {template} takes {wanted} id(s), not {len(ids)}")
        return Request(method, template.format(*(_segment(i) for i in ids)), **fixed)

    build.__doc__ = doc
    return _operation(build)


def _listing(path: str, doc: str) -> Any:
    """A list operation whose only arguments are the page's (limit, offset, cursor)."""

    def build(
        *, limit: int | None = None, offset: int | None = None, cursor: str | None = None
    ) -> Request:
        return Request("GET", path, _query(**_page(limit, offset, cursor)))

    build.__doc__ = doc
    return _operation(build)


class Operations:
    """
    Every call of the API. The methods return what C{_perform} returns: the
    response C{data} (L{Client}) or a Deferred of it (L{AsyncClient}).
    List methods answer one page (C{items}, C{total}, C{next_cursor}); the
    C{iter_*} methods walk every page.
    """

    def _perform(self, request: Request) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _iterate(self, request: Request) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- node
    health = _by_path(
        "GET",
        "/healthcheck",
        "The node's health check (anonymous); a node that is not ready raises APIError 503 "
        "(code not_ready) whose data is the health, with the reasons.",
    )
    live = _by_path("GET", "/livez", "Whether the node serves HTTP at all (anonymous).")
    openapi = _by_path(
        "GET", "/openapi.json", "The OpenAPI document the node serves.", envelope=False
    )

    # -- projects
    @_operation
    @staticmethod
    def create_project(
        name: str,
        description: str | None = None,
        *,
        notify_url: str | None = None,
        idempotency_key: str | None = None,
        paused: bool | None = None,
    ) -> Request:
        """
        Create a project; the answer holds its signing_secret (shown only
        once). C{notify_url}: where notices of its failed executions go;
        C{paused}: create it paused (none of its jobs fires).
        """
        body = _fields(name=name, description=description, notify_url=notify_url, paused=paused)
        return Request("POST", "/projects", body=body, idempotency_key=idempotency_key)

    list_projects = _listing("/projects", "One page of projects.")
    iter_projects = _iteration(list_projects)

    get_project = _by_path("GET", "/projects/{}", "Get a project by uuid.")

    @_operation
    @staticmethod
    def update_project(
        uuid: str,
        *,
        name: str | None = None,
        description: str | None = None,
        notify_url: Any = UNCHANGED,
    ) -> Request:
        """
        Change the name, description and/or notify_url; fields not given
        keep their value, and C{notify_url=None} removes the project's.
        """
        body = _fields(name=name, description=description)
        if notify_url is not UNCHANGED:
            body["notify_url"] = notify_url
        return Request("PUT", f"/projects/{_segment(uuid)}", body=body)

    @_operation
    @staticmethod
    def pause_project(uuid: str) -> Request:
        """Fire none of the project's jobs (each keeps its own paused flag)."""
        return Request("PATCH", f"/projects/{_segment(uuid)}", body={"paused": True})

    @_operation
    @staticmethod
    def resume_project(uuid: str) -> Request:
        """Fire the project's jobs that are not paused themselves again, from now."""
        return Request("PATCH", f"/projects/{_segment(uuid)}", body={"paused": False})

    @_operation
    @staticmethod
    def delete_project(uuid: str, *, cascade: bool = False) -> Request:
        """Delete a project; with C{cascade} its jobs too (else 409 while it has jobs)."""
        query = _query(cascade=True) if cascade else ()
        return Request("DELETE", f"/projects/{_segment(uuid)}", query)

    @_operation
    @staticmethod
    def rotate_signing_secret(uuid: str, *, grace_s: float | None = None) -> Request:
        """A new callback signing secret; the old one keeps signing for C{grace_s}."""
        body = _fields(grace_s=grace_s)
        return Request("POST", f"/projects/{_segment(uuid)}/signing-secret", body=body)

    # -- jobs
    @_operation
    @staticmethod
    def create_job(job: Mapping[str, Any], *, idempotency_key: str | None = None) -> Request:
        """Create one job from its fields (project_uuid, name, spec, callback_url, ...)."""
        return Request("POST", "/jobs", body=dict(job), idempotency_key=idempotency_key)

    @_operation
    @staticmethod
    def create_many(
        jobs: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> Request:
        """
        Create jobs atomically (all or none) in one request. It always
        carries an Idempotency-Key (a new one unless given), so a retry after
        a 503 or a lost connection cannot create them twice.
        """
        body = [dict(job) for job in jobs]
        key = idempotency_key or new_idempotency_key()
        return Request("POST", "/jobs", body=body, idempotency_key=key)

    @_operation
    @staticmethod
    def list_jobs(
        *,
        project_uuid: str | None = None,
        paused: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
        name_prefix: str | None = None,
        selector: str | None = None,
    ) -> Request:
        """
        One page of jobs, optionally of one project, only paused/active ones,
        only those whose name starts with C{name_prefix}, and/or only those a
        label C{selector} selects (C{team=billing,env!=prod}).
        """
        query = _query(
            project_uuid=project_uuid,
            paused=paused,
            name_prefix=name_prefix,
            selector=selector,
            **_page(limit, offset, cursor),
        )
        return Request("GET", "/jobs", query)

    iter_jobs = _iteration(list_jobs)
    get_job = _by_path("GET", "/jobs/{}", "Get a job by uuid.")

    @_operation
    @staticmethod
    def update_job(uuid: str, changes: Mapping[str, Any]) -> Request:
        """Change some fields (PATCH); a spec/timezone change re-anchors the schedule."""
        return Request("PATCH", f"/jobs/{_segment(uuid)}", body=dict(changes))

    @_operation
    @staticmethod
    def pause_job(uuid: str) -> Request:
        """Stop firing the job (its definition is kept)."""
        return Request("PATCH", f"/jobs/{_segment(uuid)}", body={"paused": True})

    @_operation
    @staticmethod
    def resume_job(uuid: str) -> Request:
        """Fire the job again from its next slot."""
        return Request("PATCH", f"/jobs/{_segment(uuid)}", body={"paused": False})

    @_operation
    @staticmethod
    def pause_jobs(
        selector: str, *, project_uuid: str | None = None, idempotency_key: str | None = None
    ) -> Request:
        """
        Pause the active jobs a label selector selects (at most 1,000 per
        call: C{more} in the answer says others remain). It always carries
        an Idempotency-Key, so a retry cannot change the next ones.
        """
        return _bulk("pause", selector, project_uuid, idempotency_key)

    @_operation
    @staticmethod
    def resume_jobs(
        selector: str, *, project_uuid: str | None = None, idempotency_key: str | None = None
    ) -> Request:
        """Resume the paused jobs a label selector selects (as L{pause_jobs})."""
        return _bulk("resume", selector, project_uuid, idempotency_key)

    @_operation
    @staticmethod
    def delete_jobs(
        selector: str, *, project_uuid: str | None = None, idempotency_key: str | None = None
    ) -> Request:
        """Delete the jobs a label selector selects (as L{pause_jobs})."""
        return _bulk("delete", selector, project_uuid, idempotency_key)

    delete_job = _by_path("DELETE", "/jobs/{}", "Delete a job: none of its slots fires afterwards.")
    run_job = _by_path("POST", "/jobs/{}/run", "Fire one extra execution of the job now.")

    @_operation
    @staticmethod
    def next_runs(uuid: str, n: int | None = None) -> Request:
        """The job's next fire instants in UTC and in its zone."""
        return Request("GET", f"/jobs/{_segment(uuid)}/next", _query(n=n))

    @_operation
    @staticmethod
    def preview_schedule(spec: str, timezone: str | None = None, n: int | None = None) -> Request:
        """
        The next instants of C{spec} in C{timezone} as a job created now
        would fire them; nothing is stored (a bad spec or zone is refused).
        """
        body: dict[str, Any] = {"spec": spec}
        if timezone is not None:
            body["timezone"] = timezone
        if n is not None:
            body["n"] = n
        return Request("POST", "/schedule/preview", body=body)

    # -- executions
    @_operation
    @staticmethod
    def list_executions(
        *,
        job_uuid: str | None = None,
        project_uuid: str | None = None,
        state: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
    ) -> Request:
        """One page of execution history, newest first; C{since}/C{until} are RFC 3339."""
        query = _query(
            job_uuid=job_uuid,
            project_uuid=project_uuid,
            state=state,
            since=since,
            until=until,
            **_page(limit, offset, cursor),
        )
        return Request("GET", "/executions", query)

    iter_executions = _iteration(list_executions)

    @_operation
    @staticmethod
    def job_executions(
        uuid: str,
        *,
        state: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
    ) -> Request:
        """One page of one job's execution history, newest first."""
        query = _query(state=state, since=since, until=until, **_page(limit, offset, cursor))
        return Request("GET", f"/jobs/{_segment(uuid)}/executions", query)

    iter_job_executions = _iteration(job_executions)

    @_operation
    @staticmethod
    def execution_summary(minutes: int | None = None) -> Request:
        """
        Outcomes and lateness per minute over the last C{minutes} (at most
        60), counted by every node as it fires, so history pruning does not
        thin them; a node's counts start over when it restarts.
        """
        return Request("GET", "/executions/summary", _query(minutes=minutes))

    # -- cluster
    cluster_status = _by_path("GET", "/cluster", "Every member with its role and health.")

    @_operation
    @staticmethod
    def add_member(node_id: int, address: str, raft_address: str) -> Request:
        """Add a node (admin): it joins as a non-voter and is promoted once caught up."""
        body = {"node_id": node_id, "address": address, "raft_address": raft_address}
        return Request("POST", "/cluster/members", body=body)

    remove_member = _by_path(
        "DELETE", "/cluster/members/{}", "Remove a node (admin); its jobs move to the others."
    )

    # -- signing secrets at rest (admin)
    @_operation
    @staticmethod
    def seal_signing_secrets(
        *, new_secret_key: str | None = None, old_secret_key: str | None = None
    ) -> Request:
        """
        Seal every stored signing secret under the node's SecretKey, or under
        C{new_secret_key} (rotating SecretKey); C{old_secret_key} opens those
        still sealed under a previous one.
        """
        body = _fields(new_secret_key=new_secret_key, old_secret_key=old_secret_key)
        return Request("POST", "/signing-secrets/seal", body=body)

    # -- credentials (admin)
    @_operation
    @staticmethod
    def create_credential(*, projects: list[str] | None = None, role: str | None = None) -> Request:
        """
        A new client credential; its api_secret is in this answer only.
        C{projects}: the only projects it may touch (None: all); C{role}:
        C{read} or C{write} (the default).
        """
        return Request("POST", "/credentials", body=_fields(projects=projects, role=role))

    list_credentials = _listing("/credentials", "One page of client credentials (admin).")
    iter_credentials = _iteration(list_credentials)

    get_credential = _by_path("GET", "/credentials/{}", "Get a client credential (admin).")
    archive_credential = _by_path(
        "DELETE", "/credentials/{}", "Archive a credential (admin): it is rejected from then on."
    )

    # -- the audit log (admin)
    @_operation
    @staticmethod
    def list_audit(
        *,
        actor: str | None = None,
        object: str | None = None,
        op: str | None = None,
        via: int | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
    ) -> Request:
        """One page of the audit log (admin), newest first; C{since}/C{until} are RFC 3339."""
        query = _query(
            actor=actor,
            object=object,
            op=op,
            via=via,
            since=since,
            until=until,
            **_page(limit, offset, cursor),
        )
        return Request("GET", "/audit", query)

    iter_audit = _iteration(list_audit)


# The operations made by _by_path/_listing are all called "build" until named here.
for _name, _method in list(vars(Operations).items()):
    if hasattr(_method, "build"):
        _method.__name__, _method.__qualname__ = _name, f"Operations.{_name}"
