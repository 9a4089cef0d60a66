"""
The request layer every resource of the API stands on: who is calling
(L{Principal}), one request as a handler sees it (L{Call}: its checked query,
path values, JSON body and Idempotency-Key), how a write is proposed
(L{Writes}), and the envelope's pieces (pages, errors, encoding).
Authentication and rate limits are in L{scheduler0.api.auth}; the Klein
application that puts it together is L{scheduler0.api.app.SchedulerAPI}.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal, overload
from urllib.parse import parse_qs, urlsplit

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from scheduler0.api.errors import APIError, FieldErrors, invalid
from scheduler0.api.limits import json_depth_problem
from scheduler0.api.ports import Cluster, Proposer
from scheduler0.api.routes import Param, Route
from scheduler0.api.scope import FULL, Scope, check_project
from scheduler0.api.validation import Invalid, decode_cursor, encode_cursor
from scheduler0.labels import LabelError, parse_selector
from scheduler0.store.audit import audit_stamp
from scheduler0.store.commands import Command
from scheduler0.store.state import CLIENT_KEY_PREFIX
from scheduler0.timeutil import format_instant, parse_instant, utc_from_timestamp
from scheduler0.versions import FIRST_ENTRY_VERSION

_RESULT_STATUS = {"conflict": 409, "not_found": 404, "invalid": 400}
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@attrs.frozen
class Principal:
    """
    Who is calling: C{admin}, a C{client} credential, or C{anonymous}; a
    client's C{scope} (full access unless the credential was limited) and
    the hint of its API key that logs and the audit log may show.
    """

    kind: str
    credential_uuid: str | None = None
    scope: Scope = FULL
    key_hint: str | None = None


@attrs.define(eq=False)
class Call:
    """One request as a handler sees it: the parsed query, path values and a body reader."""

    request: IRequest
    principal: Principal
    query: dict[str, Any]
    path: dict[str, str]
    max_body_bytes: int
    max_json_depth: int = 32
    # The route served (for the audit log; None: a call made in a test).
    route: Route | None = None

    @property
    def scope(self) -> Scope:
        """What the caller may touch (the admin: everything)."""
        return self.principal.scope

    def check_project(self, project_uuid: str, *, write: bool) -> None:
        """Refuse (403) a call that reads or C{write}s C{project_uuid} outside the scope."""
        check_project(self.principal.scope, project_uuid, write)

    def project_filter(self) -> frozenset[str] | None:
        """The projects a listing is narrowed to (None: every one)."""
        return self.principal.scope.projects

    def idempotency_key(self) -> str | None:
        """
        The client's C{Idempotency-Key} header, joined to a digest of the
        request: a write sent again with the same key and body (by the same
        credential) is applied at most once, and answers as the first did.
        """
        key = last_header(self.request, "idempotency-key")
        if key is None:
            return None
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise APIError(
                400,
                "Idempotency-Key: 1 to 128 characters from letters, digits and . _ : -",
                {"Idempotency-Key": "1 to 128 characters from letters, digits and . _ : -"},
            )
        # The key names this request: the same key with another method, path,
        # query (a bulk action's selector) or body is another request, not a
        # retry of this one.
        digest = hashlib.sha256()
        digest.update(self.request.method or b"")
        digest.update(b" " + (self.request.uri or b"") + b"\n")
        content = self.request.content
        if content is not None:
            content.seek(0)
            digest.update(content.read(self.max_body_bytes + 1))
        return f"{key}:{digest.hexdigest()[:24]}"

    def json_body(self, *, required: bool = True) -> Any:
        """
        The decoded JSON body. Checks size (Content-Length first, then what
        is actually read) and content type; C{None} for an absent body when
        not C{required}.
        """
        length_header = last_header(self.request, "content-length")
        if length_header is not None:
            try:
                declared = int(length_header)
            except ValueError:
                raise invalid("content-length", "content-length: is not a number") from None
            if declared > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
        content = self.request.content
        raw = b""
        if content is not None:
            content.seek(0)
            raw = content.read(self.max_body_bytes + 1)
        if len(raw) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        if not raw.strip():
            if required:
                raise invalid("body", "body: is empty; expected a JSON document")
            return None
        content_type = (
            (last_header(self.request, "content-type") or "").split(";")[0].strip().lower()
        )
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise APIError(
                415,
                f"content-type: must be application/json, not {content_type or 'missing'}",
                {"content-type": "must be application/json"},
            )
        # Before parsing: the parser recurses once per level of nesting.
        depth_problem = json_depth_problem(raw, self.max_json_depth)
        if depth_problem is not None:
            raise invalid("body", depth_problem)
        try:
            decoded = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            raise invalid("body", f"body: malformed JSON ({_short(error)})") from None
        if decoded is None:
            # A literal null is a body, not the absence of one.
            raise invalid("body", "body: is null; expected a JSON object or array")
        return decoded

    @overload
    def object_body(self, *, required: Literal[True] = True) -> dict[str, Any]: ...
    @overload
    def object_body(self, *, required: bool) -> dict[str, Any] | None: ...
    def object_body(self, *, required: bool = True) -> dict[str, Any] | None:
        """The body, which must be a JSON object (C{None} only when not C{required})."""
        body = self.json_body(required=required)
        if body is None:
            return None
        if not isinstance(body, dict):
            raise invalid("body", "body: must be a JSON object")
        return body


def last_header(request: IRequest, name: str) -> str | None:
    """
    The last value of header C{name}, or C{None}; a value that is not UTF-8
    is an error naming the header rather than a crash.
    """
    values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(name, f"{name}: header is not valid UTF-8") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _too_large(limit: int) -> APIError:
    return APIError(
        413, f"body: larger than the limit of {limit} bytes", {"body": f"larger than {limit} bytes"}
    )


def not_found(kind: str, value: str, field: str = "uuid") -> APIError:
    return APIError(404, f"{field}: no {kind} {value!r}", {field: f"no {kind} {value!r}"})


async def maybe(value: Any) -> Any:
    """Await C{value} if it is a Deferred or other awaitable; return it otherwise."""
    if isinstance(value, Deferred) or inspect.isawaitable(value):
        return await value
    return value


# A route's handler: the request in, the answer's data (or (status, data)) out.
Handler = Callable[[Call], Awaitable[Any]]


def utc_now(clock: IReactorTime) -> datetime:
    """The clock's time as an aware UTC datetime."""
    return utc_from_timestamp(clock.seconds())


