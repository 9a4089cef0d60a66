"""
Fuzz a node's HTTP API with requests generated from its own OpenAPI document.

Every operation of C{/openapi.json} is called with schemathesis-generated
requests: first its deterministic coverage cases (boundary values, each
wrong type, missing and unknown fields, null bodies, wrong content types),
then random valid and invalid requests three ways: with a client
credential, with admin Basic auth, and with missing or wrong credentials.
Each answer is checked against the document (status, content type, body
schema), and the stored projects, jobs and credentials are listed after
every write and compared with what the accepted writes should have
produced, so a rejected request that changed something is caught.

A finding is: a 5xx; an answer the document does not allow; a request the
document allows rejected for a reason the document could have stated; a
request with bad credentials not answered 401; stored data that changed
other than the accepted writes said; a node that stops answering or exits.

    python -m harness.fuzz [--examples N] [--seed S] [--verbose]
        [--url URL --key K --secret S --admin-user U --admin-password P]

Without C{--url} it starts a single node of its own in a temporary
directory. The exit status is 1 when anything was found. The same seed
gives the same requests.

The run itself is blocking (schemathesis drives C{requests}); the Twisted
entry point runs it in a thread so the reactor keeps watching the node.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import random
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import attrs

CLIENT, ADMIN, BAD = "client", "admin", "bad-auth"
MODES = (CLIENT, ADMIN, BAD)
COVERAGE = "coverage"
COLUMNS = (COVERAGE, *MODES)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
REQUEST_TIMEOUT = 30.0
PREFIXES = ("/api/v1", "")
# What counts as rejecting invalid data: any 4xx the API uses (413 for an
# over-long job array, SPEC §5) or a 5xx (reported by its own check).
REJECTION_STATUSES = [
    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "429"),
    "5xx",
]
# Job fields computed when a job is read rather than stored: they change by
# themselves (time passes, executions happen), so state checks ignore them.
PRESENTED_JOB_FIELDS = ("next_run_at", "last_run_at", "last_status")
# Inputs whose validity the document cannot state (a cron spec or an @at
# in the past, an IANA zone, a cursor this API issued, until later than
# since, an instant outside the years 1 to 9999 once in UTC, a
# retry_max_delay_s below the job's retry_delay_s, data too large for the
# node's callback cap): a request valid by the document may still be
# rejected for them.
SEMANTIC_FIELDS = frozenset(
    {"spec", "timezone", "cursor", "since", "until", "retry_max_delay_s", "data"}
)

# Values a fuzzed job body is steered to now and then, so that accepted
# creates and updates happen at all (a random string is hardly ever a cron
# spec). Schedules fire rarely and callbacks go to a closed local port, so a
# long run does not turn into a load test of the executor.
VALID_SPECS = (
    "@yearly",
    "0 0 1 1 *",
    "30 2 * * *",
    "0 0 29 2 *",
    "@every 24h",
    "@every 90m",
    "0 0 0 1 1 *",
    "@at 2031-01-02T03:04:05Z",
    "@at 2999-01-01T00:00:00+14:00",
    "@at 9999-12-31T23:59:59Z",
    "15 3 * jan mon-fri",
)
# RFC 3339 instants at the edges of what datetime holds, of four-digit
# years, of the epoch and of DST; half of all generated instants are these.
EDGE_INSTANTS = (
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "0999-12-31T23:59:59.999Z",
    "1969-12-31T23:59:59.999-00:00",
    "1970-01-01T00:00:00Z",
    "2026-03-08T02:30:00-05:00",
    "2026-11-01T01:30:00-04:00",
    "2000-02-29T12:00:00.5+05:45",
    "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59-01:00",
)
VALID_ZONES = ("UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata")
VALID_CALLBACKS = ("http://127.0.0.1:9/callback", "https://example.invalid/hook?x=1")
BAD_AUTH_WAYS = ("none", "wrong-secret", "unknown-key", "wrong-password", "garbage")


@attrs.frozen
class Target:
    """Where the API is and how to authenticate to it."""

    url: str
    client_headers: Mapping[str, str]
    admin_user: str
    admin_password: str

    @property
    def admin_auth(self) -> tuple[str, str]:
        return (self.admin_user, self.admin_password)


@attrs.frozen
class Finding:
    """One problem: its kind, operation and auth mode, and how to reproduce it."""

    kind: str  # server_error | schema | doc | auth | state | crash | transport | fuzzer
    operation: str
    mode: str
    detail: str
    request: str = ""
    status: int | None = None
    response: str = ""

    @property
    def key(self) -> tuple:
        """Findings with the same key are the same problem seen again."""
        lines = self.detail.strip().splitlines()
        first = lines[0] if lines else ""
        # The same rejection of items 3 and 7 of one job array, or of item 0
        # of another, is one problem.
        parts = sorted({re.sub(r"jobs\[\d+\]\.", "", part) for part in first.split("; ")})
        return (self.kind, self.operation, self.status, "; ".join(parts)[:160])

    def describe(self) -> str:
        lines = [f"[{self.kind}] {self.operation} ({self.mode}) -> {self.status}", self.detail]
        if self.request:
            lines.append("request: " + self.request)
        if self.response:
            lines.append("response: " + self.response)
        return "\n    ".join(lines)


@attrs.define(eq=False)
class FuzzReport:
    """Counts of requests and answers, and the findings, of one run."""

    requests: Counter = attrs.field(factory=Counter)  # (operation, column) -> n
    statuses: Counter = attrs.field(factory=Counter)  # (operation, "2xx"/"4xx"/"5xx") -> n
    findings: list[Finding] = attrs.field(factory=list)
    finding_counts: Counter = attrs.field(factory=Counter)
    state_checks: int = 0
    operations: list[str] = attrs.field(factory=list)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, finding: Finding) -> None:
        """Record C{finding}; repeats of the same problem are only counted."""
        if finding.key not in self.finding_counts:
            self.findings.append(finding)
        self.finding_counts[finding.key] += 1

    def summary_table(self) -> str:
        """A text table: one row per operation, requests per column, answers by class."""
        classes = ("2xx", "4xx", "5xx")
        per_operation: Counter[str] = Counter()
        for key, count in self.finding_counts.items():
            per_operation[key[1]] += count

        def column_total(counter: Counter, name: str) -> str:
            return str(sum(n for (_, column), n in counter.items() if column == name))

        header = ("operation", *COLUMNS, *classes, "findings")
        rows = [
            (
                operation,
                *(str(self.requests[(operation, column)]) for column in COLUMNS),
                *(str(self.statuses[(operation, c)]) for c in classes),
                str(per_operation[operation]),
            )
            for operation in self.operations
        ]
        totals = (
            "TOTAL",
            *(column_total(self.requests, column) for column in COLUMNS),
            *(column_total(self.statuses, c) for c in classes),
            str(sum(self.finding_counts.values())),
        )
        table = [header, *rows, totals]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]

        def line(row: tuple) -> str:
            return "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )

        rule = "  ".join("-" * width for width in widths)
        return "\n".join([line(header), rule, *(line(row) for row in rows), rule, line(totals)])

    def render(self) -> str:
        """The summary table, then every distinct finding with how often it happened."""
        parts = [
            self.summary_table(),
            f"\n{self.total} requests, {self.state_checks} state checks, "
            f"{len(self.findings)} distinct findings ({sum(self.finding_counts.values())} in all).",
        ]
        for finding in self.findings:
            parts.append(f"\n{self.finding_counts[finding.key]}x " + finding.describe())
        return "\n".join(parts)


# -- the stored state, as the API lists it --------------------------------------

Snapshot = dict[str, dict[str, dict]]
LISTINGS = {"projects": "/projects", "jobs": "/jobs", "credentials": "/credentials"}


def _stored(kind: str, record: Mapping[str, Any]) -> dict:
    """A listed or returned record without the fields that are not stored state."""
    if kind == "jobs":
        return {k: v for k, v in record.items() if k not in PRESENTED_JOB_FIELDS}
    if kind == "projects":
        return {k: v for k, v in record.items() if k != "signing_secret"}
    if kind == "credentials":
        public = {k: v for k, v in record.items() if k != "api_secret"}
        public.setdefault("archived_at", None)
        return public
    return dict(record)


def _diff(expected: Snapshot, actual: Snapshot) -> list[str]:
    """How C{actual} differs from C{expected}, a sentence each (a few per kind)."""
    problems = []
    for kind in LISTINGS:
        want, got = expected.get(kind, {}), actual.get(kind, {})
        lines = [f"{kind}: {uuid} is missing" for uuid in sorted(set(want) - set(got))]
        lines += [
            f"{kind}: {uuid} appeared: {json.dumps(got[uuid])[:300]}"
            for uuid in sorted(set(got) - set(want))
        ]
        for uuid in sorted(set(want) & set(got)):
            old, new = want[uuid], got[uuid]
            if old != new:
                changed = ", ".join(
                    f"{k}: {json.dumps(old.get(k))[:80]} -> {json.dumps(new.get(k))[:80]}"
                    for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)
                )
                lines.append(f"{kind}: {uuid} changed ({changed})")
        problems += lines[:5]
        if len(lines) > 5:
            problems.append(f"{kind}: ... and {len(lines) - 5} more differences")
    return problems


def expected_after(
    before: Snapshot, handler: str, status: int, data: Any, path: Mapping[str, Any]
) -> Snapshot:
    """
    What the listings should hold after a write that answered C{status} with
    C{data}: the same as C{before} for anything but a 2xx, else C{before}
    plus the change the operation reports.
    """
    after = {kind: dict(records) for kind, records in before.items()}
    if not 200 <= status < 300:
        return after
    if handler in ("create_project", "update_project"):
        after["projects"][data["uuid"]] = _stored("projects", data)
    elif handler == "delete_project":
        after["projects"].pop(str(path.get("uuid")), None)
        for job_uuid in data.get("deleted_jobs") or ():
            after["jobs"].pop(job_uuid, None)
    elif handler == "create_jobs":
        for job in data if isinstance(data, list) else [data]:
            after["jobs"][job["uuid"]] = _stored("jobs", job)
    elif handler == "update_job":
        after["jobs"][data["uuid"]] = _stored("jobs", data)
    elif handler == "delete_job":
        after["jobs"].pop(str(path.get("uuid")), None)
    elif handler in ("post_credential", "archive_credential"):
        after["credentials"][data["uuid"]] = _stored("credentials", data)
    return after


# -- small helpers ------------------------------------------------------------------


def _label(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


def _handler_of(operation: Any) -> str:
    """The route handler inside an operationId C{<handler>_<method>}."""
    return str(operation.definition.raw.get("operationId", "")).rsplit("_", 1)[0]


def _admin_only(operation: Any) -> bool:
    return operation.definition.raw.get("security") == [{"adminBasic": []}]


def _anonymous(operation: Any) -> bool:
    return not operation.definition.raw.get("security")


def _generation(case: Any) -> str:
    meta = case.meta
    return meta.generation.mode.value if meta is not None else "?"


def _is_positive(case: Any) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _undocumented_rejections(response: Any) -> list[str]:
    """The messages of a 4xx that name an input the document could have restricted."""
    try:
        error = response.json()["error"]
        fields = error["fields"]
    except (ValueError, KeyError, TypeError):
        return [f"unreadable error body: {response.text[:200]}"]
    if not fields:
        return [str(error.get("message", "no message"))]
    return [
        str(message)
        for field, message in fields.items()
        if re.sub(r"^jobs\[\d+\]\.", "", field) not in SEMANTIC_FIELDS
    ]


def _basic_header(auth: tuple[str, str] | None) -> dict[str, str]:
    """The Authorization header C{requests} sends for C{auth}, for reproduction commands."""
    if auth is None:
        return {}
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _operation_order(operation: Any) -> tuple:
    """
    Creates first (projects before the jobs that need them), then reads and
    updates, deletes last, so the writes in between find records to work on.
    """
    resources = ("/credentials", "/projects", "/jobs", "/executions")
    rank = next((i for i, prefix in enumerate(resources) if operation.path.startswith(prefix)), 9)
    order = {"POST": 0, "GET": 1, "PUT": 2, "PATCH": 2, "DELETE": 3}.get(
        operation.method.upper(), 9
    )
    return (order, rank, operation.path)


def _instants() -> Any:
    """RFC 3339 instants with any offset from year 1 to 9999, edge cases half the time."""
    from datetime import datetime, timedelta, timezone

    from hypothesis import strategies as st

    limit = 23 * 60 + 59
    zones = st.integers(-limit, limit).map(lambda minutes: timezone(timedelta(minutes=minutes)))
    anywhen = st.builds(
        lambda naive, zone: naive.replace(tzinfo=zone).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
        zones,
    )
    return st.one_of(st.sampled_from(EDGE_INSTANTS), anywhen)


def _body_text(response: Any) -> str:
    """An answer's body as text to show, or its size when it is not text (a backup file)."""
    try:
        return str(response.text)
    except UnicodeDecodeError:
        return f"<{len(response.content)} bytes of {response.headers.get('content-type')}>"


