"""
The HTTP API (SPEC §5) as a Klein application.

Every route comes from L{scheduler0.api.routes.ROUTES} and is served both
under C{/api/v1} and without a prefix. A request is authenticated, its query
string and body are checked completely, and only then does a write become a
L{Command} with its ids and timestamps fixed here, so the state machine only
ever sees valid, deterministic commands and a rejected request changes
nothing.

L{SchedulerAPI} is the composition: the request layer (L{scheduler0.api.auth}
and L{scheduler0.api.request}: authentication, rate limits, the query and
body, idempotent writes, the envelope and error mapping) in front of one
resource per part of the API (projects, jobs, executions, credentials,
cluster, health), each serving the routes of the table its C{HANDLERS} name.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from scheduler0.api.audit import AuditResource
from scheduler0.api.auth import Authenticator, default_verify
from scheduler0.api.backup import BackupMaker, BackupResource
from scheduler0.api.cluster import ClusterResource
from scheduler0.api.credentials import CredentialsResource
from scheduler0.api.errors import APIError, insufficient_storage
from scheduler0.api.executions import ExecutionsResource
from scheduler0.api.health import HealthResource
from scheduler0.api.jobs import JobsResource, no_resolver
from scheduler0.api.limits import FailureThrottle, RateLimiter
from scheduler0.api.openapi import MAX_JOBS_PER_REQUEST
from scheduler0.api.ports import Cluster, ExecutionHistory, Proposer, Scheduler, StateReader
from scheduler0.api.projects import ProjectsResource
from scheduler0.api.request import (
    Auditor,
    Call,
    Handler,
    Principal,
    Writes,
    encode,
    maybe,
    parse_query,
)
from scheduler0.api.routes import CLIENT, PREFIXES, ROUTES, Route
from scheduler0.api.scope import check_route
from scheduler0.api.site import body_limited_request
from scheduler0.credentials import token as make_token
from scheduler0.errors import StoreUnavailable, WritesRefused
from scheduler0.netpolicy import NetworkPolicy
from scheduler0.sealing import SecretSealer
from scheduler0.store.audit import DEFAULT_KEEP
from scheduler0.store.commands import Command, Op, Result
from scheduler0.ui import dashboard_resource
from scheduler0.versions import EntryVersionTooLow

log = Logger()

# GET /metrics: served beside the route table, authenticated as a client route.
_METRICS_ROUTE = Route("GET", "/metrics", "metrics", CLIENT, "Prometheus metrics of this node.")


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


def _to_dashboard(request: IRequest) -> bytes:
    """C{GET /}: a redirect to the dashboard at C{/ui/}."""
    request.setResponseCode(302)
    request.setHeader(b"location", b"/ui/")
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"The dashboard is at /ui/\n"


@attrs.define(eq=False, kw_only=True)
class SchedulerAPI:
    """
    The Klein application serving SPEC §5; C{resource()} is what the HTTP
    site serves.

    The fields are what the node gives at construction; the parts built
    from them (C{auth}, C{writes} and the resources) hold what they use, so
    a change after construction is made on the part.

    C{auth} authenticates and rate-limits, C{writes} proposes, and
    C{project_routes}, C{job_routes}, C{execution_routes},
    C{credential_routes}, C{cluster_routes} and C{health_routes} answer the
    routes their C{HANDLERS} name.

    C{read_barrier}, when given, is awaited before every linearizable read
    (a GET of replicated state without C{?consistency=stale}); a Raft node
    passes its ReadIndex wait here. Without it reads are local, which is
    linearizable on a single node.
    """

    state: StateReader
    proposer: Proposer
    executions: ExecutionHistory
    scheduler: Scheduler
    clock: IReactorTime
    defaults: Any
    admin: Any
    health: Callable[[], Any]
    new_uuid: Callable[[], str] = _default_uuid
    token: Callable[[int], str] = make_token
    max_body_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 32
    # Seals signing secrets before they are proposed (scheduler0.sealing).
    sealer: SecretSealer | None = None
    # Where callbacks may go (open by default, so resolve is never called).
    net_policy: NetworkPolicy = attrs.field(factory=NetworkPolicy)
    resolve: Callable[[str], Deferred] = no_resolver
    # Requests per credential (None: no limit); see scheduler0.api.limits.
    rate_limiter: RateLimiter | None = None
    max_jobs_per_request: int = MAX_JOBS_PER_REQUEST
    # How new client secrets are stored (None: the keyed hash of
    # scheduler0.secret_hash under the admin credentials' secret_key); may
    # return a Deferred.
    hash_secret: Callable[[str], Any] | None = None
    # Checks a pbkdf2 hash from before keyed hashes; may return a Deferred
    # (the node runs it in a thread: it takes milliseconds).
    verify_secret: Callable[[str, str], Any] = default_verify
    # Failed authentications per address and key (None: a FailureThrottle
    # with its defaults on this clock).
    throttle: FailureThrottle | None = None
    read_barrier: Callable[[], Any] | None = None
    # The node's ClusterNode when it runs with Replicas (None: a single node).
    cluster: Cluster | None = None
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
    # The leader's clock as this node knows it, for the stamps and anchors of
    # jobs (None: this node's clock).
    cluster_time: Callable[[], float] | None = None
    # Makes the backups GET /backup serves (None: the route answers 404).
    backups: BackupMaker | None = None
    app: Klein = attrs.field(init=False, factory=Klein)
    auth: Authenticator = attrs.field(init=False)
    writes: Writes = attrs.field(init=False)
    project_routes: ProjectsResource = attrs.field(init=False)
    job_routes: JobsResource = attrs.field(init=False)
    execution_routes: ExecutionsResource = attrs.field(init=False)
    credential_routes: CredentialsResource = attrs.field(init=False)
    cluster_routes: ClusterResource = attrs.field(init=False)
    health_routes: HealthResource = attrs.field(init=False)
    backup_routes: BackupResource = attrs.field(init=False)
    audit_routes: AuditResource = attrs.field(init=False)
    _handlers: dict[str, Handler] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._build_parts()
        self._register_routes()

    def _build_parts(self) -> None:
        """The request layer and the resources, each given what it uses."""
        auditor = Auditor(
            lambda: self.state.entry_version(),
            self.clock,
            getattr(self.defaults, "node_id", None),
            int(getattr(self.defaults, "audit_log_max_entries", DEFAULT_KEEP)),
            self.cluster_time,
        )
        self.writes = Writes(self.proposer, self.new_uuid, self.cluster, auditor)
        observer = self.metrics if hasattr(self.metrics, "on_auth_failure") else None
        self.auth = Authenticator(
            state=self.state,
            admin=self.admin,
            clock=self.clock,
            verify_secret=self.verify_secret,
            upgrade_hash=self._upgrade_hash,
            read_barrier=self.read_barrier,
            rate_limiter=self.rate_limiter,
            throttle=self.throttle if self.throttle is not None else FailureThrottle(self.clock),
            observer=observer,
        )
        self.project_routes = ProjectsResource(
            state=self.state,
            writes=self.writes,
            clock=self.clock,
            token=self.token,
            net_policy=self.net_policy,
            resolve=self.resolve,
            signing_grace_s=self.signing_grace_s,
            sealer=self.sealer,
            previous_sealers=self.sealer.previous if self.sealer is not None else (),
            hasher=self.auth.hasher,
        )
        self.job_routes = JobsResource(
            state=self.state,
            writes=self.writes,
            executions=self.executions,
            scheduler=self.scheduler,
            clock=self.clock,
            defaults=self.defaults,
            net_policy=self.net_policy,
            resolve=self.resolve,
            max_jobs_per_request=self.max_jobs_per_request,
            breathe=self.breathe,
            cluster_time=self.cluster_time,
        )
        self.execution_routes = ExecutionsResource(
            state=self.state,
            executions=self.executions,
            defaults=self.defaults,
            summary=self.summary,
            cluster=self.cluster,
        )
        self.credential_routes = CredentialsResource(
            state=self.state,
            writes=self.writes,
            clock=self.clock,
            token=self.token,
            hash_secret=self.hash_secret or self.auth.hasher.hash,
            cluster=self.cluster,
        )
        self.cluster_routes = ClusterResource(
            state=self.state, health=self.health, cluster=self.cluster
        )
        self.health_routes = HealthResource(health=self.health, defaults=self.defaults)
        self.backup_routes = BackupResource(backups=self.backups)
        self.audit_routes = AuditResource(state=self.state)
        for part in (
            self.audit_routes,
            self.project_routes,
            self.job_routes,
            self.execution_routes,
            self.credential_routes,
            self.cluster_routes,
            self.health_routes,
            self.backup_routes,
        ):
            for name in part.HANDLERS:
                if name in self._handlers:
                    raise ValueError(f"two resources serve {name}")
                self._handlers[name] = getattr(part, name)

    def _register_routes(self) -> None:
        """Klein routes for the route table (each a resource's handler), the dashboard, /metrics."""
        for route in ROUTES:
            if route.handler not in self._handlers:
                raise ValueError(f"no resource serves {route.method} {route.path}")
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
        # The node's root points a browser to the dashboard (no data, so no
        # authentication either); 302, as /ui does: a later release may
        # answer something else here, which a cached 301 would hide.
        self.app.route("/", methods=["GET"], endpoint="root")(_to_dashboard)
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

    def create_credential(self) -> Deferred:
        """
        Make a new client credential through the state machine; fires with
        C{{uuid, api_key, api_secret, created_at}}. (A new node prints its
        first credential this way.)
        """
        return self.credential_routes.create_credential()

    def _upgrade_hash(self, uuid: str, old_hash: str, new_hash: str) -> Deferred:
        """Propose replacing a credential's pbkdf2 hash by its keyed hash."""
        args = {"uuid": uuid, "old_hash": old_hash, "new_hash": new_hash}
        return Deferred.fromCoroutine(self.writes.propose(Op.UPGRADE_CREDENTIAL_HASH, args))

    def on_applied(self, command: Command, result: Result) -> None:
        """The proposer's subscriber: see L{Authenticator.on_applied}."""
        self.auth.on_applied(command, result)

    # -- the request layer: serving a route, the envelope, errors ------------

    def _view(self, route: Route) -> Callable[..., Deferred]:
        def view(request: IRequest, **path: str) -> Deferred:
            return Deferred.fromCoroutine(self._serve(route, request, path))

        view.__name__ = route.handler
        return view

    async def _serve(self, route: Route, request: IRequest, path: dict[str, str]) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        principal: Principal | None = None
        try:
            principal = await self.auth.authenticate(route, request)
            self.auth.check_rate(principal)
            if route.auth == CLIENT:
                check_route(route.handler, route.method, principal.scope, path)
            query = parse_query(route, request)
            call = Call(
                request,
                principal,
                query,
                path,
                self.max_body_bytes,
                self.max_json_depth,
                route=route,
            )
            if self.read_barrier is not None and (
                query.get("consistency") == "linearizable"
                or (route.method != "GET" and self.cluster is not None)
            ):
                # A write decides from what is stored (does the job exist,
                # is this a change at all): in a cluster it must see every
                # acknowledged write first, like a linearizable read.
                await maybe(self.read_barrier())
            result = await self._handlers[route.handler](call)
            if route.handler == "openapi_document":
                request.setResponseCode(200)
                return encode(result)
            if route.media_type != "application/json":
                # A file (a backup): the resource answered sets its own headers.
                return result
            status, data = result if isinstance(result, tuple) else (route.status, result)
            request.setResponseCode(status)
            return encode({"success": True, "data": data})
        except APIError as error:
            if error.status == 403:
                # Not replicated (nothing was proposed): this line is its record.
                log.info(
                    "refused {method} {path} to credential {credential}: {message}",
                    method=route.method,
                    path=route.path,
                    credential=getattr(principal, "credential_uuid", None),
                    message=error.message,
                    event="scope_refused",
                )
            return self._error_body(request, error)
        except WritesRefused as error:
            # Nothing was stored; the node logs the refusal once, when it began.
            return self._error_body(request, insufficient_storage(error))
        except EntryVersionTooLow as error:
            # A member runs an older release that would misread the entry.
            return self._error_body(
                request,
                APIError(
                    409,
                    str(error),
                    {error.feature: str(error)},
                    code="entry_version_too_low",
                    data={"needed": error.needed, "current": error.current},
                ),
            )
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
            self.auth.check_rate(await self.auth.authenticate(_METRICS_ROUTE, request))
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
        return encode(error.envelope())

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
