"""
The HTTP API (SPEC §5) as a Klein application.

Every route comes from L{scheduler0.api.routes.ROUTES} and is served both
under C{/api/v1} and without a prefix. A request is authenticated, its query
string and body are checked completely, and only then does a write become a
L{Command} with its ids and timestamps fixed here, so the state machine only
ever sees valid, deterministic commands and a rejected request changes
nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, overload
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import attrs
from klein import Klein
from passlib.hash import pbkdf2_sha256
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import scheduler0
from scheduler0.api.errors import APIError, FieldErrors, error_for_fields, invalid
from scheduler0.api.limits import RateLimiter, json_depth_problem
from scheduler0.api.openapi import (
    MAX_JOBS_PER_REQUEST,
    MAX_NODE_ID,
    MEMBER_ADDRESS_PATTERN,
    RAFT_ADDRESS_PATTERN,
    build_openapi,
)
from scheduler0.api.payload import data_problem, payload_cap_bytes
from scheduler0.api.routes import ADMIN, ANONYMOUS, CLIENT, PREFIXES, ROUTES, Param, Route
from scheduler0.api.site import body_limited_request
from scheduler0.api.validation import (
    Invalid,
    check_job,
    check_project,
    decode_cursor,
    encode_cursor,
    past_at_problem,
    retry_delays_problem,
)
from scheduler0.credentials import token
from scheduler0.errors import StoreUnavailable
from scheduler0.model import ADDED_JOB_DEFAULTS
from scheduler0.netpolicy import NetworkPolicy, check_url, check_urls
from scheduler0.scheduler.spec import SpecError, make_schedule
from scheduler0.store.commands import Command
from scheduler0.store.executions import ExecutionHistory
from scheduler0.store.state import CLIENT_KEY_PREFIX
from scheduler0.timeutil import format_instant, parse_instant, utc_from_timestamp
from scheduler0.ui import dashboard_resource

log = Logger()

REALM_CHALLENGE = 'Basic realm="scheduler0"'
VERIFIED_CACHE_LIMIT = 10_000
_RESULT_STATUS = {"conflict": 409, "not_found": 404, "invalid": 400}
# GET /metrics: served beside the route table, authenticated as a client route.
_METRICS_ROUTE = Route("GET", "/metrics", "metrics", CLIENT, "Prometheus metrics of this node.")


@attrs.frozen
class Principal:
    """Who is calling: C{admin}, a C{client} credential, or C{anonymous}."""

    kind: str
    credential_uuid: str | None = None


_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@attrs.define(eq=False)
class Call:
    """One request as a handler sees it: the parsed query, path values and a body reader."""

    request: IRequest
    principal: Principal
    query: dict[str, Any]
    path: dict[str, str]
    max_body_bytes: int
    max_json_depth: int = 32

    def idempotency_key(self) -> str | None:
        """
        The client's C{Idempotency-Key} header, joined to a digest of the
        request: a write sent again with the same key and body (by the same
        credential) is applied at most once, and answers as the first did.
        """
        key = _header(self.request, "idempotency-key")
        if key is None:
            return None
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise APIError(
                400,
                "Idempotency-Key: 1 to 128 characters from letters, digits and . _ : -",
                {"Idempotency-Key": "1 to 128 characters from letters, digits and . _ : -"},
            )
        # The key names this request: the same key with another method, path
        # or body is another request, not a retry of this one.
        digest = hashlib.sha256()
        digest.update(self.request.method or b"")
        digest.update(b" " + (self.request.path or b"") + b"\n")
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
        length_header = _header(self.request, "content-length")
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
        content_type = (_header(self.request, "content-type") or "").split(";")[0].strip().lower()
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


def _header(request: IRequest, name: str) -> str | None:
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


def _not_found(kind: str, value: str, field: str = "uuid") -> APIError:
    return APIError(404, f"{field}: no {kind} {value!r}", {field: f"no {kind} {value!r}"})


async def _maybe(value: Any) -> Any:
    """Await C{value} if it is a Deferred or other awaitable; return it otherwise."""
    if isinstance(value, Deferred) or inspect.isawaitable(value):
        return await value
    return value


def _default_hash(secret: str) -> str:
    return pbkdf2_sha256.hash(secret)


def _default_verify(secret: str, hashed: str) -> bool:
    return pbkdf2_sha256.verify(secret, hashed)


def _no_resolver(host: str) -> Deferred:
    return fail(DNSLookupError(host))


def _default_uuid() -> str:
    """
    A time-ordered UUID (version 7: milliseconds since the epoch, then 74
    random bits). Rows made together sit together in the primary-key index,
    so creating a million jobs touches each index page about once.
    """
    millis = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (random_bits >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | random_bits & 0x3FFF_FFFF_FFFF_FFFF
    )
    return str(uuid.UUID(int=value))


def _default_token(n: int) -> str:
    return token(n)


@attrs.define(eq=False, kw_only=True)
class SchedulerAPI:
    """
    The Klein application serving SPEC §5; C{resource()} is what the HTTP
    site serves.

    C{read_barrier}, when given, is awaited before every linearizable read
    (a GET of replicated state without C{?consistency=stale}); a Raft node
    passes its ReadIndex wait here. Without it reads are local, which is
    linearizable on a single node.
    """

    state: Any
    proposer: Any
    executions: ExecutionHistory
    scheduler: Any
    clock: IReactorTime
    defaults: Any
    admin: Any
    health: Callable[[], Any]
    new_uuid: Callable[[], str] = _default_uuid
    token: Callable[[int], str] = _default_token
    max_body_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 32
    # Where callbacks may go (open by default, so resolve is never called).
    net_policy: NetworkPolicy = attrs.field(factory=NetworkPolicy)
    resolve: Callable[[str], Deferred] = _no_resolver
    # Requests per credential (None: no limit); see scheduler0.api.limits.
    rate_limiter: RateLimiter | None = None
    max_jobs_per_request: int = MAX_JOBS_PER_REQUEST
    # Either may return a Deferred (the node runs them in a thread: pbkdf2
    # takes tens of milliseconds).
    hash_secret: Callable[[str], Any] | None = None
    verify_secret: Callable[[str, str], Any] | None = None
    read_barrier: Callable[[], Any] | None = None
    # The node's ClusterNode when it runs with Replicas (None: a single node).
    cluster: Any = None
    # How long a rotated-out signing secret keeps signing, unless the
    # rotation asks for another grace_s (CallbackSigningGraceSeconds).
    signing_grace_s: float = 86400
    # Lets the reactor run other work (Raft heartbeats, firing) between
    # pieces of a large request; None: never (tests on a fake clock).
    breathe: Callable[[], Any] | None = None
    # The node's NodeMetrics (scheduler0.metrics), served at GET /metrics.
    metrics: Any = None
    # The node's ExecutionSummary (scheduler0.summary), for GET /executions/summary.
    summary: Any = None
    app: Klein = attrs.field(init=False, factory=Klein)
    _verified: dict[tuple[str, str, str], bool] = attrs.field(init=False, factory=dict)
    # api_key -> (sha256 of the secret, credential uuid) of live credentials
    # whose secret was verified: the fast path of authentication.
    _live_credentials: dict[str, tuple[bytes, str]] = attrs.field(init=False, factory=dict)
    _openapi: dict | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.hash_secret is None:
            self.hash_secret = _default_hash
        if self.verify_secret is None:
            self.verify_secret = _default_verify
        for route in ROUTES:
            for prefix in PREFIXES:
                self.app.route(
                    prefix + route.path,
                    methods=[route.method],
                    endpoint=f"{route.method} {prefix}{route.path}",
                )(self._view(route))
        # The dashboard's static files: they carry no data, so no
        # authentication; not in the route table, which is the JSON API.
        dashboard = dashboard_resource()
        self.app.route("/ui", branch=True, methods=["GET"], endpoint="ui")(lambda _: dashboard)
        self.app.route("/ui/", methods=["GET"], endpoint="ui_index")(lambda _: dashboard)
        # Prometheus metrics: authenticated like client routes, but not in
        # the route table (a text body, not the JSON API it describes).
        for prefix in PREFIXES:
            self.app.route(prefix + "/metrics", methods=["GET"], endpoint=f"GET {prefix}/metrics")(
                lambda request: Deferred.fromCoroutine(self._serve_metrics(request))
            )
        self.app.handle_errors(HTTPException)(self._routing_error)
        self.app.handle_errors(Exception)(self._unexpected_error)

    def resource(self):
        """The Twisted Web resource serving this API."""
        return self.app.resource()

    @property
    def request_factory(self) -> type:
        """
        The request class to give the serving C{Site} (C{requestFactory=}),
        so bodies over C{max_body_bytes} are refused while they arrive.
        """
        return body_limited_request(self.max_body_bytes)

    # -- plumbing ----------------------------------------------------------

    def _view(self, route: Route) -> Callable[..., Deferred]:
        def view(request: IRequest, **path: str) -> Deferred:
            return Deferred.fromCoroutine(self._serve(route, request, path))

        view.__name__ = route.handler
        return view

    async def _serve(self, route: Route, request: IRequest, path: dict[str, str]) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        try:
            principal = await self._authenticate(route, request)
            self._check_rate(principal)
            query = _parse_query(route, request)
            call = Call(request, principal, query, path, self.max_body_bytes, self.max_json_depth)
            if self.read_barrier is not None and (
                query.get("consistency") == "linearizable"
                or (route.method != "GET" and self.cluster is not None)
            ):
                # A write decides from what is stored (does the job exist,
                # is this a change at all): in a cluster it must see every
                # acknowledged write first, like a linearizable read.
                await _maybe(self.read_barrier())
            result = await getattr(self, route.handler)(call)
            if route.handler == "openapi_document":
                request.setResponseCode(200)
                return _encode(result)
            status, data = result if isinstance(result, tuple) else (route.status, result)
            request.setResponseCode(status)
            return _encode({"success": True, "data": data})
        except APIError as error:
            return self._error_body(request, error)
        except StoreUnavailable as error:
            log.info(
                "store unavailable for {method} {path}: {error}",
                method=route.method,
                path=route.path,
                error=error,
            )
            if route.method == "GET":
                message = (
                    "the cluster cannot take this request now (no leader or no quorum); "
                    "retry shortly"
                )
            else:
                # A write that timed out may still commit afterwards.
                message = (
                    "the cluster did not confirm this write in time (no leader, no quorum, "
                    "or slower than RaftApplyTimeout); it may still be applied: retry with "
                    "the same Idempotency-Key header to have it applied at most once"
                )
            return self._error_body(
                request, APIError(503, message, {}, headers={"Retry-After": "1"})
            )
        except CancelledError:
            # The client went away (Klein cancels the answer's Deferred):
            # nobody is left to answer, and nothing went wrong here.
            log.debug("{method} {path}: the client went away", method=route.method, path=route.path)
            return b""
        except Exception:
            log.failure(
                "unexpected error answering {method} {path}",
                Failure(),
                method=route.method,
                path=route.path,
            )
            return self._error_body(request, APIError(500, "internal error; it has been logged"))

    async def _serve_metrics(self, request: IRequest) -> bytes:
        """C{GET /metrics}: this node's metrics in the Prometheus text format."""
        try:
            self._check_rate(await self._authenticate(_METRICS_ROUTE, request))
            if self.metrics is None:
                raise APIError(404, "metrics are not served by this node")
        except APIError as error:
            return self._error_body(request, error)
        from scheduler0.metrics import CONTENT_TYPE

        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return self.metrics.exposition()

    def _error_body(self, request: IRequest, error: APIError) -> bytes:
        request.setResponseCode(error.status)
        request.setHeader(b"content-type", b"application/json")
        for name, value in error.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("ascii"))
        return _encode(error.envelope())

    def _routing_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        status = error.code or 500
        headers: dict[str, str] = {}
        if isinstance(error, MethodNotAllowed):
            allowed = sorted(set(error.valid_methods or ()))
            headers["Allow"] = ", ".join(allowed)
            method = request.method.decode("ascii", "replace")
            message = f"method {method} is not allowed here (allowed: {', '.join(allowed)})"
        elif status == 404:
            message = "no such route"
        else:
            message = error.description or error.name
            location = getattr(error, "new_url", None)
            if location:
                headers["Location"] = location
        return self._error_body(request, APIError(status, message, {}, headers=headers))

    def _unexpected_error(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("unexpected error routing a request", failure)
        return self._error_body(request, APIError(500, "internal error; it has been logged"))

    def _now(self) -> datetime:
        return utc_from_timestamp(self.clock.seconds())

    async def _propose(self, op: str, args: Mapping[str, Any], call: Call | None = None) -> Any:
        """
        Propose one command; a rejected result becomes the matching APIError.
        Each write gets its own request id, so a retried proposal of the same
        command can be recognised by the log (Raft de-duplication); a client's
        Idempotency-Key (per credential) is that id, so the client's own
        retries are recognised too.
        """
        key = call.idempotency_key() if call is not None else None
        if key is None or call is None:
            request_id = self.new_uuid()
        else:
            who = call.principal.credential_uuid or call.principal.kind
            request_id = f"{CLIENT_KEY_PREFIX}{who}:{key}"
        result = await self.proposer.propose(Command(op, args, request_id=request_id))
        if result.get("ok"):
            return result.get("value")
        code = result.get("code") or "invalid"
        field = result.get("field") or "body"
        message = result.get("message") or code
        raise APIError(
            _RESULT_STATUS.get(code, 400), f"{field}: {message}", {field: message}, code=code
        )

    # -- authentication ----------------------------------------------------

    async def _authenticate(self, route: Route, request: IRequest) -> Principal:
        if route.auth == ANONYMOUS:
            return Principal(ANONYMOUS)
        admin_only = route.auth == ADMIN
        challenge = {"WWW-Authenticate": REALM_CHALLENGE} if admin_only else {}
        try:
            authorization = _header(request, "authorization")
            api_key = _header(request, "x-api-key")
            api_secret = _header(request, "x-secret-key")
        except APIError as error:
            raise APIError(401, error.message, error.fields, headers=challenge) from None
        if authorization is not None:
            if self._admin_matches(authorization):
                return Principal(ADMIN)
            raise APIError(
                401,
                "authorization: wrong admin username or password",
                {"authorization": "rejected"},
                headers=challenge,
            )
        if api_key is None and api_secret is None:
            needed = (
                "HTTP Basic admin credentials"
                if admin_only
                else "x-api-key and x-secret-key headers (or HTTP Basic admin credentials)"
            )
            raise APIError(401, f"authentication required: send {needed}", {}, headers=challenge)
        for header, value in (("x-api-key", api_key), ("x-secret-key", api_secret)):
            if not value:
                raise APIError(
                    401, f"{header}: header is missing", {header: "missing"}, headers=challenge
                )
        assert api_key is not None and api_secret is not None  # both checked just above
        credential_uuid = await self._client_matches(api_key, api_secret, challenge)
        if admin_only:
            raise APIError(
                403, "this route needs admin credentials (HTTP Basic), not a client API key"
            )
        return Principal("client", credential_uuid)

    def _check_rate(self, principal: Principal) -> None:
        """
        Refuse with 429 a credential over its request rate. This runs after
        authentication, so the key is one the caller proved it holds.
        """
        if self.rate_limiter is None or principal.kind == ANONYMOUS:
            return
        if principal.kind == ADMIN:
            key, header = "admin", "authorization"
        else:
            key, header = f"client:{principal.credential_uuid}", "x-api-key"
        wait = self.rate_limiter.take(key)
        if wait is None:
            return
        seconds = math.ceil(wait)
        raise APIError(
            429,
            f"{header}: too many requests for this credential; retry in {seconds} s",
            {header: "over the request rate limit"},
            code="rate_limited",
            headers={"Retry-After": str(seconds)},
        )

    def _admin_matches(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        username, sep, password = decoded.partition(b":")
        expected_user = str(getattr(self.admin, "username", "") or "").encode("utf-8")
        expected_password = str(getattr(self.admin, "password", "") or "").encode("utf-8")
        if not sep or not expected_password:
            return False
        user_ok = hmac.compare_digest(username, expected_user)
        password_ok = hmac.compare_digest(password, expected_password)
        return user_ok and password_ok

    async def _client_matches(self, api_key: str, api_secret: str, challenge: dict) -> str | None:
        rejected = APIError(
            401,
            "x-api-key/x-secret-key: unknown API key or wrong secret",
            {"x-api-key": "rejected"},
            headers=challenge,
        )
        digest = hashlib.sha256(api_secret.encode("utf-8")).digest()
        known = self._live_credentials.get(api_key)
        if known is not None and hmac.compare_digest(known[0], digest):
            # Verified before and not archived since (an archive empties
            # this cache before it is acknowledged): no store read, no hash.
            return known[1]
        credential = await self.state.get_credential_by_key(api_key)
        if not credential and self.read_barrier is not None:
            # In a cluster the key may have been created a moment ago through
            # another node: look again once this node has caught up.
            try:
                await _maybe(self.read_barrier())
            except StoreUnavailable:
                raise rejected from None
            credential = await self.state.get_credential_by_key(api_key)
        if not credential:
            raise rejected
        hashed = credential.get("api_secret_hash") or ""
        key = (api_key, digest.hex(), hashed)
        if key not in self._verified:
            try:
                ok = bool(await _maybe(self.verify_secret(api_secret, hashed)))  # type: ignore[misc]
            except Exception:
                # The stored hash is unreadable; log which credential, never the headers.
                log.failure(
                    "verifying the secret of credential {uuid} failed",
                    Failure(),
                    uuid=credential.get("uuid"),
                )
                ok = False
            if not ok:
                raise rejected
            if len(self._verified) >= VERIFIED_CACHE_LIMIT:
                self._verified.clear()
            self._verified[key] = True
        if credential.get("archived_at"):
            raise APIError(
                401,
                "x-api-key: this credential has been archived",
                {"x-api-key": "archived"},
                headers=challenge,
            )
        if len(self._live_credentials) >= VERIFIED_CACHE_LIMIT:
            self._live_credentials.clear()
        self._live_credentials[api_key] = (digest, credential.get("uuid"))
        return credential.get("uuid")

    def on_applied(self, command: Command, result: Mapping[str, Any]) -> None:
        """
        The proposer's subscriber: forget verified credentials when one is
        archived (or the whole state is replaced), so the archived one is
        refused from the next request on, on every node as it applies.
        """
        if command.op in ("archive_credential", "state_restored"):
            self._live_credentials.clear()

    # -- presentation ------------------------------------------------------

    async def _present_jobs(self, jobs: list[dict], *, with_history: bool = True) -> list[dict]:
        """Stored jobs plus their read-only fields: next_run_at, last_run_at, last_status."""
        latest: dict[str, dict] = {}
        if with_history and jobs:
            latest = (
                await _maybe(self.executions.latest_per_job([job["uuid"] for job in jobs])) or {}
            )
        presented = []
        for position, job in enumerate(jobs):
            await self._breathe(position)
            out = dict(job)
            try:
                out["next_run_at"] = await _maybe(self.scheduler.next_run_at(job))
            except Exception:
                log.failure("next_run_at failed for job {uuid}", Failure(), uuid=job.get("uuid"))
                out["next_run_at"] = None
            execution = latest.get(job["uuid"])
            if execution:
                out["last_run_at"] = execution.get("started_at") or execution.get("scheduled_at")
                out["last_status"] = execution.get("state")
            else:
                out["last_run_at"] = None
                out["last_status"] = None
            presented.append(out)
        return presented

    async def _breathe(self, position: int) -> None:
        """Every 500th item of a large request, let the reactor do what waits."""
        if self.breathe is not None and position % 500 == 499:
            await _maybe(self.breathe())

    async def _present_job(self, job: dict, *, with_history: bool = True) -> dict:
        return (await self._present_jobs([job], with_history=with_history))[0]

    @staticmethod
    def _page(
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

    # -- cluster -----------------------------------------------------------------

    async def cluster_status(self, call: Call) -> dict:
        if self.cluster is not None:
            return await self.cluster.cluster_view()
        health = await _maybe(self.health())
        total = sum((await self.state.owner_counts()).values())
        term = health.get("term", 1)
        return {
            "node_id": health.get("node_id"),
            "leader_id": health.get("leader_id", health.get("node_id")),
            "term": term,
            "members": [
                {
                    **member,
                    "voter": True,
                    "reachable": True,
                    "term": term,
                    "commit_index": health.get("commit_index"),
                    "applied_index": health.get("applied_index"),
                    "lease_valid": True,
                    "scheduling_paused": health.get("scheduling_paused", False),
                    "owned_jobs": total,
                }
                for member in health.get("members", ())
            ],
        }

    def _single_node(self) -> APIError:
        return APIError(
            409,
            "cluster: this node runs alone (no Replicas in its config); membership changes "
            "need a cluster",
            {"cluster": "single node"},
            code="conflict",
        )

    async def add_member(self, call: Call) -> tuple[int, dict]:
        body = call.object_body()
        errors = FieldErrors()
        unknown = sorted(set(body) - {"node_id", "address", "raft_address"})
        for field in unknown:
            errors.add(field, f"{field}: unknown field")
        node_id = body.get("node_id")
        if isinstance(node_id, float) and node_id.is_integer():
            node_id = int(node_id)  # JSON does not tell 3 from 3.0
        if (
            isinstance(node_id, bool)
            or not isinstance(node_id, int)
            or not 1 <= node_id <= MAX_NODE_ID
        ):
            errors.add("node_id", f"node_id: must be an integer from 1 to {MAX_NODE_ID}")
        address = body.get("address")
        if not isinstance(address, str) or not re.search(MEMBER_ADDRESS_PATTERN, address):
            errors.add("address", "address: must be http://host:port or https://host:port")
        raft_address = body.get("raft_address")
        if not isinstance(raft_address, str) or not re.search(RAFT_ADDRESS_PATTERN, raft_address):
            errors.add("raft_address", "raft_address: must be host:port")
        errors.raise_if_any()
        if self.cluster is None:
            raise self._single_node()
        if node_id in self.cluster.member_ids():
            raise APIError(
                409, f"node_id: node {node_id} is already a member", {"node_id": "already a member"}
            )
        await self.cluster.change_members(
            add={"node_id": node_id, "address": address, "raft_address": raft_address}
        )
        return 201, await self.cluster.cluster_view()

    async def remove_member(self, call: Call) -> dict:
        text = call.path["node_id"]
        if not re.fullmatch(r"[1-9][0-9]{0,17}", text):
            raise invalid("node_id", "node_id: must be a positive integer")
        node_id = int(text)
        if self.cluster is None:
            raise self._single_node()
        if node_id not in self.cluster.member_ids():
            raise APIError(
                404,
                f"node_id: node {node_id} is not a member",
                {"node_id": "not a member"},
                code="not_found",
            )
        if node_id == self.cluster.leader_id:
            raise APIError(
                409,
                f"node_id: node {node_id} leads the cluster; stop it (another node takes "
                "over) and remove it then",
                {"node_id": "is the leader"},
            )
        await self.cluster.change_members(remove=node_id)
        return await self.cluster.cluster_view()

    # -- health and the document ---------------------------------------------

    async def health_check(self, call: Call) -> Any:
        """
        The node's health: 200 while it is ready (it can serve writes and
        fire its jobs), else 503 with the same body and the reasons.
        """
        health = await _maybe(self.health())
        if isinstance(health, dict) and health.get("ready") is False:
            reasons = [r for r in health.get("reasons") or () if isinstance(r, dict)]
            said = "; ".join(f"{r.get('code')}: {r.get('message')}" for r in reasons)
            raise APIError(
                503,
                f"this node is not ready ({said})" if said else "this node is not ready",
                code="not_ready",
                headers={"Retry-After": "1"},
                data=health,
            )
        return health

    async def liveness(self, call: Call) -> dict:
        """The process serves HTTP (for liveness probes); reads nothing."""
        return {"live": True, "node_id": getattr(self.defaults, "node_id", None)}

    async def openapi_document(self, call: Call) -> dict:
        if self._openapi is None:
            self._openapi = build_openapi(ROUTES, scheduler0.__version__)
        return self._openapi

    # -- projects ----------------------------------------------------------

    async def _project_or_404(self, project_uuid: str) -> dict:
        project = await self.state.get_project(project_uuid)
        if not project:
            raise _not_found("project", project_uuid)
        return project

    async def _check_notify_url(self, url: str | None) -> None:
        """CallbackAllowNetworks/CallbackDenyNetworks apply to notices as to callbacks."""
        if url is not None:
            reason = await check_url(self.net_policy, url, self.resolve)
            if reason is not None:
                raise invalid("notify_url", f"notify_url: {reason}")

    async def create_project(self, call: Call) -> dict:
        body = call.object_body()
        errors = FieldErrors()
        fields = check_project(body, errors=errors, partial=False)
        errors.raise_if_any()
        await self._check_notify_url(fields.get("notify_url"))
        if await self.state.get_project_by_name(fields["name"]):
            raise APIError(
                409,
                f"name: a project named {fields['name']!r} already exists",
                {"name": "already exists"},
            )
        now = format_instant(self._now())
        project = {
            "uuid": self.new_uuid(),
            "name": fields["name"],
            "description": fields.get("description", ""),
            "created_at": now,
            "updated_at": now,
        }
        # Left out when there is none, so nodes of an earlier release (in
        # an upgrade) apply the command alike.
        if fields.get("notify_url") is not None:
            project["notify_url"] = fields["notify_url"]
        secret = self.token(32)
        value = await self._propose(
            "create_project", {"project": project, "signing_secret": secret}, call=call
        )
        # The signing secret is shown in this answer only.
        local = {**project, "notify_url": fields.get("notify_url")}
        return {**_prefer(value, local), "signing_secret": secret}

    async def rotate_signing_secret(self, call: Call) -> dict:
        body = call.object_body(required=False) or {}
        unknown = sorted(set(body) - {"grace_s"})
        if unknown:
            raise invalid(unknown[0], f"{unknown[0]}: unknown field")
        grace = body.get("grace_s", self.signing_grace_s)
        if (
            isinstance(grace, bool)
            or not isinstance(grace, (int, float))
            or not 0 <= grace <= 30 * 86400
        ):
            raise invalid("grace_s", "grace_s: must be a number of seconds from 0 to 2592000")
        project = await self._project_or_404(call.path["uuid"])
        now = self._now()
        secret = self.token(32)
        expires_at = format_instant(now + timedelta(seconds=grace))
        await self._propose(
            "rotate_signing_secret",
            {
                "project_uuid": project["uuid"],
                "secret": secret,
                "at": format_instant(now),
                "expires_at": expires_at,
            },
            call=call,
        )
        return {
            "project_uuid": project["uuid"],
            "signing_secret": secret,
            "previous_expires_at": expires_at,
        }

    async def list_projects(self, call: Call) -> dict:
        limit, offset = call.query["limit"], call.query["offset"]
        items, total = await self.state.list_projects(limit=limit, offset=offset)
        return self._page(list(items), total, limit, offset)

    async def get_project(self, call: Call) -> dict:
        return await self._project_or_404(call.path["uuid"])

    async def update_project(self, call: Call) -> dict:
        body = call.object_body()
        errors = FieldErrors()
        changes = check_project(body, errors=errors, partial=True)
        errors.raise_if_any()
        project = await self._project_or_404(call.path["uuid"])
        changes = {k: v for k, v in changes.items() if project.get(k) != v}
        if not changes:
            return project
        if "notify_url" in changes:
            await self._check_notify_url(changes["notify_url"])
        if "name" in changes:
            other = await self.state.get_project_by_name(changes["name"])
            if other and other.get("uuid") != project["uuid"]:
                raise APIError(
                    409,
                    f"name: a project named {changes['name']!r} already exists",
                    {"name": "already exists"},
                )
        updated_at = format_instant(self._now())
        value = await self._propose(
            "update_project",
            {"uuid": project["uuid"], "changes": changes, "updated_at": updated_at},
            call=call,
        )
        return _prefer(value, {**project, **changes, "updated_at": updated_at})

    async def delete_project(self, call: Call) -> dict:
        project = await self._project_or_404(call.path["uuid"])
        cascade = bool(call.query.get("cascade"))
        if not cascade:
            count = await self.state.count_jobs(project["uuid"])
            if count:
                raise APIError(
                    409,
                    f"project has {count} job{'s' if count != 1 else ''}; "
                    "delete them first or pass ?cascade=true",
                    {"cascade": f"project has {count} jobs"},
                )
        value = await self._propose(
            "delete_project", {"uuid": project["uuid"], "cascade": cascade}, call=call
        )
        await self._everywhere()
        return value if isinstance(value, dict) else {"uuid": project["uuid"], "deleted_jobs": []}

    # -- jobs --------------------------------------------------------------

    async def _job_or_404(self, job_uuid: str) -> dict:
        job = await self.state.get_job(job_uuid)
        if not job:
            raise _not_found("job", job_uuid)
        return job

    async def _check_projects_exist(self, wanted: dict[str, list[str]]) -> None:
        """C{wanted} maps a project uuid to the field paths naming it; 404 for missing ones."""
        missing: dict[str, str] = {}
        for project_uuid, paths in wanted.items():
            if not await self.state.get_project(project_uuid):
                for path in paths:
                    missing[path] = f"{path}: no project {project_uuid!r}"
        if missing:
            raise error_for_fields(missing, 404)

    async def create_jobs(self, call: Call) -> tuple[int, Any]:
        body = call.json_body()
        if isinstance(body, dict):
            items, prefixes = [body], [""]
        elif isinstance(body, list):
            if not body:
                raise invalid(
                    "jobs", f"jobs: the array is empty; send 1 to {self.max_jobs_per_request} jobs"
                )
            if len(body) > self.max_jobs_per_request:
                raise APIError(
                    413,
                    f"jobs: {len(body)} jobs in one request; "
                    f"at most {self.max_jobs_per_request} are allowed",
                    {"jobs": f"at most {self.max_jobs_per_request} jobs"},
                )
            items, prefixes = body, [f"jobs[{i}]." for i in range(len(body))]
        else:
            raise invalid("body", "body: must be a job object or an array of job objects")
        errors = FieldErrors()
        cleaned: list[dict] = []
        for position, (item, prefix) in enumerate(zip(items, prefixes, strict=True)):
            await self._breathe(position)
            if not isinstance(item, dict):
                path = prefix.rstrip(".")
                errors.add(path, f"{path}: must be a job object")
                continue
            cleaned.append(check_job(item, prefix=prefix, errors=errors, partial=False))
        errors.raise_if_any()
        # CallbackAllowNetworks/CallbackDenyNetworks, on the addresses the
        # URLs' hosts resolve to now (and again when each callback is sent).
        verdicts = await check_urls(
            self.net_policy, [fields["callback_url"] for fields in cleaned], self.resolve
        )
        for reason, prefix in zip(verdicts, prefixes, strict=True):
            if reason is not None:
                errors.add(prefix + "callback_url", f"{prefix}callback_url: {reason}")
        errors.raise_if_any()
        wanted: dict[str, list[str]] = {}
        for fields, prefix in zip(cleaned, prefixes, strict=True):
            wanted.setdefault(fields["project_uuid"], []).append(prefix + "project_uuid")
        await self._check_projects_exist(wanted)
        now = self._now()
        stamp = format_instant(now)
        anchor = format_instant(now.replace(microsecond=0))
        defaults = self.defaults
        # The fields added after the first release, as a job without them
        # gets them: those at the state machine's own defaults are left out
        # of the command, so nodes of the earlier release apply it alike
        # during an upgrade (see ADDED_JOB_DEFAULTS).
        added: dict[str, Any] = {
            "retry_delay_s": float(defaults.job_execution_retry_delay),
            "retry_max_delay_s": float(defaults.job_execution_retry_max_delay),
            "concurrency_policy": "allow",
            "coalesce": False,
        }
        jobs = [
            {
                "uuid": self.new_uuid(),
                "project_uuid": fields["project_uuid"],
                "name": fields["name"],
                "spec": fields["spec"],
                "callback_url": fields["callback_url"],
                "data": fields.get("data"),
                "timezone": fields.get("timezone", "UTC"),
                "execution_type": fields.get("execution_type", "http"),
                "paused": fields.get("paused", False),
                "catch_up_window_s": float(
                    fields.get("catch_up_window_s", defaults.catch_up_window_seconds)
                ),
                "timeout_s": float(fields.get("timeout_s", defaults.job_execution_timeout)),
                "retry_max": int(fields.get("retry_max", defaults.job_execution_retry_max)),
                "created_at": stamp,
                "updated_at": stamp,
                "anchor_at": anchor,
            }
            for fields in cleaned
        ]
        sent = {k: v for k, v in added.items() if ADDED_JOB_DEFAULTS[k] != v}
        cap = payload_cap_bytes(defaults.http_executor_payload_max_size_mb)
        default_delays: tuple[float, float] = (added["retry_delay_s"], added["retry_max_delay_s"])
        for position, (job, fields, prefix) in enumerate(zip(jobs, cleaned, prefixes, strict=True)):
            await self._breathe(position)
            if _ADDED_FIELDS.isdisjoint(fields):
                if sent:
                    job.update(sent)
                delays = default_delays
            else:
                mine = {k: fields.get(k, default) for k, default in added.items()}
                mine["retry_delay_s"] = float(mine["retry_delay_s"])
                mine["retry_max_delay_s"] = float(mine["retry_max_delay_s"])
                job.update({k: v for k, v in mine.items() if ADDED_JOB_DEFAULTS[k] != v})
                delays = (mine["retry_delay_s"], mine["retry_max_delay_s"])
            self._check_new_job(job, fields, prefix, now, cap, errors, delays)
        errors.raise_if_any()
        value = await self._propose("create_jobs", {"jobs": jobs}, call=call)
        if isinstance(value, list) and (len(value) == len(jobs) or call.idempotency_key()):
            # (A retry under an Idempotency-Key answers with the first
            # request's jobs, however many of them still exist.)
            jobs = value
        else:
            jobs = [{**ADDED_JOB_DEFAULTS, **job} for job in jobs]
        presented = await self._present_jobs(jobs, with_history=False)
        return 201, (presented[0] if isinstance(body, dict) else presented)

    @staticmethod
    def _check_new_job(
        job: dict,
        given: dict,
        prefix: str,
        now: datetime,
        cap: int,
        errors: FieldErrors,
        delays: tuple[float, float],
    ) -> None:
        """
        What a new or changed C{job} must also be, given the fields the
        request C{given} and the job's C{delays} (retry_delay_s,
        retry_max_delay_s): the longest retry wait not below the first, an
        C{@at} not in the past, C{data} that a callback can carry. Each
        problem is added to C{errors} under C{prefix + field}.
        """
        problem = retry_delays_problem(
            *delays, given="retry_delay_s" in given and "retry_max_delay_s" in given
        )
        if problem is not None:
            errors.add(prefix + "retry_max_delay_s", f"{prefix}retry_max_delay_s: {problem}")
        if "spec" in given:
            problem = past_at_problem(job["spec"], now)
            if problem is not None:
                errors.add(prefix + "spec", f"{prefix}spec: {problem}")
        if _SIZED_FIELDS.intersection(given):
            problem = data_problem(job, cap)
            if problem is not None:
                errors.add(prefix + "data", f"{prefix}data: {problem}")

    async def list_jobs(self, call: Call) -> dict:
        limit, offset = call.query["limit"], call.query["offset"]
        project_uuid = call.query.get("project_uuid")
        if project_uuid is not None and not await self.state.get_project(project_uuid):
            raise _not_found("project", project_uuid, "project_uuid")
        # One row more than the page, to know whether another page follows
        # even when rows before this position went away meanwhile.
        items, total = await self.state.list_jobs(
            project_uuid=project_uuid,
            paused=call.query.get("paused"),
            limit=limit + 1,
            offset=offset,
            after=call.query.get("after"),
        )
        more = len(items) > limit
        presented = await self._present_jobs(list(items)[:limit])
        return self._page(presented, total, limit, offset, more=more)

    async def get_job(self, call: Call) -> dict:
        return await self._present_job(await self._job_or_404(call.path["uuid"]))

    async def update_job(self, call: Call) -> dict:
        body = call.object_body()
        errors = FieldErrors()
        changes = check_job(body, prefix="", errors=errors, partial=True)
        errors.raise_if_any()
        job = await self._job_or_404(call.path["uuid"])
        for key in ("catch_up_window_s", "timeout_s", "retry_delay_s", "retry_max_delay_s"):
            if key in changes:
                changes[key] = float(changes[key])
        changes = {k: v for k, v in changes.items() if _canonical(job.get(k)) != _canonical(v)}
        if not changes:
            return await self._present_job(job)
        now = self._now()
        changed = {**job, **changes}
        self._check_new_job(
            changed,
            changes,
            "",
            now,
            payload_cap_bytes(self.defaults.http_executor_payload_max_size_mb),
            errors,
            (changed["retry_delay_s"], changed["retry_max_delay_s"]),
        )
        errors.raise_if_any()
        if "callback_url" in changes:
            reason = await check_url(self.net_policy, changes["callback_url"], self.resolve)
            if reason is not None:
                raise invalid("callback_url", f"callback_url: {reason}")
        if "project_uuid" in changes:
            await self._check_projects_exist({changes["project_uuid"]: ["project_uuid"]})
        updated_at = format_instant(now)
        if "spec" in changes or "timezone" in changes:
            changes["anchor_at"] = format_instant(now.replace(microsecond=0))
        value = await self._propose(
            "update_job",
            {"uuid": job["uuid"], "changes": changes, "updated_at": updated_at},
            call=call,
        )
        await self._everywhere()
        return await self._present_job(_prefer(value, {**job, **changes, "updated_at": updated_at}))

    async def _everywhere(self) -> None:
        """
        In a cluster, answer a change to what fires (pause, delete, a new
        schedule) only once the job's owner follows it: every node that
        answers has applied it, and one that does not has lost its lease.
        """
        if self.cluster is not None:
            await self.cluster.wait_members_applied(self.cluster.change_settle_s)

    async def delete_job(self, call: Call) -> dict:
        job = await self._job_or_404(call.path["uuid"])
        value = await self._propose("delete_job", {"uuid": job["uuid"]}, call=call)
        await self._everywhere()
        return value if isinstance(value, dict) else {"uuid": job["uuid"]}

    async def run_job(self, call: Call) -> tuple[int, Any]:
        job = await self._job_or_404(call.path["uuid"])
        execution = await _maybe(self.scheduler.run_now(job))
        return 202, execution

    async def next_runs(self, call: Call) -> dict:
        job = await self._job_or_404(call.path["uuid"])
        zone_name = job.get("timezone") or "UTC"
        try:
            anchor = parse_instant(job.get("anchor_at") or job["created_at"])
            schedule = make_schedule(job["spec"], zone_name, anchor)
        except (SpecError, ValueError) as error:
            raise APIError(
                409,
                f"spec: the stored schedule cannot be evaluated ({error})",
                {"spec": str(error)},
            ) from None
        zone = ZoneInfo(zone_name)
        items = []
        instant: datetime | None = self._now()
        for _ in range(call.query["n"]):
            instant = schedule.next_after(instant)  # type: ignore[arg-type]
            if instant is None:
                break
            try:
                local = instant.astimezone(zone).isoformat(timespec="milliseconds")
            except OverflowError:
                break  # past the year 9999 in the job's zone: no date can show it
            items.append({"utc": format_instant(instant), "local": local})
        return {"items": items, "timezone": zone_name, "paused": bool(job.get("paused"))}

    # -- executions --------------------------------------------------------

    async def _executions_page(self, call: Call, **filters: Any) -> dict:
        limit, offset = call.query["limit"], call.query["offset"]
        since, until = call.query.get("since"), call.query.get("until")
        if since is not None and until is not None and until <= since:
            raise invalid("until", "until: must be later than since")
        answer = await _maybe(
            self.executions.query(
                state=call.query.get("state"),
                since=since,
                until=until,
                limit=limit,
                offset=offset,
                **filters,
            )
        )
        page = self._page(list(answer[0]), answer[1], limit, offset)
        # In a cluster: the members whose records could not be read now.
        page["missing_nodes"] = list(answer[2]) if len(answer) > 2 else []
        return page

    async def list_executions(self, call: Call) -> dict:
        return await self._executions_page(
            call, job_uuid=call.query.get("job_uuid"), project_uuid=call.query.get("project_uuid")
        )

    async def job_executions(self, call: Call) -> dict:
        job = await self._job_or_404(call.path["uuid"])
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

    # -- credentials (admin) -------------------------------------------------

    async def _credential_or_404(self, credential_uuid: str) -> dict:
        credential = await self.state.get_credential(credential_uuid)
        if not credential:
            raise _not_found("credential", credential_uuid)
        return _public_credential(credential)

    def create_credential(self) -> Deferred:
        """
        Make a new client credential through the state machine; fires with
        C{{uuid, api_key, api_secret, created_at}}. The secret exists only in
        this result: the store keeps its hash. (Used by the route and by a
        new node printing its first credential.)
        """
        return Deferred.fromCoroutine(self._create_credential())

    async def _create_credential(self) -> dict:
        api_key = self.token(24)
        api_secret = self.token(32)
        credential = {
            "uuid": self.new_uuid(),
            "api_key": api_key,
            "api_secret_hash": await _maybe(self.hash_secret(api_secret)),  # type: ignore[misc]
            "created_at": format_instant(self._now()),
        }
        await self._propose("create_credential", {"credential": credential})
        return {
            "uuid": credential["uuid"],
            "api_key": api_key,
            "api_secret": api_secret,
            "created_at": credential["created_at"],
        }

    async def post_credential(self, call: Call) -> tuple[int, dict]:
        body = call.object_body(required=False)
        if body:
            name = next(iter(body))
            raise invalid(name, f"{name}: unknown field (a credential takes no fields)")
        return 201, await self._create_credential()

    async def list_credentials(self, call: Call) -> dict:
        limit, offset = call.query["limit"], call.query["offset"]
        items, total = await self.state.list_credentials(limit=limit, offset=offset)
        return self._page([_public_credential(c) for c in items], total, limit, offset)

    async def get_credential(self, call: Call) -> dict:
        return await self._credential_or_404(call.path["uuid"])

    async def archive_credential(self, call: Call) -> dict:
        credential = await self._credential_or_404(call.path["uuid"])
        if credential.get("archived_at"):
            return credential
        archived_at = format_instant(self._now())
        value = await self._propose(
            "archive_credential",
            {"uuid": credential["uuid"], "archived_at": archived_at},
            call=call,
        )
        if self.cluster is not None:
            # Acknowledged once every reachable node refuses the credential too.
            await self.cluster.wait_members_applied(self.cluster.config.raft_apply_timeout)
        return _public_credential(_prefer(value, {**credential, "archived_at": archived_at}))


# What a job's callback item carries (with retry_max, its attempt number).
_SIZED_FIELDS = frozenset(("data", "name", "spec", "project_uuid", "retry_max"))


_ADDED_FIELDS = frozenset(ADDED_JOB_DEFAULTS)


def _prefer(value: Any, local: dict) -> dict:
    """The state machine's answer when it is a record, else what this node computed."""
    if isinstance(value, dict) and "uuid" in value:
        return value
    return local


def _public_credential(credential: Mapping[str, Any]) -> dict:
    public = {k: v for k, v in credential.items() if k not in ("api_secret_hash", "api_secret")}
    public.setdefault("archived_at", None)
    return public


def _canonical(value: Any) -> str:
    """A comparable text form of a JSON value (so 1 and true differ, key order does not matter)."""
    return json.dumps(value, sort_keys=True)


def _encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _parse_query(route: Route, request: IRequest) -> dict[str, Any]:
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
    errors.raise_if_any()
    if "cursor" in params:
        if "cursor" in values and "offset" in values:
            raise invalid("cursor", "cursor: give either cursor or offset, not both")
        if "cursor" in values:
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
    if not text:
        raise Invalid("must not be empty")
    if param.enum and text not in param.enum:
        raise Invalid(f"must be one of {', '.join(param.enum)}, not {text!r}")
    return text