def _short(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# -- the run ----------------------------------------------------------------------


@attrs.define(eq=False)
class Fuzzer:
    """
    One fuzz run against C{target}. C{examples} bounds the random requests
    per operation, auth mode and data mode (valid/invalid); C{seed} makes
    them repeatable; C{coverage} adds the deterministic coverage cases.
    C{alive}, when given, tells whether the node process still runs;
    C{trace} receives a line per request.
    """

    target: Target
    examples: int = 25
    seed: int = 0
    coverage: bool = True
    alive: Callable[[], bool] | None = None
    log: Callable[[str], None] = lambda line: None
    trace: Callable[[str], None] | None = None
    report: FuzzReport = attrs.field(factory=FuzzReport)
    _session: Any = None
    _schema: Any = None
    _known: dict[str, list[str]] = attrs.field(factory=dict)
    _snapshot: Snapshot | None = None
    # Whether a request other than a checked write ran since _snapshot.
    _dirty: bool = True
    _stopped: bool = False

    # -- the stored state ---------------------------------------------------------

    def _get(self, path: str, **kwargs: Any) -> Any:
        return self._session.get(self.target.url + path, timeout=REQUEST_TIMEOUT, **kwargs)

    def _listing(self, kind: str) -> dict[str, dict]:
        records: dict[str, dict] = {}
        query = "limit=1000"
        while True:
            response = self._get(f"/api/v1{LISTINGS[kind]}?{query}", auth=self.target.admin_auth)
            if response.status_code != 200:
                raise RuntimeError(
                    f"listing {kind} answered {response.status_code}: {response.text[:300]}"
                )
            page = response.json()["data"]
            for item in page["items"]:
                records[item["uuid"]] = _stored(kind, item)
            if not page.get("next_cursor"):
                return records
            query = f"limit=1000&cursor={page['next_cursor']}"

    def snapshot(self) -> Snapshot:
        """The projects, jobs and credentials the API lists now (admin view)."""
        return {kind: self._listing(kind) for kind in LISTINGS}

    def _remember(self, snapshot: Snapshot) -> None:
        """
        Keep the listed uuids, so path parameters and project_uuid can name
        real records; never the fuzzer's own credential (archiving it would
        end the client mode).
        """
        key = self.target.client_headers.get("x-api-key")
        self._known = {
            "projects": sorted(snapshot["projects"]),
            "jobs": sorted(snapshot["jobs"]),
            "credentials": sorted(
                uuid
                for uuid, record in snapshot["credentials"].items()
                if record.get("api_key") != key
            ),
        }

    def _alive(self) -> bool:
        return self.alive is None or self.alive()

    def _state_before_write(self) -> Snapshot:
        """The listings before a write; a change since the last write is a finding."""
        if self._snapshot is not None and not self._dirty:
            return self._snapshot
        before = self.snapshot()
        if self._snapshot is not None:
            for problem in _diff(self._snapshot, before):
                self.report.add(
                    Finding(
                        "state",
                        "(between writes)",
                        "-",
                        "stored data changed without an accepted write: " + problem,
                    )
                )
        return before

    # -- shaping requests ---------------------------------------------------------

    def _steer(self, case: Any, handler: str, rng: random.Random) -> None:
        """
        Half the time point a generated request at real records and make its
        job fields valid, so accepted writes (and their effects) get tested
        too, not only rejections. (A seeded C{rng} rather than hypothesis
        draws: the records known change during the run, and hypothesis wants
        the same strategies every time it replays a prefix.)
        """
        if rng.random() < 0.5:
            return
        if "credential" in handler:
            kind = "credentials"
        elif "project" in handler or "signing_secret" in handler:
            kind = "projects"
        else:
            kind = "jobs"
        if "uuid" in (case.path_parameters or {}) and self._known.get(kind):
            case.path_parameters["uuid"] = rng.choice(self._known[kind])
        body = case.body
        if handler in ("create_jobs", "update_job"):
            creating = handler == "create_jobs"
            for item in body if isinstance(body, list) else [body]:
                if not isinstance(item, dict):
                    continue
                if ("project_uuid" in item or creating) and self._known.get("projects"):
                    item["project_uuid"] = rng.choice(self._known["projects"])
                if "spec" in item or creating:
                    item["spec"] = rng.choice(VALID_SPECS)
                if "callback_url" in item or creating:
                    item["callback_url"] = rng.choice(VALID_CALLBACKS)
                if "timezone" in item:
                    item["timezone"] = rng.choice(VALID_ZONES)
                # Every first retry delay here is within every longest one.
                if "retry_delay_s" in item:
                    item["retry_delay_s"] = rng.choice((0, 0.5, 1, 30))
                if "retry_max_delay_s" in item:
                    item["retry_max_delay_s"] = rng.choice((30, 60, 3600))
        elif handler in ("create_project", "update_project") and isinstance(body, dict):
            if body.get("notify_url") is not None:
                body["notify_url"] = rng.choice(VALID_CALLBACKS)

    def _credentials(
        self, mode: str, rng: random.Random | None
    ) -> tuple[dict[str, str], tuple[str, str] | None]:
        """The headers and Basic auth a request sends in C{mode}."""
        if mode == CLIENT:
            return dict(self.target.client_headers), None
        if mode == ADMIN:
            return {}, self.target.admin_auth
        way = rng.choice(BAD_AUTH_WAYS) if rng is not None else "none"
        key = self.target.client_headers["x-api-key"]
        if way == "wrong-secret":
            return {"x-api-key": key, "x-secret-key": "wrong"}, None
        if way == "unknown-key":
            return {"x-api-key": "no-such-key", "x-secret-key": "whatever"}, None
        if way == "wrong-password":
            return {}, (self.target.admin_user, self.target.admin_password + "x")
        if way == "garbage":
            return {"authorization": "Basic !!not-base64!!"}, None
        return {}, None

    # -- one request ----------------------------------------------------------------

    def _exercise(
        self, operation: Any, mode: str, case: Any, rng: random.Random | None, column: str
    ) -> None:
        """
        Send one generated request with C{mode}'s credentials; check the
        answer against the document and, for a write, the listings against
        the model. C{rng} allows steering; C{column} is where the summary
        counts the request.
        """
        if self._stopped:
            return
        label = _label(operation)
        handler = _handler_of(operation)
        is_write = operation.method.upper() in WRITE_METHODS
        if mode != BAD and rng is not None:
            self._steer(case, handler, rng)
        headers, auth = self._credentials(mode, rng)
        before = None
        if is_write:
            try:
                before = self._state_before_write()
            except Exception as error:  # the node stopped answering
                self._lost(label, mode, f"{label} (not sent)", f"listing before it: {error}")
                return
        # Every path is served with and without the /api/v1 prefix.
        base_url = self.target.url + (rng.choice(PREFIXES) if rng is not None else PREFIXES[0])
        try:
            sent = {**headers, **_basic_header(auth)}
            request = case.as_curl_command(headers=sent, base_url=base_url)
        except Exception as error:  # describing the request must never stop the run
            request = f"{label} (no curl rendering: {error})"
        request = _short(request)
        self.report.requests[(label, column)] += 1
        try:
            response = case.call(
                base_url=base_url,
                session=self._session,
                headers=headers,
                auth=auth,
                timeout=REQUEST_TIMEOUT,
            )
        except Exception as error:  # any transport failure is a finding
            self._lost(label, mode, request, f"{type(error).__name__}: {error}")
            return
        status = response.status_code
        self.report.statuses[(label, f"{status // 100}xx")] += 1
        answer = _short(f"{status} {_body_text(response)}", 800)
        if self.trace is not None:
            self.trace(f"{column}/{mode}/{_generation(case)} {request} -> {_short(answer, 300)}")

        def found(kind: str, detail: str) -> None:
            self.report.add(Finding(kind, label, mode, detail, request, status, answer))

        self._check_answer(case, response, mode, headers, operation, found)
        if is_write:
            assert before is not None
            self._check_state(before, handler, case, response, found)
        else:
            self._dirty = True

    def _lost(self, label: str, mode: str, request: str, what: str) -> None:
        """A request got no answer: a transport finding, or a crash if the node exited."""
        alive = self._alive()
        detail = what if alive else what + "\nthe node process has exited"
        self.report.add(Finding("transport" if alive else "crash", label, mode, detail, request))
        self._stopped = not alive
        self._dirty = True

    def _check_answer(
        self,
        case: Any,
        response: Any,
        mode: str,
        headers: dict,
        operation: Any,
        found: Callable[[str, str], None],
    ) -> None:
        """The answer matches the document, and bad credentials were refused."""
        from schemathesis.checks import not_a_server_error
        from schemathesis.core.failures import Failure as CheckFailure
        from schemathesis.specs.openapi.checks import (
            content_type_conformance,
            negative_data_rejection,
            response_headers_conformance,
            response_schema_conformance,
            status_code_conformance,
        )

        status = response.status_code
        kind = "server_error" if status >= 500 else "schema"
        checks = [
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ]
        if mode != BAD:
            checks.append(negative_data_rejection)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except CheckFailure as failure:
            found(kind, f"{failure.title}: {failure.message}")
        except BaseExceptionGroup as group:
            for error in group.exceptions:
                title = getattr(error, "title", type(error).__name__)
                found(kind, f"{title}: {getattr(error, 'message', str(error))}")
        if mode != BAD and status in (400, 413, 415) and _is_positive(case):
            undocumented = _undocumented_rejections(response)
            if undocumented:
                found(
                    "doc",
                    "the document allows this request but the API rejected it; "
                    + "; ".join(undocumented),
                )
        if mode == BAD and not _anonymous(operation) and status != 401:
            found("auth", f"missing or wrong credentials answered {status}, not 401")
        if mode == CLIENT and _admin_only(operation) and status != 401:
            found("auth", f"a client credential on an admin route answered {status}, not 401")

    def _check_state(
        self,
        before: Snapshot,
        handler: str,
        case: Any,
        response: Any,
        found: Callable[[str, str], None],
    ) -> None:
        """The listings after a write are what its answer says they should be."""
        status = response.status_code
        data = None
        if 200 <= status < 300:
            try:
                data = response.json()["data"]
            except (ValueError, KeyError, TypeError):
                found("schema", "a 2xx write answered without a JSON {data} body")
                self._dirty = True
                return
        try:
            after = self.snapshot()
        except Exception as error:
            alive = self._alive()
            found("transport" if alive else "crash", f"listing after the write failed: {error}")
            self._stopped = not alive
            self._dirty = True
            return
        self.report.state_checks += 1
        if status == 503:
            # Not committed in time: it may still commit later, so either
            # outcome is right. (The 503 itself is reported as a 5xx.)
            expected = after
        else:
            try:
                expected = expected_after(before, handler, status, data, case.path_parameters or {})
            except (KeyError, TypeError, AttributeError) as error:
                found("schema", f"a 2xx answer lacks what the state check needs ({error!r})")
                expected = after
        problems = _diff(expected, after)
        if problems:
            what = (
                "an accepted write changed stored data other than it reported"
                if 200 <= status < 300
                else "a rejected write changed stored data"
            )
            found("state", what + ":\n      " + "\n      ".join(problems))
        self._snapshot = after
        self._dirty = False
        self._remember(after)

    # -- driving ------------------------------------------------------------------

    def _run_coverage(self, operation: Any) -> None:
        """
        Send the operation's deterministic coverage cases once each, with the
        credentials the route takes.
        """
        from schemathesis import GenerationMode

        cases = self._schema.iter_coverage_cases(
            operation,
            generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            generation_config=self._schema.config.generation_for(operation=operation),
        )
        mode = ADMIN if _admin_only(operation) else CLIENT
        for case in cases:
            if self._stopped:
                return
            self._exercise(operation, mode, case, None, COVERAGE)

    def _run_random(self, operation: Any, mode: str, generation_mode: Any) -> None:
        """Send C{examples} random requests (seeded) in C{mode} and C{generation_mode}."""
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as with_seed

        rng = random.Random(f"{self.seed}/{_label(operation)}/{mode}/{generation_mode.value}")

        @with_seed(self.seed)
        @settings(
            max_examples=self.examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=generation_mode))
        def run(case: Any) -> None:
            self._exercise(operation, mode, case, rng, mode)

        run()

    def _generated(self, operation: Any, what: str, mode: str, run: Callable[[], None]) -> None:
        """Run one batch of requests; a failure to generate them is reported, not raised."""
        from hypothesis.errors import Unsatisfiable

        try:
            run()
        except Unsatisfiable:
            pass  # nothing to make invalid (no parameters, no body): no requests
        except Exception as error:
            self.report.add(
                Finding(
                    "fuzzer",
                    _label(operation),
                    mode,
                    f"generating {what} requests failed: {type(error).__name__}: "
                    f"{_short(str(error), 500)}",
                )
            )

    def run(self) -> FuzzReport:
        """Fuzz every operation of the node's document; return what was found."""
        import requests

        self._session = requests.Session()
        try:
            self._load_document()
            self._remember(self.snapshot())
            for operation in sorted(self._operations(), key=_operation_order):
                self._fuzz_operation(operation)
            self._final_checks()
        finally:
            self._session.close()
        return self.report

    def _load_document(self) -> None:
        import schemathesis

        response = self._get("/openapi.json", headers=dict(self.target.client_headers))
        if response.status_code != 200:
            raise RuntimeError(
                f"GET /openapi.json answered {response.status_code}: {response.text[:300]}"
            )
        # Authentication is this fuzzer's business (the three modes), so
        # schemathesis neither generates nor mutates the security headers.
        config = schemathesis.Config.from_dict(
            {
                "generation": {"with-security-parameters": False},
                "checks": {"negative_data_rejection": {"expected-statuses": REJECTION_STATUSES}},
            }
        )
        # Dates far from today are where instant handling breaks; the stock
        # date-time strategy seldom produces them.
        schemathesis.openapi.format("date-time", _instants())
        self._schema = schemathesis.openapi.from_dict(response.json(), config=config)

    def _operations(self) -> list[Any]:
        operations = [result.ok() for result in self._schema.get_all_operations()]
        self.report.operations = [_label(op) for op in sorted(operations, key=_operation_order)]
        return operations

    def _fuzz_operation(self, operation: Any) -> None:
        from schemathesis import GenerationMode

        if self.coverage:
            self._generated(operation, "coverage", COVERAGE, lambda: self._run_coverage(operation))
        for mode in MODES:
            generation_modes = [GenerationMode.POSITIVE]
            if mode != BAD:
                generation_modes.append(GenerationMode.NEGATIVE)
            for generation_mode in generation_modes:
                if self._stopped:
                    return
                self._generated(
                    operation,
                    generation_mode.value,
                    mode,
                    functools.partial(self._run_random, operation, mode, generation_mode),
                )
        label = _label(operation)
        self.log(f"{label}: {sum(self.report.requests[(label, c)] for c in COLUMNS)} requests")

    def _final_checks(self) -> None:
        """The node still runs and answers, and its data is what the writes made it."""

        def add(operation: str, kind: str, detail: str) -> None:
            self.report.add(Finding(kind, operation, "-", detail))

        if not self._alive():
            add("(end of run)", "crash", "the node process has exited")
            return
        try:
            health = self._get("/healthcheck")
            final = self.snapshot()
        except Exception as error:
            add("(end of run)", "crash", f"the node stopped answering: {error}")
            return
        if health.status_code != 200:
            add("GET /healthcheck", "crash", f"answered {health.status_code} at the end")
        for problem in _diff(self._snapshot or final, final):
            add("(end of run)", "state", "stored data changed without a write: " + problem)


