"""
Test harness for the HTTP API: the real L{SchedulerAPI} driven in memory
through StubTreq, over the real store (StateStore, CommandLog, LocalProposer,
ExecutionStore) on the synchronous in-memory SQLite pool, so every request
runs real SQL and the state machine's own answers. Only the scheduler is a
fake (it needs the executor and the network).
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any

import attrs
from passlib.hash import pbkdf2_sha256
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from harness.sqlite_fake import SynchronousConnectionPool
from scheduler0.api.app import SchedulerAPI
from scheduler0.api.limits import FailureThrottle
from scheduler0.errors import StoreUnavailable
from scheduler0.store.commands import Result
from scheduler0.store.executions import ExecutionStore
from scheduler0.store.local import LocalProposer
from scheduler0.store.log import CommandLog
from scheduler0.store.state import StateStore

# 2026-01-02T03:04:05.678Z
START = 1767323045.678
ADMIN_USER = "admin"
ADMIN_PASSWORD = "s3cret-admin"

# Fast pbkdf2 for tests of hashes from before keyed hashes: fewer rounds.
_fast = pbkdf2_sha256.using(rounds=1000)


@attrs.frozen
class Defaults:
    node_id: int = 1
    catch_up_window_seconds: float = 60
    job_execution_timeout: float = 30
    job_execution_retry_max: int = 10
    job_execution_retry_delay: float = 1
    job_execution_retry_max_delay: float = 60
    http_executor_payload_max_size_mb: float = 2
    audit_log_max_entries: int = 100_000


@attrs.frozen
class Admin:
    username: str = ADMIN_USER
    password: str = ADMIN_PASSWORD
    secret_key: str = "test-secret-key"


def fired(d: Any) -> Any:
    """The result of a Deferred that has already fired (the synchronous pool's kind)."""
    if not isinstance(d, Deferred):
        return d
    results: list = []
    d.addBoth(results.append)
    assert results, "expected an already-fired Deferred"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def real_backend(clock: Clock) -> tuple[Any, Any, Any]:
    """The real store on in-memory SQLite through the synchronous pool."""
    state = StateStore(SynchronousConnectionPool(":memory:"))
    fired(state.open())
    command_log = CommandLog(SynchronousConnectionPool(":memory:"))
    fired(command_log.open())
    proposer = LocalProposer(command_log, state, clock)
    fired(proposer.start())
    executions = ExecutionStore(SynchronousConnectionPool(":memory:"), clock)
    fired(executions.open())
    return state, proposer, executions


@attrs.define(eq=False)
class RecordingProposer:
    """
    The real proposer, recording every command; it can be told to fail as an
    unreachable cluster does, or to answer a given rejection.
    """

    inner: Any
    proposed: list = attrs.field(factory=list)
    unavailable: bool = False
    rejection: Result | None = None

    def propose(self, command):
        if self.unavailable:
            return fail(StoreUnavailable("no leader"))
        self.proposed.append(command)
        if self.rejection is not None:
            return succeed(self.rejection)
        return self.inner.propose(command)


@attrs.define(eq=False)
class RecordingExecutions:
    """The real execution log, recording the filters of every query."""

    inner: Any
    queries: list = attrs.field(factory=list)

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
        """Record the five filters (None: not filtered on), then ask the real log."""
        filters = {
            "job_uuid": job_uuid,
            "project_uuid": project_uuid,
            "state": state,
            "since": since,
            "until": until,
        }
        self.queries.append(filters)
        return self.inner.query(limit=limit, offset=offset, **filters)

    def latest_per_job(self, job_uuids):
        return self.inner.latest_per_job(job_uuids)


@attrs.define(eq=False)
class FakeScheduler:
    """Records run_now calls; next_run_at is a fixed text for active jobs."""

    ran: list = attrs.field(factory=list)
    next_text: str = "2030-01-01T00:00:00.000Z"
    run_error: Exception | None = None

    def run_now(self, job):
        if self.run_error is not None:
            raise self.run_error
        self.ran.append(job)
        return succeed(
            {"execution_id": f"run-{job['uuid']}", "job_uuid": job["uuid"], "state": "scheduled"}
        )

    def next_run_at(self, job):
        return None if job.get("paused") else self.next_text


def basic(user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> dict:
    token = b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Harness:
    """
    One API over a fresh in-memory store, with a client credential (made
    through the API) already stored.
    """

    def __init__(self, legacy_hashes: bool = False, **api_options: Any) -> None:
        """
        C{legacy_hashes}: store new secrets as pbkdf2 hashes, as nodes did
        before keyed hashes. The failure throttle allows 1000 failures unless
        C{throttle} is given, so tests of single refusals are not throttled.
        """
        self.clock = Clock()
        self.clock.advance(START)
        self.state, real_proposer, real_executions = real_backend(self.clock)
        self.proposer = RecordingProposer(real_proposer)
        self.executions = RecordingExecutions(real_executions)
        self.scheduler = FakeScheduler()
        self.counter = 0
        self.verifications = 0

        def verify(secret: str, hashed: str) -> bool:
            self.verifications += 1
            return _fast.verify(secret, hashed)

        options: dict[str, Any] = dict(
            state=self.state,
            proposer=self.proposer,
            executions=self.executions,
            scheduler=self.scheduler,
            clock=self.clock,
            defaults=Defaults(),
            admin=Admin(),
            health=lambda: {"node_id": 1, "role": "leader", "ready": True, "reasons": []},
            new_uuid=self._uuid,
            token=lambda n: f"tok{self._next()}-{n}",
            verify_secret=verify,
            throttle=FailureThrottle(self.clock, allowed=1000),
        )
        if legacy_hashes:
            options["hash_secret"] = _fast.hash
        options.update(api_options)
        self.api = SchedulerAPI(**options)
        # As the node does: the API learns of archived credentials on apply.
        real_proposer.subscribe(self.api.on_applied)
        self.treq = StubTreq(self.api.resource())
        created = fired(self.api.create_credential())
        self.credential_uuid = created["uuid"]
        self.key, self.secret = created["api_key"], created["api_secret"]
        self.proposer.proposed.clear()

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _uuid(self) -> str:
        return f"00000000-0000-4000-8000-{self._next():012d}"

    @property
    def client_headers(self) -> dict:
        return {"x-api-key": self.key, "x-secret-key": self.secret}

    def dump(self) -> str:
        """Every stored row (and the applied index) as text: equal dumps mean nothing changed."""
        return json.dumps(fired(self.state.dump()), sort_keys=True)

    def stored_job(self, uuid: str) -> dict | None:
        return fired(self.state.get_job(uuid))

    def stored_project(self, uuid: str) -> dict | None:
        return fired(self.state.get_project(uuid))

    def count_jobs(self) -> int:
        return fired(self.state.list_jobs(limit=1, offset=0))[1]

    def add_execution(self, **fields: Any) -> None:
        """Write one execution record to the node-local log."""
        record = {
            "execution_id": "e",
            "job_uuid": "j",
            "project_uuid": "p",
            "scheduled_at": "2026-01-02T03:04:00.000Z",
            "state": "succeeded",
            "attempts": 1,
            "node_id": 1,
            "started_at": None,
            "finished_at": None,
            "status_code": None,
            "error": None,
            "skip_reason": None,
        }
        record.update(fields)
        self.executions.inner.record(record)
        fired(self.executions.inner.flush())

    def request(
        self,
        method: str,
        path: str,
        body: Any = attrs.NOTHING,
        *,
        headers: dict | None = None,
        raw: bytes | None = None,
        auth: str = "client",
        content_type: str | None = "application/json",
    ) -> tuple[int, dict, Any]:
        """
        Send one request; return (status, headers as {lowercase: last value}, decoded JSON body).
        """
        all_headers: dict = {}
        if auth == "client":
            all_headers.update(self.client_headers)
        elif auth == "admin":
            all_headers.update(basic())
        data = raw
        if body is not attrs.NOTHING:
            data = json.dumps(body).encode()
        if data is not None and content_type is not None:
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        d = self.treq.request(  # type: ignore[attr-defined]  # StubTreq sets its verbs in __init__
            method, "http://node.test" + path, headers=all_headers, data=data
        )
        self.treq.flush()
        response = fired(d)
        body_d = response.content()
        self.treq.flush()
        content = fired(body_d)
        response_headers = {
            k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()
        }
        try:
            decoded = json.loads(content)
        except ValueError:
            decoded = content
        return response.code, response_headers, decoded

    def project(self, name: str = "p") -> dict:
        status, _, body = self.request("POST", "/projects", {"name": name, "description": "d"})
        assert status == 201, body
        return body["data"]

    def job(self, project_uuid: str, **fields: Any) -> dict:
        payload = {
            "project_uuid": project_uuid,
            "name": "j",
            "spec": "@every 1m",
            "callback_url": "http://cb.test/x",
        }
        payload.update(fields)
        status, _, body = self.request("POST", "/jobs", payload)
        assert status == 201, body
        return body["data"]