def list_page(
    items: list, total: int, limit: int, offset: int, *, more: bool | None = None
) -> dict:
    """
    One page of a list. With C{more} (whether rows follow, for lists in
    (created_at, uuid) order) the cursor holds the last item's position,
    so the next page is found through the index, not by skipping rows.
    """
    end = offset + len(items)
    cursor = None
    if more is None:
        if items and end < total:
            cursor = encode_cursor(end)
    elif more and items:
        cursor = encode_cursor(end, (items[-1]["created_at"], items[-1]["uuid"]))
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_cursor": cursor,
    }


def prefer(value: Any, local: dict) -> dict:
    """The state machine's answer when it is a record, else what this node computed."""
    if isinstance(value, dict) and "uuid" in value:
        return value
    return local


def encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@attrs.define(eq=False)
class Writes:
    """
    How a resource changes state: one command through the proposer, and (in
    a cluster) waiting until the members follow a change.
    """

    proposer: Proposer
    new_uuid: Callable[[], str]
    cluster: Cluster | None = None
    # Stamps a user's write for the audit log (None: no audit records).
    auditor: Auditor | None = None

    async def propose(
        self,
        op: str,
        args: Mapping[str, Any],
        call: Call | None = None,
        *,
        version: int = FIRST_ENTRY_VERSION,
    ) -> Any:
        """
        Propose one command; a rejected result becomes the matching APIError.
        Each write gets its own request id, so a retried proposal of the same
        command can be recognised by the log (Raft de-duplication); a client's
        Idempotency-Key (per credential) is that id, so the client's own
        retries are recognised too. A user's write (C{call} given) carries
        its audit metadata once the cluster writes entry version 2; the
        command is then of that version. C{version}: the entry version the
        command needs for what it carries.
        """
        key = call.idempotency_key() if call is not None else None
        if key is None or call is None:
            request_id = self.new_uuid()
        else:
            who = call.principal.credential_uuid or call.principal.kind
            request_id = f"{CLIENT_KEY_PREFIX}{who}:{key}"
        stamp = None
        if call is not None and self.auditor is not None:
            stamp = await self.auditor.stamp(call)
        if stamp is not None:
            version = max(version, AUDIT_ENTRY_VERSION)
        command = Command(op, args, request_id=request_id, version=version, audit=stamp)
        result = await self.proposer.propose(command)
        if result.ok:
            return result.value
        code = result.code or "invalid"
        field = result.field or "body"
        message = result.message or code
        raise APIError(
            _RESULT_STATUS.get(code, 400), f"{field}: {message}", {field: message}, code=code
        )

    async def everywhere(self) -> None:
        """
        In a cluster, answer a change to what fires (pause, delete, a new
        schedule) only once the job's owner follows it: every node that
        answers has applied it, and one that does not has lost its lease.
        """
        if self.cluster is not None:
            await self.cluster.wait_members_applied(self.cluster.change_settle_s)