def run_fuzz(
    target: Target,
    *,
    examples: int = 25,
    seed: int = 0,
    alive: Callable[[], bool] | None = None,
    log: Callable[[str], None] = lambda line: None,
    trace: Callable[[str], None] | None = None,
) -> FuzzReport:
    """Run one blocking fuzz session against C{target} (see L{Fuzzer})."""
    return Fuzzer(target, examples=examples, seed=seed, alive=alive, log=log, trace=trace).run()


# -- a node of our own ----------------------------------------------------------------


async def fuzz_own_node(
    reactor: Any,
    workdir: str,
    *,
    examples: int,
    seed: int,
    log: Callable[[str], None] = lambda line: None,
    trace: Callable[[str], None] | None = None,
) -> tuple[FuzzReport, Any]:
    """
    Start a single node in C{workdir}, fuzz it (in a thread, so the reactor
    keeps watching the process), stop it, and return the report and node.
    A node that does not shut down cleanly is a finding too.
    """
    from twisted.internet.threads import deferToThreadPool

    from harness.process import client_headers, prepare_single_node

    # The fuzzer sends thousands of wrong credentials from one address on
    # purpose, to check each 401; the throttle that would answer most of
    # them 429 is off here (tests/test_auth_flood.py checks it).
    node = await prepare_single_node(reactor, workdir, "AuthFailureLimit: 0\n")
    await node.start()
    try:
        target = Target(node.url, await client_headers(node), "admin", "admin-password")

        def alive() -> bool:
            watch = node._watch
            return watch is not None and not watch.ended.called

        report = await deferToThreadPool(
            reactor,
            reactor.getThreadPool(),
            run_fuzz,
            target,
            examples=examples,
            seed=seed,
            alive=alive,
            log=log,
            trace=trace,
        )
    finally:
        ended = await node.stop()
    if ended is not None and not _clean_exit(ended):
        report.add(Finding("crash", "(shutdown)", "-", f"the node did not stop cleanly: {ended!r}"))
    return report, node


def _clean_exit(reason: Any) -> bool:
    from twisted.internet.error import ProcessDone, ProcessTerminated

    if isinstance(reason, ProcessDone):
        return True
    # twistd answers SIGTERM with an orderly shutdown: status 0 or the signal itself.
    return isinstance(reason, ProcessTerminated) and (reason.exitCode == 0 or reason.signal == 15)


# -- command line ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.fuzz",
        description="Fuzz the Scheduler0 HTTP API from its own OpenAPI document.",
    )
    add = parser.add_argument
    add("--examples", type=int, default=25, help="random requests per operation and mode")
    add("--seed", type=int, default=0, help="hypothesis seed (same seed, same requests)")
    add("--url", help="fuzz the node at this URL instead of starting one")
    add("--key", help="client API key (with --url)")
    add("--secret", help="client API secret (with --url)")
    add("--admin-user", help="admin Basic auth username (with --url)")
    add("--admin-password", help="admin Basic auth password (with --url)")
    add("--verbose", action="store_true", help="print every request and its answer")
    add("--keep", action="store_true", help="keep the started node's directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer from the command line; 0 when nothing was found, 1 otherwise."""
    args = _parser().parse_args(argv)
    if args.examples < 1:
        print("--examples: must be at least 1", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, flush=True)

    trace = log if args.verbose else None
    if args.url:
        needed = {
            "--key": args.key,
            "--secret": args.secret,
            "--admin-user": args.admin_user,
            "--admin-password": args.admin_password,
        }
        missing = [flag for flag, value in needed.items() if not value]
        if missing:
            print(f"{', '.join(missing)}: required with --url", file=sys.stderr)
            return 2
        target = Target(
            args.url.rstrip("/"),
            {"x-api-key": args.key, "x-secret-key": args.secret},
            args.admin_user,
            args.admin_password,
        )
        try:
            report = run_fuzz(target, examples=args.examples, seed=args.seed, log=log, trace=trace)
        except Exception as error:
            what = f"{type(error).__name__}: {error}"
            print(f"--url: cannot fuzz {target.url}: {what}", file=sys.stderr)
            return 1
        print(report.render())
        return 0 if report.ok else 1

    from twisted.internet import defer, task

    workdir = tempfile.mkdtemp(prefix="scheduler0-fuzz-")
    outcome: dict[str, Any] = {}

    async def go(reactor: Any) -> None:
        log(f"starting a node in {workdir}")
        outcome["report"], _ = await fuzz_own_node(
            reactor, workdir, examples=args.examples, seed=args.seed, log=log, trace=trace
        )

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(go(reactor)))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            print(f"the fuzz run failed; node files kept in {workdir}", file=sys.stderr)
            return 1
    report = outcome["report"]
    print(report.render())
    if report.ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"node files (config, data, node-*.log) kept in {workdir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