#: The entry version whose commands may carry audit metadata.
AUDIT_ENTRY_VERSION = 2


@attrs.define(eq=False)
class Auditor:
    """
    The audit metadata of a user's write (L{scheduler0.store.audit}): who
    (the admin, or a credential's uuid and API key hint), when (this node's
    clock, or the cluster's), through which node and route, and how many
    records the log keeps (C{AuditLogMaxEntries}). None while the cluster
    writes entry version 1: a node of the previous release would not read it.
    """

    entry_version: Callable[[], Any]
    clock: IReactorTime
    node_id: int | None
    keep: int
    cluster_time: Callable[[], float] | None = None

    async def stamp(self, call: Call) -> dict[str, Any] | None:
        if await maybe(self.entry_version()) < AUDIT_ENTRY_VERSION:
            return None
        principal = call.principal
        seconds = self.cluster_time() if self.cluster_time is not None else self.clock.seconds()
        route = call.route
        return audit_stamp(
            at=format_instant(utc_from_timestamp(seconds)),
            actor=principal.credential_uuid or principal.kind,
            actor_key=principal.key_hint,
            via=self.node_id,
            method=route.method if route is not None else "",
            route=route.path if route is not None else "",
            keep=self.keep,
        )


def parse_query(route: Route, request: IRequest) -> dict[str, Any]:
    """
    The route's query parameters, converted and checked; unknown or repeated
    parameters are errors so a typo never silently widens a listing.
    """
    raw_query = urlsplit(request.uri).query
    try:
        pairs = parse_qs(
            raw_query.decode("ascii"), keep_blank_values=True, strict_parsing=False, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise invalid("query", "query: is not valid percent-encoded UTF-8") from None
    params = {p.name: p for p in route.query}
    errors = FieldErrors()
    values: dict[str, Any] = {}
    for name, given in pairs.items():
        param = params.get(name)
        if param is None:
            allowed = ", ".join(params) or "none"
            errors.add(name, f"{name}: unknown query parameter (allowed: {allowed})")
            continue
        if len(given) > 1:
            errors.add(name, f"{name}: given more than once")
            continue
        try:
            values[name] = _convert(param, given[0])
        except Invalid as problem:
            errors.add(name, f"{name}: {problem}")
    for param in route.query:
        if param.required and param.name not in values and param.name not in errors.fields:
            errors.add(param.name, f"{param.name}: is required")
    errors.raise_if_any()
    if "cursor" in params:
        # offset=0 is offset's default: sending it says no more than leaving it out.
        if "cursor" in values and values.get("offset", 0) != 0:
            raise invalid("cursor", "cursor: give either cursor or offset, not both")
        if "cursor" in values:
            values.pop("offset", None)
            values["offset"], after = values.pop("cursor")
            if after is not None:
                values["after"] = after
    for param in route.query:
        if param.name != "cursor" and param.default is not None:
            values.setdefault(param.name, param.default)
    return values


def _convert(param: Param, text: str) -> Any:
    if param.kind == "integer":
        stripped = text.strip()
        if not stripped.lstrip("-").isdigit() or len(stripped) > 18:
            raise Invalid(f"must be an integer, not {text!r}")
        number = int(stripped)
        if param.minimum is not None and number < param.minimum:
            raise Invalid(f"must be at least {param.minimum}")
        if param.maximum is not None and number > param.maximum:
            raise Invalid(f"must be at most {param.maximum}")
        return number
    if param.kind == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise Invalid(f"must be true or false, not {text!r}")
    if param.kind == "instant":
        try:
            return format_instant(parse_instant(text))
        except (ValueError, OverflowError):
            raise Invalid(
                "must be an RFC 3339 instant with an offset, "
                f"e.g. 2026-01-02T03:04:05Z, not {text!r}"
            ) from None
    if param.kind == "cursor":
        return decode_cursor(text)
    if param.kind == "selector":
        try:
            return parse_selector(text)
        except LabelError as problem:
            raise Invalid(str(problem)) from None
    if not text:
        raise Invalid("must not be empty")
    if param.enum and text not in param.enum:
        raise Invalid(f"must be one of {', '.join(param.enum)}, not {text!r}")
    return text
