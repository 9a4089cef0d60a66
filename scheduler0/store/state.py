"""
The replicated state machine: projects, jobs and credentials in SQLite, and
for the cluster the members, which node owns each job, and the committed
execution history with each job's progress.

L{StateStore.apply} is deterministic: the same command applied to the same rows
gives the same rows and the same result on every node. It never reads the clock
or random numbers; every id and time comes in the command. The applied log index
is written in the same transaction as the change, so a crash can never apply a
command twice or lose one that the index claims.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, overload

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from scheduler0.model import (
    CONCURRENCY_POLICIES,
    JOB_COLUMNS,
    JOB_DEFAULTS,
    PROJECT_COLUMNS,
)
from scheduler0.store.commands import Command, Op, Result, canonical_json, error, ok
from scheduler0.store.executions import (
    EXECUTION_COLUMNS,
    EXECUTIONS_TABLE,
    FAILURE_RETENTION,
    execution_filters,
    execution_row,
    latest_of,
    plain_execution_row,
    prune_history,
    query_page,
)
from scheduler0.timeutil import format_instant, parse_instant

# How many log indexes a request id is remembered for: a retry of the same
# request inside that span gets the first result instead of applying twice.
REQUEST_MEMORY = 100_000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS requests (
        request_id TEXT PRIMARY KEY,
        log_index INTEGER NOT NULL,
        result TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS requests_by_index ON requests (log_index)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('applied_index', 0)",
    """CREATE TABLE IF NOT EXISTS projects (
        uuid TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS projects_by_created ON projects (created_at, uuid)",
    """CREATE TABLE IF NOT EXISTS jobs (
        uuid TEXT PRIMARY KEY,
        project_uuid TEXT NOT NULL REFERENCES projects (uuid),
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        callback_url TEXT NOT NULL,
        data TEXT NOT NULL,
        timezone TEXT NOT NULL,
        execution_type TEXT NOT NULL,
        paused INTEGER NOT NULL,
        catch_up_window_s REAL NOT NULL,
        timeout_s REAL NOT NULL,
        retry_max INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        anchor_at TEXT NOT NULL,
        owner INTEGER,
        handover_at TEXT,
        active_since TEXT)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at, uuid)",
    "CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project_uuid, created_at, uuid)",
    "CREATE INDEX IF NOT EXISTS jobs_by_paused ON jobs (paused, created_at, uuid)",
    """CREATE TABLE IF NOT EXISTS credentials (
        uuid TEXT PRIMARY KEY,
        api_key TEXT NOT NULL UNIQUE,
        api_secret_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        archived_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS credentials_by_created ON credentials (created_at, uuid)",
    # Callback signing secrets: a project's current one has expires_at NULL;
    # a rotated-out one keeps signing until its expires_at.
    """CREATE TABLE IF NOT EXISTS signing_secrets (
        project_uuid TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        PRIMARY KEY (project_uuid, secret))""",
    # Cluster members; an eligible one may own jobs.
    """CREATE TABLE IF NOT EXISTS members (
        node_id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        raft_address TEXT NOT NULL,
        eligible INTEGER NOT NULL)""",
    # The committed execution history: the columns of a node's executions.db.
    EXECUTIONS_TABLE,
    # With execution_id, pruning a job's history walks this index alone.
    """CREATE INDEX IF NOT EXISTS executions_by_job
        ON executions (job_uuid, scheduled_at, execution_id)""",
    "CREATE INDEX IF NOT EXISTS executions_by_project ON executions (project_uuid, scheduled_at)",
    "CREATE INDEX IF NOT EXISTS executions_by_time ON executions (scheduled_at)",
    # The latest committed slot of each job that got further than scheduled.
    """CREATE TABLE IF NOT EXISTS job_progress (
        job_uuid TEXT PRIMARY KEY,
        last_slot TEXT NOT NULL)""",
    # Per node: the seq of its executions.db up to which records were
    # committed, by the releases that replicated every record (read no more).
    """CREATE TABLE IF NOT EXISTS fanin (
        node_id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL)""",
    # Per node, how far it got (record_progress): every slot before
    # done_before of every job it held is sent or recorded, as its scheduler
    # knew the state at log index as_of, in the run of the node that began
    # at log index loaded_at.
    """CREATE TABLE IF NOT EXISTS node_progress (
        node_id INTEGER PRIMARY KEY,
        done_before TEXT NOT NULL,
        loaded_at INTEGER NOT NULL,
        as_of INTEGER NOT NULL)""",
)
# How many jobs each node owns, kept by every command that changes jobs or
# owners: creating jobs picks the least loaded member without counting a
# million index entries per command.
_OWNER_LOADS = """CREATE TABLE IF NOT EXISTS owner_loads (
    node_id INTEGER PRIMARY KEY,
    jobs INTEGER NOT NULL)"""
# Columns added to tables of older files, and what needs them (after L{_SCHEMA}).
_ADDED_COLUMNS = (
    ("jobs", "owner", "INTEGER"),
    ("jobs", "handover_at", "TEXT"),
    # When the job last began to fire as it is now (resumed, or its schedule
    # changed; NULL: since it was created). Slots before it are never owed.
    ("jobs", "active_since", "TEXT"),
    # The log index from which the owner has held the job, and the owner
    # before it with the index from which that one held it (NULL: unknown,
    # from a file older than progress marks).
    ("jobs", "owner_since", "INTEGER"),
    ("jobs", "prev_owner", "INTEGER"),
    ("jobs", "prev_owner_since", "INTEGER"),
    # The committed history of older releases shares the executions columns.
    ("executions", "response_body", "TEXT"),
    # Issue 14: per-job retry pacing, overlap and catch-up policies. Rows
    # written before them read as the defaults (L{ADDED_JOB_DEFAULTS}).
    ("jobs", "retry_delay_s", "REAL NOT NULL DEFAULT 1.0"),
    ("jobs", "retry_max_delay_s", "REAL NOT NULL DEFAULT 60.0"),
    ("jobs", "concurrency_policy", "TEXT NOT NULL DEFAULT 'allow'"),
    ("jobs", "coalesce", "INTEGER NOT NULL DEFAULT 0"),
    # Where a project's failure notices go (NULL: nowhere).
    ("projects", "notify_url", "TEXT"),
)
_LATE_SCHEMA = (
    # A node's jobs in creation order; also counts each owner's jobs.
    "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at, uuid)",
)
_DUMPED_TABLES = (
    "meta",
    "projects",
    "jobs",
    "credentials",
    "signing_secrets",
    "members",
    "executions",
    "job_progress",
    "fanin",
    "owner_loads",
    "node_progress",
)

CREDENTIAL_COLUMNS = ("uuid", "api_key", "api_secret_hash", "created_at", "archived_at")
PUBLIC_CREDENTIAL_COLUMNS = ("uuid", "api_key", "created_at", "archived_at")

_PROJECTS = ", ".join(PROJECT_COLUMNS)
_JOBS = ", ".join(JOB_COLUMNS)
_CREDENTIALS = ", ".join(CREDENTIAL_COLUMNS)
_PUBLIC_CREDENTIALS = ", ".join(PUBLIC_CREDENTIAL_COLUMNS)

_JOB_TEXT_FIELDS = (
    "name",
    "spec",
    "callback_url",
    "timezone",
    "execution_type",
    "anchor_at",
    "project_uuid",
)
# Everything but identity and bookkeeping can change (anchor_at when the
# schedule does).
_JOB_CHANGEABLE = frozenset(JOB_COLUMNS) - {"uuid", "created_at", "updated_at"}


class _Rejected(Exception):
    """A command is refused; carries the result. Never leaves this module."""

    def __init__(self, result: Result):
        super().__init__(result.message)
        self.result = result


def _invalid(field: str, message: str) -> _Rejected:
    return _Rejected(error("invalid", message, field))


def _text(args: Mapping, field: str, where: str = "") -> str:
    value = args.get(field) if isinstance(args, Mapping) else None
    if not isinstance(value, str):
        raise _invalid(field, f"{where}{field} must be a string")
    return value


def _mapping(args: Mapping, field: str) -> Mapping:
    value = args.get(field)
    if not isinstance(value, Mapping):
        raise _invalid(field, f"{field} must be an object")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_job_field(field: str, value: Any) -> Any:
    """The stored form of one job field, or L{_Rejected} naming the field."""
    if field in _JOB_TEXT_FIELDS:
        if not isinstance(value, str):
            raise _invalid(field, f"job field {field} must be a string")
        return value
    if field == "data":
        return canonical_json(value)
    if field == "paused":
        if not isinstance(value, bool):
            raise _invalid(field, "job field paused must be a boolean")
        return int(value)
    if field in ("catch_up_window_s", "timeout_s"):
        if not _is_number(value) or value < 0:
            raise _invalid(field, f"job field {field} must be a non-negative number")
        return float(value)
    if field == "retry_max":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _invalid(field, "job field retry_max must be a non-negative integer")
        return value
    if field in ("retry_delay_s", "retry_max_delay_s"):
        if not _is_number(value) or not 0 <= value < float("inf"):
            raise _invalid(field, f"job field {field} must be a non-negative number")
        return float(value)
    if field == "concurrency_policy":
        if not isinstance(value, str) or value not in CONCURRENCY_POLICIES:
            raise _invalid(
                field,
                f"job field concurrency_policy must be one of {', '.join(CONCURRENCY_POLICIES)}",
            )
        return value
    if field == "coalesce":
        if not isinstance(value, bool):
            raise _invalid(field, "job field coalesce must be a boolean")
        return int(value)
    raise _invalid(field, f"unknown job field {field}")


def _check_retry_delays(delay: float, max_delay: float) -> None:
    """The longest wait between attempts cannot be shorter than the first one."""
    if max_delay < delay:
        raise _invalid(
            "retry_max_delay_s",
            f"job field retry_max_delay_s ({max_delay:g}) must be at least retry_delay_s"
            f" ({delay:g})",
        )


def _job_row(job: Any) -> tuple:
    """Validate a proposed job and return its row in L{JOB_COLUMNS} order."""
    if not isinstance(job, Mapping):
        raise _invalid("jobs", "each job must be an object")
    unknown = sorted(set(job) - set(JOB_COLUMNS))
    if unknown:
        raise _invalid(unknown[0], f"unknown job field {unknown[0]}")
    row: list[Any] = []
    for column in JOB_COLUMNS:
        if column in ("uuid", "created_at", "updated_at"):
            row.append(_text(job, column, "job field "))
        elif column == "anchor_at":
            anchor = job.get("anchor_at")
            row.append(_check_job_field(column, job["created_at"] if anchor is None else anchor))
        elif column in job:
            row.append(_check_job_field(column, job[column]))
        elif column in JOB_DEFAULTS:
            row.append(_check_job_field(column, JOB_DEFAULTS[column]))
        else:
            raise _invalid(column, f"job field {column} is required")
    _check_retry_delays(row[_RETRY_DELAY], row[_RETRY_MAX_DELAY])
    return tuple(row)


_RETRY_DELAY = JOB_COLUMNS.index("retry_delay_s")
_RETRY_MAX_DELAY = JOB_COLUMNS.index("retry_max_delay_s")


_JOB_KEYS = frozenset(JOB_COLUMNS)
_NUMBER_TYPES = (int, float)
_POLICY_SET = frozenset(CONCURRENCY_POLICIES)
_INFINITY = float("inf")


def _plain_job_row(job: Any) -> tuple | None:
    """
    The row of a proposed job whose fields all have their plain types, or
    None for anything else (L{_job_row} then says what is wrong). Creating a
    million jobs runs this once per job, so it checks types directly.
    """
    if type(job) is not dict or not _JOB_KEYS.issuperset(job):
        return None
    get = job.get
    texts = (
        get("uuid"),
        get("project_uuid"),
        get("name"),
        get("spec"),
        get("callback_url"),
        get("timezone", "UTC"),
        get("execution_type", "http"),
        get("created_at"),
        get("updated_at"),
    )
    for text in texts:
        if type(text) is not str:
            return None
    anchor = get("anchor_at")
    if anchor is None:
        anchor = texts[7]
    elif type(anchor) is not str:
        return None
    paused = get("paused", False)
    window = get("catch_up_window_s", 60.0)
    timeout = get("timeout_s", 30.0)
    retry_max = get("retry_max", 10)
    retry_delay = get("retry_delay_s", 1.0)
    retry_max_delay = get("retry_max_delay_s", 60.0)
    policy = get("concurrency_policy", "allow")
    coalesce = get("coalesce", False)
    if (
        type(paused) is not bool
        or type(window) not in _NUMBER_TYPES
        or type(timeout) not in _NUMBER_TYPES
        or type(retry_max) is not int
        or type(retry_delay) not in _NUMBER_TYPES
        or type(retry_max_delay) not in _NUMBER_TYPES
        or type(coalesce) is not bool
        or type(policy) is not str
        or policy not in _POLICY_SET
        or window < 0
        or timeout < 0
        or retry_max < 0
        # (Also refuses NaN and infinity, which _job_row names.)
        or not 0 <= retry_delay <= retry_max_delay < _INFINITY
    ):
        return None
    data = get("data")
    if data is None:
        data_text = "null"
    else:
        try:
            data_text = canonical_json(data)
        except (TypeError, ValueError):
            return None
    return (
        texts[0],
        texts[1],
        texts[2],
        texts[3],
        texts[4],
        data_text,
        texts[5],
        texts[6],
        int(paused),
        float(window),
        float(timeout),
        retry_max,
        float(retry_delay),
        float(retry_max_delay),
        policy,
        int(coalesce),
        texts[7],
        texts[8],
        anchor,
    )


def _job_rows(jobs: list) -> list[tuple]:
    """Validate proposed jobs; their rows in L{JOB_COLUMNS} order."""
    rows = []
    for job in jobs:
        row = _plain_job_row(job)
        rows.append(_job_row(job) if row is None else row)
    return rows


def _project(row: tuple | None) -> dict | None:
    return None if row is None else dict(zip(PROJECT_COLUMNS, row, strict=True))


@overload
def _job(row: tuple) -> dict: ...
@overload
def _job(row: None) -> None: ...
def _job(row: tuple | None) -> dict | None:
    if row is None:
        return None
    job = dict(zip(JOB_COLUMNS, row, strict=True))
    data = job["data"]
    job["data"] = None if data == "null" else json.loads(data)
    job["paused"] = bool(job["paused"])
    job["catch_up_window_s"] = float(job["catch_up_window_s"])
    job["timeout_s"] = float(job["timeout_s"])
    job["retry_delay_s"] = float(job["retry_delay_s"])
    job["retry_max_delay_s"] = float(job["retry_max_delay_s"])
    job["coalesce"] = bool(job["coalesce"])
    return job


def _public_credential(row: tuple | None) -> dict | None:
    return None if row is None else dict(zip(PUBLIC_CREDENTIAL_COLUMNS, row, strict=True))


def _one(txn: Any, sql: str, params: tuple = ()) -> tuple | None:
    txn.execute(sql, params)
    return txn.fetchone()


def _one_known(txn: Any, sql: str, params: tuple = ()) -> tuple:
    """The row of C{sql}, known to exist: an aggregate, a meta value, a row just written."""
    txn.execute(sql, params)
    return txn.fetchone()


def _all(txn: Any, sql: str, params: tuple = ()) -> list:
    txn.execute(sql, params)
    return txn.fetchall()


def _chunks(values: list, size: int = 500) -> Any:
    """(chunk, "?, ?, ...") pairs: C{values} in pieces small enough for one IN (...)."""
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        yield tuple(chunk), ", ".join("?" * len(chunk))


_PLACEMENT = (
    "owner",
    "handover_at",
    "active_since",
    "owner_since",
    "prev_owner",
    "prev_owner_since",
)
_PLACED_JOB = f"SELECT {_JOBS}, {', '.join(_PLACEMENT)} FROM jobs"


def _placed_job(row: tuple) -> dict:
    """A row of L{_PLACED_JOB}: the public job plus where and since when it fires."""
    job = _job(row[: -len(_PLACEMENT)])
    job.update(zip(_PLACEMENT, row[-len(_PLACEMENT) :], strict=True))
    return job


def _page(limit: int, offset: int) -> tuple[int, int]:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
    return limit, offset


# -- command handlers: (txn, args) -> value, or raise _Rejected ---------------


def _create_project(txn: Any, args: Mapping) -> Any:
    project = _mapping(args, "project")
    unknown = sorted(set(project) - set(PROJECT_COLUMNS))
    if unknown:
        raise _invalid(unknown[0], f"unknown project field {unknown[0]}")
    row = tuple(
        _notify_url(project.get("notify_url"))
        if column == "notify_url"
        else _text(project, column, "project field ")
        for column in PROJECT_COLUMNS
    )
    if _one(txn, "SELECT 1 FROM projects WHERE uuid = ?", (row[0],)):
        raise _Rejected(error("conflict", f"a project with uuid {row[0]} exists", "uuid"))
    if _one(txn, "SELECT 1 FROM projects WHERE name = ?", (row[1],)):
        raise _Rejected(error("conflict", f"a project named {row[1]!r} exists", "name"))
    txn.execute(
        f"INSERT INTO projects ({_PROJECTS}) VALUES ({', '.join('?' * len(PROJECT_COLUMNS))})",
        row,
    )
    if "signing_secret" in args:
        secret = _text(args, "signing_secret")
        txn.execute(
            "INSERT INTO signing_secrets (project_uuid, secret, created_at, expires_at)"
            " VALUES (?, ?, ?, NULL)",
            (row[0], secret, row[3]),
        )
    return _project(row)


def _notify_url(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid("notify_url", "project field notify_url must be a string or null")
    return value


def _rotate_signing_secret(txn: Any, args: Mapping) -> Any:
    """
    Make C{secret} the project's signing secret; the one it replaces keeps
    signing until C{expires_at}, and secrets expired by C{at} are dropped.
    """
    uuid = _text(args, "project_uuid")
    secret = _text(args, "secret")
    at = _text(args, "at")
    expires_at = _text(args, "expires_at")
    if not _one(txn, "SELECT 1 FROM projects WHERE uuid = ?", (uuid,)):
        raise _Rejected(error("not_found", f"no project with uuid {uuid}", "uuid"))
    txn.execute(
        "DELETE FROM signing_secrets WHERE project_uuid = ? AND expires_at IS NOT NULL"
        " AND expires_at <= ?",
        (uuid, at),
    )
    txn.execute(
        "UPDATE signing_secrets SET expires_at = ? WHERE project_uuid = ? AND expires_at IS NULL",
        (expires_at, uuid),
    )
    txn.execute(
        "INSERT INTO signing_secrets (project_uuid, secret, created_at, expires_at)"
        " VALUES (?, ?, ?, NULL)",
        (uuid, secret, at),
    )
    return {"project_uuid": uuid, "previous_expires_at": expires_at}


def _update_project(txn: Any, args: Mapping) -> Any:
    uuid = _text(args, "uuid")
    changes = _mapping(args, "changes")
    updated_at = _text(args, "updated_at")
    for field in sorted(changes):
        if field == "notify_url":
            _notify_url(changes[field])
            continue
        if field not in ("name", "description"):
            raise _invalid(field, f"project field {field} cannot be changed")
        _text(changes, field, "project field ")
    current = _project(_one(txn, f"SELECT {_PROJECTS} FROM projects WHERE uuid = ?", (uuid,)))
    if current is None:
        raise _Rejected(error("not_found", f"no project with uuid {uuid}", "uuid"))
    if "name" in changes and _one(
        txn, "SELECT 1 FROM projects WHERE name = ? AND uuid != ?", (changes["name"], uuid)
    ):
        raise _Rejected(error("conflict", f"a project named {changes['name']!r} exists", "name"))
    current.update({field: changes[field] for field in sorted(changes)})
    current["updated_at"] = updated_at
    txn.execute(
        "UPDATE projects SET name = ?, description = ?, notify_url = ?, updated_at = ?"
        " WHERE uuid = ?",
        (current["name"], current["description"], current["notify_url"], updated_at, uuid),
    )
    return current


def _delete_project(txn: Any, args: Mapping) -> Any:
    uuid = _text(args, "uuid")
    cascade = args.get("cascade", False)
    if not isinstance(cascade, bool):
        raise _invalid("cascade", "cascade must be a boolean")
    if not _one(txn, "SELECT 1 FROM projects WHERE uuid = ?", (uuid,)):
        raise _Rejected(error("not_found", f"no project with uuid {uuid}", "uuid"))
    jobs = [
        row[0]
        for row in _all(
            txn, "SELECT uuid FROM jobs WHERE project_uuid = ? ORDER BY created_at, uuid", (uuid,)
        )
    ]
    if jobs and not cascade:
        raise _Rejected(
            error(
                "conflict", f"project {uuid} has {len(jobs)} jobs; delete them or cascade", "uuid"
            )
        )
    txn.execute(
        "DELETE FROM job_progress WHERE job_uuid IN (SELECT uuid FROM jobs WHERE project_uuid = ?)",
        (uuid,),
    )
    owned = _all(
        txn,
        "SELECT owner, COUNT(*) FROM jobs WHERE project_uuid = ? AND owner IS NOT NULL"
        " GROUP BY owner",
        (uuid,),
    )
    _add_loads(txn, {owner: -count for owner, count in owned})
    txn.execute("DELETE FROM jobs WHERE project_uuid = ?", (uuid,))
    txn.execute("DELETE FROM signing_secrets WHERE project_uuid = ?", (uuid,))
    txn.execute("DELETE FROM projects WHERE uuid = ?", (uuid,))
    return {"uuid": uuid, "deleted_jobs": jobs}


def _create_jobs(txn: Any, args: Mapping, index: int = 0) -> Any:
    jobs = args.get("jobs")
    if not isinstance(jobs, list):
        raise _invalid("jobs", "jobs must be a list")
    rows = _job_rows(jobs)
    owners = _new_owners(txn, len(rows))
    if owners is None:
        insert, stored = _INSERT_JOB, rows
    else:
        insert = _INSERT_OWNED_JOB
        stored = [(*row, owner, index) for row, owner in zip(rows, owners, strict=True)]
    # The usual case first: every project exists and no uuid is taken, so
    # the rows go in at once and the primary key finds a taken uuid. Only
    # when something is wrong are the rows checked one by one, to name the
    # first job at fault.
    projects = {row[1] for row in rows}
    if all(_one(txn, "SELECT 1 FROM projects WHERE uuid = ?", (p,)) for p in projects):
        txn.execute("SAVEPOINT insert_jobs")
        try:
            # In uuid order each page of the primary key's index is changed
            # once per command, not once per row that lands on it.
            txn.executemany(insert, sorted(stored))
        except sqlite3.IntegrityError:
            txn.execute("ROLLBACK TO insert_jobs")
            txn.execute("RELEASE insert_jobs")
        else:
            txn.execute("RELEASE insert_jobs")
            _count_new_owners(txn, owners)
            return [_job(row) for row in rows]
    _check_new_jobs(txn, rows)
    txn.executemany(insert, stored)
    _count_new_owners(txn, owners)
    return [_job(row) for row in rows]


_INSERT_JOB = f"INSERT INTO jobs ({_JOBS}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
_INSERT_OWNED_JOB = (
    f"INSERT INTO jobs ({_JOBS}, owner, owner_since)"
    f" VALUES ({', '.join('?' * (len(JOB_COLUMNS) + 2))})"
)


def _new_owners(txn: Any, count: int) -> list[int] | None:
    """
    The owners of C{count} new jobs, in order: each goes to the eligible
    member with the fewest jobs at that moment (ties: the lowest node id), so
    a batch spreads evenly. None when no member is eligible (they stay unowned).
    """
    members = [
        row[0]
        for row in _all(txn, "SELECT node_id FROM members WHERE eligible = 1 ORDER BY node_id")
    ]
    if not members or count == 0:
        return None
    known = dict(_all(txn, "SELECT node_id, jobs FROM owner_loads"))
    loads = [(known.get(member, 0), member) for member in members]
    heapq.heapify(loads)
    owners = []
    for _ in range(count):
        load, member = loads[0]
        owners.append(member)
        heapq.heapreplace(loads, (load + 1, member))
    return owners


def _count_new_owners(txn: Any, owners: list[int] | None) -> None:
    if owners is not None:
        deltas: dict[int | None, int] = {}
        for owner in owners:
            deltas[owner] = deltas.get(owner, 0) + 1
        _add_loads(txn, deltas)


def _add_loads(txn: Any, deltas: Mapping[int | None, int]) -> None:
    """Change the owned-job counts by C{deltas} (None, the unowned, is not counted)."""
    changes = sorted(
        (owner, delta) for owner, delta in deltas.items() if owner is not None and delta
    )
    if not changes:
        return
    txn.executemany(
        "INSERT INTO owner_loads (node_id, jobs) VALUES (?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET jobs = jobs + excluded.jobs",
        changes,
    )
    txn.execute("DELETE FROM owner_loads WHERE jobs = 0")


def _check_new_jobs(txn: Any, rows: list[tuple]) -> None:
    """Refuse the first row whose uuid is taken or whose project does not exist."""
    seen: set[str] = set()
    known_projects: set[str] = set()
    for row in rows:
        uuid, project_uuid = row[0], row[1]
        if uuid in seen or _one(txn, "SELECT 1 FROM jobs WHERE uuid = ?", (uuid,)):
            raise _Rejected(error("conflict", f"a job with uuid {uuid} exists", "uuid"))
        seen.add(uuid)
        if project_uuid not in known_projects:
            if not _one(txn, "SELECT 1 FROM projects WHERE uuid = ?", (project_uuid,)):
                raise _Rejected(
                    error("not_found", f"no project with uuid {project_uuid}", "project_uuid")
                )
            known_projects.add(project_uuid)


def _update_job(txn: Any, args: Mapping) -> Any:
    uuid = _text(args, "uuid")
    changes = _mapping(args, "changes")
    updated_at = _text(args, "updated_at")
    stored = {}
    for field in sorted(changes):
        if field not in _JOB_CHANGEABLE:
            raise _invalid(field, f"job field {field} cannot be changed")
        stored[field] = _check_job_field(field, changes[field])
    row = _one(txn, f"SELECT {_JOBS} FROM jobs WHERE uuid = ?", (uuid,))
    if row is None:
        raise _Rejected(error("not_found", f"no job with uuid {uuid}", "uuid"))
    if "project_uuid" in stored and not _one(
        txn, "SELECT 1 FROM projects WHERE uuid = ?", (stored["project_uuid"],)
    ):
        raise _Rejected(
            error("not_found", f"no project with uuid {stored['project_uuid']}", "project_uuid")
        )
    stored["updated_at"] = updated_at
    values = dict(zip(JOB_COLUMNS, row, strict=True))
    values.update(stored)
    if "retry_delay_s" in stored or "retry_max_delay_s" in stored:
        _check_retry_delays(values["retry_delay_s"], values["retry_max_delay_s"])
    assignments = ", ".join(f"{column} = ?" for column in JOB_COLUMNS[1:])
    new_row = tuple(values[column] for column in JOB_COLUMNS)
    txn.execute(f"UPDATE jobs SET {assignments} WHERE uuid = ?", new_row[1:] + (uuid,))
    old = dict(zip(JOB_COLUMNS, row, strict=True))
    resumed = bool(old["paused"]) and not bool(values["paused"])
    rescheduled = any(old[f] != values[f] for f in ("spec", "timezone", "anchor_at"))
    if resumed or rescheduled:
        txn.execute("UPDATE jobs SET active_since = ? WHERE uuid = ?", (updated_at, uuid))
    return _job(new_row)


def _delete_job(txn: Any, args: Mapping) -> Any:
    uuid = _text(args, "uuid")
    found = _one(txn, "SELECT owner FROM jobs WHERE uuid = ?", (uuid,))
    if found is None:
        raise _Rejected(error("not_found", f"no job with uuid {uuid}", "uuid"))
    txn.execute("DELETE FROM jobs WHERE uuid = ?", (uuid,))
    _add_loads(txn, {found[0]: -1})
    # Its committed history stays (pruned like any other); its progress goes.
    txn.execute("DELETE FROM job_progress WHERE job_uuid = ?", (uuid,))
    return {"uuid": uuid}


def _create_credential(txn: Any, args: Mapping) -> Any:
    credential = _mapping(args, "credential")
    allowed = set(CREDENTIAL_COLUMNS)
    unknown = sorted(set(credential) - allowed)
    if unknown:
        raise _invalid(unknown[0], f"unknown credential field {unknown[0]}")
    uuid = _text(credential, "uuid", "credential field ")
    api_key = _text(credential, "api_key", "credential field ")
    secret_hash = _text(credential, "api_secret_hash", "credential field ")
    created_at = _text(credential, "created_at", "credential field ")
    archived_at = credential.get("archived_at")
    if archived_at is not None and not isinstance(archived_at, str):
        raise _invalid("archived_at", "credential field archived_at must be a string or null")
    if _one(txn, "SELECT 1 FROM credentials WHERE uuid = ?", (uuid,)):
        raise _Rejected(error("conflict", f"a credential with uuid {uuid} exists", "uuid"))
    if _one(txn, "SELECT 1 FROM credentials WHERE api_key = ?", (api_key,)):
        raise _Rejected(error("conflict", "a credential with this api_key exists", "api_key"))
    row = (uuid, api_key, secret_hash, created_at, archived_at)
    txn.execute(f"INSERT INTO credentials ({_CREDENTIALS}) VALUES (?, ?, ?, ?, ?)", row)
    return _public_credential((uuid, api_key, created_at, archived_at))


def _archive_credential(txn: Any, args: Mapping) -> Any:
    uuid = _text(args, "uuid")
    archived_at = _text(args, "archived_at")
    # Archiving twice keeps the first archive time.
    txn.execute(
        "UPDATE credentials SET archived_at = COALESCE(archived_at, ?) WHERE uuid = ?",
        (archived_at, uuid),
    )
    if txn.rowcount == 0:
        raise _Rejected(error("not_found", f"no credential with uuid {uuid}", "uuid"))
    return _public_credential(
        _one(txn, f"SELECT {_PUBLIC_CREDENTIALS} FROM credentials WHERE uuid = ?", (uuid,))
    )


# -- cluster: members, job ownership, committed executions ----------------------


# SQLite stores integers in 64 bits; a larger one would fail the whole apply.
_INT64 = range(-(2**63), 2**63)


def _bindable(value: Any) -> bool:
    """Whether SQLite can store C{value} as it is (a bad one must be refused, not raise)."""
    if value is None or isinstance(value, (str, float)):
        return True
    return isinstance(value, int) and value in _INT64


def _integer(args: Mapping, field: str, minimum: int | None = None, where: str = "") -> int:
    value = args.get(field) if isinstance(args, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
        raise _invalid(field, f"{where}{field} must be a 64-bit integer")
    if minimum is not None and value < minimum:
        raise _invalid(field, f"{where}{field} must be at least {minimum}")
    return value


def _list(args: Mapping, field: str) -> list:
    value = args.get(field)
    if not isinstance(value, list):
        raise _invalid(field, f"{field} must be a list")
    return value


def _instant_arg(value: Any, field: str) -> str:
    """A canonical instant from a command argument (parsing is pure: no clock)."""
    if not isinstance(value, str):
        raise _invalid(field, f"{field} must be an instant string")
    try:
        return format_instant(parse_instant(value))
    except ValueError as e:
        raise _invalid(field, f"{field} must be an instant: {e}") from e


_MEMBER_COLUMNS = ("node_id", "address", "raft_address", "eligible")


def _member(row: tuple) -> dict:
    member = dict(zip(_MEMBER_COLUMNS, row, strict=True))
    member["eligible"] = bool(member["eligible"])
    return member


def _all_members(txn: Any) -> list[dict]:
    return [
        _member(row)
        for row in _all(
            txn, "SELECT node_id, address, raft_address, eligible FROM members ORDER BY node_id"
        )
    ]


def _set_members(txn: Any, args: Mapping) -> Any:
    """Add missing members (eligible) and update the addresses of known ones."""
    rows = []
    for member in _list(args, "members"):
        if not isinstance(member, Mapping):
            raise _invalid("members", "each member must be an object")
        unknown = sorted(set(member) - {"node_id", "address", "raft_address"})
        if unknown:
            raise _invalid(unknown[0], f"unknown member field {unknown[0]}")
        rows.append(
            (
                _integer(member, "node_id", where="member field "),
                _text(member, "address", "member field "),
                _text(member, "raft_address", "member field "),
            )
        )
    txn.executemany(
        "INSERT INTO members (node_id, address, raft_address, eligible) VALUES (?, ?, ?, 1)"
        " ON CONFLICT (node_id) DO UPDATE SET"
        " address = excluded.address, raft_address = excluded.raft_address",
        rows,
    )
    return {"members": _all_members(txn)}


def _remove_member(txn: Any, args: Mapping) -> Any:
    """
    Forget a member: its jobs become unowned (the leader hands them out from
    committed progress) and its fan-in position goes, so a node that joins
    again under that id with a fresh executions.db is read from the start.
    """
    node_id = _integer(args, "node_id")
    txn.execute("DELETE FROM members WHERE node_id = ?", (node_id,))
    removed = txn.rowcount > 0
    txn.execute("UPDATE jobs SET owner = NULL, handover_at = NULL WHERE owner = ?", (node_id,))
    unowned = txn.rowcount
    txn.execute("DELETE FROM owner_loads WHERE node_id = ?", (node_id,))
    txn.execute("DELETE FROM fanin WHERE node_id = ?", (node_id,))
    return {"node_id": node_id, "removed": removed, "unowned": unowned}


def _set_eligible(txn: Any, args: Mapping) -> Any:
    """Say whether a member may be given jobs (it keeps those it owns)."""
    node_id = _integer(args, "node_id")
    eligible = args.get("eligible")
    if not isinstance(eligible, bool):
        raise _invalid("eligible", "eligible must be a boolean")
    txn.execute("UPDATE members SET eligible = ? WHERE node_id = ?", (int(eligible), node_id))
    if txn.rowcount == 0:
        raise _Rejected(error("not_found", f"no member with node_id {node_id}", "node_id"))
    return _member(
        _one_known(
            txn,
            "SELECT node_id, address, raft_address, eligible FROM members WHERE node_id = ?",
            (node_id,),
        )
    )


def _assign_jobs(txn: Any, args: Mapping, index: int = 0) -> Any:
    """
    Give jobs new owners. With C{handover_at} the old owner fires slots before
    it and the new one slots at or after it; null means the old owner is gone
    and the new one catches up from committed progress. Deleted jobs are
    skipped and counted as missing.
    """
    handover_at = args.get("handover_at")
    if handover_at is not None:
        handover_at = _instant_arg(handover_at, "handover_at")
    moves = []
    for move in _list(args, "moves"):
        if not isinstance(move, list) or len(move) != 2 or not isinstance(move[0], str):
            raise _invalid("moves", "each move must be [job_uuid, node_id or null]")
        owner = move[1]
        if owner is not None and (
            isinstance(owner, bool) or not isinstance(owner, int) or owner not in _INT64
        ):
            raise _invalid("moves", f"the owner of job {move[0]} must be a node id or null")
        moves.append((move[0], owner))
    # uuid -> (owner, owner_since) as they are now.
    current: dict[str, tuple[int | None, int | None]] = {}
    wanted = sorted({uuid for uuid, _ in moves})
    for chunk, marks in _chunks(wanted):
        for uuid, owner, since in _all(
            txn, f"SELECT uuid, owner, owner_since FROM jobs WHERE uuid IN ({marks})", chunk
        ):
            current[uuid] = (owner, since)
    reports = _progress_reports(txn)
    deltas: dict[int | None, int] = {}
    kept: list[tuple] = []
    changes: list[tuple] = []
    floors: dict[str, str] = {}
    for uuid, owner in moves:
        if uuid not in current:
            continue
        previous, previous_since = current[uuid]
        deltas[previous] = deltas.get(previous, 0) - 1
        deltas[owner] = deltas.get(owner, 0) + 1
        if previous == owner:
            kept.append((owner, handover_at, uuid))
            continue
        # How far the old owner got with this job, by its last report: the
        # new owner fires what comes after (see covers_job).
        report = reports.get(previous) if previous is not None else None
        if report is not None and covers_job(report, previous_since, index):
            floor = handled_through(report[0])
            if floor > floors.get(uuid, ""):
                floors[uuid] = floor
        current[uuid] = (owner, index)
        changes.append((owner, handover_at, index, previous, previous_since, uuid))
    txn.executemany("UPDATE jobs SET owner = ?, handover_at = ? WHERE uuid = ?", kept)
    txn.executemany(
        "UPDATE jobs SET owner = ?, handover_at = ?, owner_since = ?, prev_owner = ?,"
        " prev_owner_since = ? WHERE uuid = ?",
        changes,
    )
    _raise_progress(txn, floors)
    _add_loads(txn, deltas)
    return {"moved": len(kept) + len(changes), "missing": len(moves) - len(kept) - len(changes)}


def _progress_reports(txn: Any) -> dict[int, tuple[str, int, int]]:
    """node_id -> its last progress report (done_before, loaded_at, as_of)."""
    return {
        row[0]: (row[1], row[2], row[3])
        for row in _all(txn, "SELECT node_id, done_before, loaded_at, as_of FROM node_progress")
    }


def covers_job(report: tuple[str, int, int], owner_since: int | None, moved_at: int) -> bool:
    """
    Whether a node's progress C{report} speaks for a job it has owned from
    log index C{owner_since}, which was moved off it at C{moved_at}: the
    job was in that node's scheduler when the report was made, since the
    node had taken it up (as_of >= owner_since) and the run that made the
    report began before the move (loaded_at < moved_at; a node restarted
    after a move never loads the job again).
    """
    _, loaded_at, as_of = report
    return as_of >= (owner_since or 0) and loaded_at < moved_at


def handled_through(done_before: str) -> str:
    """The last instant, to the millisecond, before C{done_before}: slots up to it are done."""
    return format_instant(parse_instant(done_before) - timedelta(milliseconds=1))


def _raise_progress(txn: Any, floors: Mapping[str, str]) -> None:
    """Raise each job's committed progress (its last handled slot) to at least C{floors}'."""
    txn.executemany(
        "INSERT INTO job_progress (job_uuid, last_slot)"
        " SELECT uuid, ? FROM jobs WHERE uuid = ?"
        " ON CONFLICT (job_uuid) DO UPDATE SET last_slot = MAX(last_slot, excluded.last_slot)",
        [(slot, job_uuid) for job_uuid, slot in sorted(floors.items())],
    )


def _record_progress(txn: Any, args: Mapping, index: int = 0) -> Any:
    """
    Keep each node's latest progress report, one row per node: C{marks} is
    a list of [node_id, done_before, loaded_at, as_of]. A report older (by
    as_of, then loaded_at) than the one kept changes nothing.
    """
    kept = 0
    for position, mark in enumerate(_list(args, "marks")):
        if (
            not isinstance(mark, list)
            or len(mark) != 4
            or not all(
                not isinstance(v, bool) and isinstance(v, int) and v in _INT64
                for v in (mark[0], mark[2], mark[3])
            )
        ):
            raise _invalid(
                "marks", f"marks[{position}] must be [node_id, done_before, loaded_at, as_of]"
            )
        node_id, done_before, loaded_at, as_of = mark
        try:
            done_before = _instant_arg(done_before, f"marks[{position}] done_before")
        except _Rejected as rejected:
            raise _invalid("marks", str(rejected.result.message)) from None
        if as_of >= index > 0:
            raise _invalid("marks", f"marks[{position}]: as_of must be before this entry")
        stored = _one(
            txn, "SELECT loaded_at, as_of FROM node_progress WHERE node_id = ?", (node_id,)
        )
        if stored is not None and (as_of, loaded_at) < (stored[1], stored[0]):
            continue
        txn.execute(
            "INSERT INTO node_progress (node_id, done_before, loaded_at, as_of)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET"
            " done_before = excluded.done_before, loaded_at = excluded.loaded_at,"
            " as_of = excluded.as_of",
            (node_id, done_before, loaded_at, as_of),
        )
        kept += 1
    return {"kept": kept}


_UPSERT_EXECUTION = (
    f"INSERT INTO executions ({', '.join(EXECUTION_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(EXECUTION_COLUMNS))})"
    " ON CONFLICT (execution_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in EXECUTION_COLUMNS[1:])
)
_JOB_UUID = EXECUTION_COLUMNS.index("job_uuid")
_SCHEDULED_AT = EXECUTION_COLUMNS.index("scheduled_at")
_STATE = EXECUTION_COLUMNS.index("state")


def _commit_executions(txn: Any, args: Mapping) -> Any:
    """
    Commit a batch of a node's execution records, read from its executions.db
    after seq C{from_seq} up to C{up_to_seq}. A batch that does not start
    where the last one from that node ended is stale (another leader, or a
    retry, got there first) and changes nothing, so nothing is committed twice.
    """
    node_id = _integer(args, "node_id")
    from_seq = _integer(args, "from_seq", 0)
    up_to_seq = _integer(args, "up_to_seq", from_seq)
    keep = _integer(args, "keep", 0)
    now = _instant_arg(args.get("now"), "now")
    rows = []
    for position, record in enumerate(_list(args, "records")):
        row = plain_execution_row(record)
        if row is not None:
            rows.append(row)
            continue
        try:
            row = execution_row(record)
        except (ValueError, TypeError, OverflowError) as e:
            raise _invalid("records", f"records[{position}]: {e}") from e
        for column, value in zip(EXECUTION_COLUMNS, row, strict=True):
            if not _bindable(value):
                raise _invalid(
                    "records", f"records[{position}]: execution field {column} must be a scalar"
                )
        rows.append(row)
    stored = _one(txn, "SELECT seq FROM fanin WHERE node_id = ?", (node_id,))
    if from_seq != (stored[0] if stored else 0):
        return {"committed": 0, "stale": True}
    txn.executemany(_UPSERT_EXECUTION, rows)
    progress: dict[str, str] = {}
    for row in rows:
        if row[_STATE] != "scheduled":
            job_uuid, slot = row[_JOB_UUID], row[_SCHEDULED_AT]
            if slot > progress.get(job_uuid, ""):
                progress[job_uuid] = slot
    # Only jobs that still exist have progress (a deleted job's goes with it).
    txn.executemany(
        "INSERT INTO job_progress (job_uuid, last_slot)"
        " SELECT uuid, ? FROM jobs WHERE uuid = ?"
        " ON CONFLICT (job_uuid) DO UPDATE SET last_slot = MAX(last_slot, excluded.last_slot)",
        [(slot, job_uuid) for job_uuid, slot in sorted(progress.items())],
    )
    txn.execute(
        "INSERT INTO fanin (node_id, seq) VALUES (?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET seq = excluded.seq",
        (node_id, up_to_seq),
    )
    failed_since = format_instant(parse_instant(now) - FAILURE_RETENTION)
    prune_history(txn, keep, failed_since, sorted({row[_JOB_UUID] for row in rows}))
    return {"committed": len(rows), "stale": False}


HANDLERS: dict[str, Callable[[Any, Mapping], Any]] = {
    Op.CREATE_PROJECT: _create_project,
    Op.UPDATE_PROJECT: _update_project,
    Op.DELETE_PROJECT: _delete_project,
    Op.CREATE_JOBS: _create_jobs,
    Op.UPDATE_JOB: _update_job,
    Op.DELETE_JOB: _delete_job,
    Op.CREATE_CREDENTIAL: _create_credential,
    Op.ARCHIVE_CREDENTIAL: _archive_credential,
    Op.ROTATE_SIGNING_SECRET: _rotate_signing_secret,
    Op.SET_MEMBERS: _set_members,
    Op.REMOVE_MEMBER: _remove_member,
    Op.SET_ELIGIBLE: _set_eligible,
    Op.ASSIGN_JOBS: _assign_jobs,
    Op.COMMIT_EXECUTIONS: _commit_executions,
    Op.RECORD_PROGRESS: _record_progress,
}
# Handlers that are also given the entry's log index.
_GIVEN_INDEX = frozenset((Op.CREATE_JOBS, Op.ASSIGN_JOBS, Op.RECORD_PROGRESS))


def _apply(txn: Any, index: int, command: Command) -> Result:
    applied = _one_known(txn, "SELECT value FROM meta WHERE key = 'applied_index'")[0]
    if index <= applied:
        return Result(True, None, duplicate=True)
    # Writing the index first opens the transaction, so the savepoint below nests
    # inside it and releasing the savepoint does not commit early.
    txn.execute("UPDATE meta SET value = ? WHERE key = 'applied_index'", (index,))
    if index % 1000 == 0:
        txn.execute("DELETE FROM requests WHERE log_index <= ?", (index - REQUEST_MEMORY,))
    if command.request_id:
        txn.execute("SELECT result FROM requests WHERE request_id = ?", (command.request_id,))
        seen = txn.fetchone()
        if seen is not None:
            # The same request again (a retry): answer as the first time, change nothing.
            first = json.loads(seen[0])
            if first.get(_VALUE_FROM_COMMAND):
                again = ok(_created_jobs(command))
            elif "job_uuids" in first:
                again = ok(_jobs_by_uuid(txn, first["job_uuids"]))
            else:
                again = Result.from_json(first)
            return attrs.evolve(again, duplicate=True)
    result = _apply_command(txn, command, index)
    if command.request_id:
        remembered = result.to_json()
        if command.op == Op.CREATE_JOBS and result.ok:
            if command.request_id.startswith(CLIENT_KEY_PREFIX):
                # A client's retry carries a new command (new uuids): keep
                # which jobs the first one made.
                remembered = {"ok": True, "job_uuids": [job["uuid"] for job in result.value]}
            else:
                # The created jobs follow from the command alone (and a
                # retry carries the same command): a mark, not a copy of them.
                remembered = {"ok": True, _VALUE_FROM_COMMAND: True}
        txn.execute(
            "INSERT INTO requests (request_id, log_index, result) VALUES (?, ?, ?)",
            (command.request_id, index, canonical_json(remembered)),
        )
    return result


_VALUE_FROM_COMMAND = "value_from_command"
#: Request ids made from a client's Idempotency-Key start with this.
CLIENT_KEY_PREFIX = "key:"


def _jobs_by_uuid(txn: Any, uuids: list[str]) -> list[dict]:
    """The jobs named, as they are now and in that order (deleted ones left out)."""
    found: dict[str, dict] = {}
    for chunk, marks in _chunks(uuids):
        for row in _all(txn, f"SELECT {_JOBS} FROM jobs WHERE uuid IN ({marks})", chunk):
            job = _job(row)
            found[job["uuid"]] = job
    return [found[uuid] for uuid in uuids if uuid in found]


def _created_jobs(command: Command) -> list[dict]:
    """The value of an applied C{create_jobs}, worked out again from the command."""
    return [_job(row) for row in _job_rows(command.args["jobs"])]


def _apply_command(txn: Any, command: Command, index: int = 0) -> Result:
    handler = HANDLERS.get(command.op)
    if handler is None:
        return error("invalid", f"unknown command op {command.op!r}", "op")
    if not isinstance(command.args, Mapping):
        return error("invalid", "command args must be an object", "args")
    txn.execute("SAVEPOINT command")
    try:
        if command.op in _GIVEN_INDEX:
            value = handler(txn, command.args, index)  # type: ignore[call-arg]
        else:
            value = handler(txn, command.args)
    except _Rejected as rejected:
        txn.execute("ROLLBACK TO command")
        txn.execute("RELEASE command")
        return rejected.result
    txn.execute("RELEASE command")
    return ok(value)


def _create_schema(txn: Any) -> None:
    """Create what is missing, adding new columns to the tables of older files."""
    for statement in _SCHEMA:
        txn.execute(statement)
    for table, column, kind in _ADDED_COLUMNS:
        if column not in {row[1] for row in _all(txn, f"PRAGMA table_info({table})")}:
            txn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for statement in _LATE_SCHEMA:
        txn.execute(statement)
    if not _one(txn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'owner_loads'"):
        txn.execute(_OWNER_LOADS)
        txn.execute(
            "INSERT INTO owner_loads (node_id, jobs)"
            " SELECT owner, COUNT(*) FROM jobs WHERE owner IS NOT NULL GROUP BY owner"
        )


# Pages of state.db SQLite may keep in memory (KiB when negative). Inserting
# jobs under random uuids changes pages all over the primary key's index; at
# a million jobs that index is about 50 MiB, and with the default 2 MiB cache
# each command read most of it back from the file (inserting 400,000 jobs in
# commands of 10,000 took 8.8 s of SQLite time with 2 MiB, 5.7 s with 64 MiB).
STATE_CACHE_KIB = 65536


def _open(txn: Any) -> None:
    txn.execute(f"PRAGMA cache_size = -{STATE_CACHE_KIB}")
    _create_schema(txn)


@attrs.define(eq=False)
class StateStore:
    """Projects, jobs and credentials in one SQLite file, changed only by L{apply}."""

    pool: Any
    #: Runs a blocking call on some thread other than the pool's; with it a
    #: snapshot is copied beside the pool instead of inside it (see snapshot).
    run_blocking: Callable[..., Deferred] | None = None

    def open(self) -> Deferred:
        """Create the schema if it is missing; size the page cache for many jobs."""
        return self.pool.runInteraction(_open)

    def close(self) -> Deferred:
        """Release the connection pool."""
        self.pool.close()
        return succeed(None)

    def apply(self, index: int, command: Command) -> Deferred:
        """
        Apply C{command} as log entry C{index} in one transaction with the new
        applied index. An index at or below the applied one is skipped.
        """
        return self.pool.runInteraction(_apply, index, command)

    def make_durable(self) -> Deferred:
        """
        Sync every commit so far to disk (a WAL checkpoint syncs the WAL and
        the database), for files opened without a sync per commit.
        """

        def checkpoint(txn: Any) -> None:
            txn.execute("PRAGMA wal_checkpoint(FULL)")
            txn.fetchall()

        return self.pool.runInteraction(checkpoint)

    def applied_index(self) -> Deferred:
        """The index of the last applied command (0 for a fresh store)."""
        return self._scalar("SELECT value FROM meta WHERE key = 'applied_index'")

    # -- reads ------------------------------------------------------------------

    def _scalar(self, sql: str, params: tuple = ()) -> Deferred:
        return self.pool.runInteraction(lambda txn: _one_known(txn, sql, params)[0])

    def _row(self, decode: Callable, sql: str, params: tuple) -> Deferred:
        return self.pool.runInteraction(lambda txn: decode(_one(txn, sql, params)))

    def _listing(
        self, decode: Callable, select: str, count: str, params: tuple, limit: int, offset: int
    ) -> Deferred:
        try:
            limit, offset = _page(limit, offset)
        except ValueError:
            return fail()

        def read(txn: Any) -> tuple[list, int]:
            rows = _all(txn, select + " LIMIT ? OFFSET ?", params + (limit, offset))
            total = _one_known(txn, count, params)[0]
            return [decode(row) for row in rows], total

        return self.pool.runInteraction(read)

    def get_project(self, uuid: str) -> Deferred:
        """The project with C{uuid}, or None."""
        return self._row(_project, f"SELECT {_PROJECTS} FROM projects WHERE uuid = ?", (uuid,))

    def get_project_by_name(self, name: str) -> Deferred:
        """The project named C{name}, or None."""
        return self._row(_project, f"SELECT {_PROJECTS} FROM projects WHERE name = ?", (name,))

    def list_projects(self, limit: int = 50, offset: int = 0) -> Deferred:
        """A page of projects ordered by creation, and the total count."""
        return self._listing(
            _project,
            f"SELECT {_PROJECTS} FROM projects ORDER BY created_at, uuid",
            "SELECT COUNT(*) FROM projects",
            (),
            limit,
            offset,
        )

    def get_job(self, uuid: str) -> Deferred:
        """The job with C{uuid}, or None."""
        return self._row(_job, f"SELECT {_JOBS} FROM jobs WHERE uuid = ?", (uuid,))

    def get_jobs(self, uuids: list) -> Deferred:
        """The jobs among C{uuids} that exist, in the order asked for."""
        wanted = list(uuids)

        def read(txn: Any) -> list[dict]:
            found: dict[str, dict] = {}
            for chunk, marks in _chunks(wanted):
                for row in _all(txn, f"SELECT {_JOBS} FROM jobs WHERE uuid IN ({marks})", chunk):
                    found[row[0]] = _job(row)
            return [found[uuid] for uuid in wanted if uuid in found]

        return self.pool.runInteraction(read)

    def list_jobs(
        self,
        project_uuid: str | None = None,
        paused: bool | None = None,
        limit: int = 50,
        offset: int = 0,
        after: tuple[str, str] | None = None,
    ) -> Deferred:
        """
        A page of jobs ordered by creation, optionally filtered, and the total
        count. With C{after} = (created_at, uuid) the page starts after that
        position (found through the index) and C{offset} is not skipped.
        """
        where: list[str] = []
        params: list[Any] = []
        if project_uuid is not None:
            where.append("project_uuid = ?")
            params.append(project_uuid)
        if paused is not None:
            where.append("paused = ?")
            params.append(int(bool(paused)))
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        count = f"SELECT COUNT(*) FROM jobs{clause}"
        if after is not None:
            where.append("(created_at, uuid) > (?, ?)")
            clause = " WHERE " + " AND ".join(where)
            try:
                limit, _ = _page(limit, 0)
            except ValueError:
                return fail()
            select = f"SELECT {_JOBS} FROM jobs{clause} ORDER BY created_at, uuid LIMIT ?"
            filters = tuple(params)
            paged = (*filters, after[0], after[1], limit)

            def read(txn: Any) -> tuple[list, int]:
                rows = _all(txn, select, paged)
                return [_job(row) for row in rows], _one_known(txn, count, filters)[0]

            return self.pool.runInteraction(read)
        return self._listing(
            _job,
            f"SELECT {_JOBS} FROM jobs{clause} ORDER BY created_at, uuid",
            count,
            tuple(params),
            limit,
            offset,
        )

    def count_jobs(self, project_uuid: str) -> Deferred:
        """How many jobs belong to C{project_uuid}."""
        return self._scalar("SELECT COUNT(*) FROM jobs WHERE project_uuid = ?", (project_uuid,))

    def all_jobs(self) -> Deferred:
        """Every job, ordered by creation (scheduler start-up)."""
        return self.pool.runInteraction(
            lambda txn: [
                _job(row)
                for row in _all(txn, f"SELECT {_JOBS} FROM jobs ORDER BY created_at, uuid")
            ]
        )

    def jobs_page(self, after: tuple[str, str] | None = None, limit: int = 1000) -> Deferred:
        """
        Up to C{limit} jobs in creation order, starting after the position
        C{after} = (created_at, uuid) of the last job of the previous page
        (None: from the first). The scheduler reads every job this way at
        start-up, so no more than a page of rows is in memory at once.
        """
        try:
            limit, _ = _page(limit, 0)
        except ValueError:
            return fail()
        if after is None:
            sql = f"SELECT {_JOBS} FROM jobs ORDER BY created_at, uuid LIMIT ?"
            params: tuple = (limit,)
        else:
            created_at, uuid = after
            sql = (
                f"SELECT {_JOBS} FROM jobs WHERE (created_at, uuid) > (?, ?)"
                " ORDER BY created_at, uuid LIMIT ?"
            )
            params = (created_at, uuid, limit)
        return self.pool.runInteraction(lambda txn: [_job(row) for row in _all(txn, sql, params)])

    # -- cluster reads ------------------------------------------------------------

    def members(self) -> Deferred:
        """Every member as {node_id, address, raft_address, eligible}, by node id."""
        return self.pool.runInteraction(_all_members)

    def owner_counts(self) -> Deferred:
        """{node_id or None: how many jobs it owns}; None counts the unowned jobs."""

        def read(txn: Any) -> dict[int | None, int]:
            counts: dict[int | None, int] = dict(
                _all(txn, "SELECT node_id, jobs FROM owner_loads ORDER BY node_id")
            )
            unowned = _one_known(txn, "SELECT COUNT(*) FROM jobs WHERE owner IS NULL")[0]
            if unowned:
                counts[None] = unowned
            return counts

        return self.pool.runInteraction(read)

    def jobs_owned_by(
        self, node_id: int | None, after_uuid: str | None = None, limit: int = 1000
    ) -> Deferred:
        """
        Up to C{limit} uuids of the jobs C{node_id} owns (None: the unowned
        ones) in creation order, after the job C{after_uuid} (the last of the
        previous page). Fails with C{KeyError} if that job no longer exists.
        """
        try:
            limit, _ = _page(limit, 0)
        except ValueError:
            return fail()
        owned = "owner IS NULL" if node_id is None else "owner = ?"
        owner: tuple = () if node_id is None else (node_id,)

        def read(txn: Any) -> list[str]:
            if after_uuid is None:
                sql = f"SELECT uuid FROM jobs WHERE {owned} ORDER BY created_at, uuid LIMIT ?"
                return [row[0] for row in _all(txn, sql, (*owner, limit))]
            position = _one(txn, "SELECT created_at FROM jobs WHERE uuid = ?", (after_uuid,))
            if position is None:
                raise KeyError(f"after_uuid: no job with uuid {after_uuid}")
            sql = (
                f"SELECT uuid FROM jobs WHERE {owned} AND (created_at, uuid) > (?, ?)"
                " ORDER BY created_at, uuid LIMIT ?"
            )
            return [row[0] for row in _all(txn, sql, (*owner, position[0], after_uuid, limit))]

        return self.pool.runInteraction(read)

    def ownership_of(self, uuids: list) -> Deferred:
        """{uuid: (owner, handover_at)} for those of C{uuids} that exist."""
        wanted = list(uuids)

        def read(txn: Any) -> dict[str, tuple]:
            found: dict[str, tuple] = {}
            for chunk, marks in _chunks(wanted):
                for uuid, owner, handover_at in _all(
                    txn,
                    f"SELECT uuid, owner, handover_at FROM jobs WHERE uuid IN ({marks})",
                    chunk,
                ):
                    found[uuid] = (owner, handover_at)
            return found

        return self.pool.runInteraction(read)

    def owned_jobs_of(self, node_id: int | None, uuids: list) -> Deferred:
        """
        The jobs among C{uuids} that C{node_id} owns (None: whoever owns
        them), shaped as L{owned_jobs_page}'s.
        """
        wanted = list(uuids)
        # "+owner": the uuids pick the rows. Left to itself the planner walks
        # every job the node owns through jobs_by_owner for each chunk, which
        # made each create_jobs cost in proportion to the jobs already there.
        owned = "" if node_id is None else " AND +owner = ?"
        extra: tuple = () if node_id is None else (node_id,)

        def read(txn: Any) -> list[dict]:
            return [
                _placed_job(row)
                for chunk, marks in _chunks(wanted)
                for row in _all(
                    txn, f"{_PLACED_JOB} WHERE uuid IN ({marks}){owned}", (*chunk, *extra)
                )
            ]

        return self.pool.runInteraction(read)

    def owned_jobs_page(
        self, node_id: int | None, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> Deferred:
        """
        L{jobs_page} for just the jobs C{node_id} owns (None: the unowned
        ones), each job with three more keys: C{owner}, C{handover_at}, and
        C{active_since} (when it was last resumed or rescheduled, or None).
        """
        try:
            limit, _ = _page(limit, 0)
        except ValueError:
            return fail()
        owned = "owner IS NULL" if node_id is None else "owner = ?"
        params: tuple = () if node_id is None else (node_id,)
        select = f"{_PLACED_JOB} WHERE {owned}"
        if after is None:
            sql = f"{select} ORDER BY created_at, uuid LIMIT ?"
            params = (*params, limit)
        else:
            sql = f"{select} AND (created_at, uuid) > (?, ?) ORDER BY created_at, uuid LIMIT ?"
            params = (*params, after[0], after[1], limit)

        def read(txn: Any) -> list[dict]:
            return [_placed_job(row) for row in _all(txn, sql, params)]

        return self.pool.runInteraction(read)

    def fanin_seq(self, node_id: int) -> Deferred:
        """The seq of C{node_id}'s executions.db up to which records are committed (0: none)."""

        def read(txn: Any) -> int:
            row = _one(txn, "SELECT seq FROM fanin WHERE node_id = ?", (node_id,))
            return 0 if row is None else row[0]

        return self.pool.runInteraction(read)

    def progress_reports(self) -> Deferred:
        """node_id -> its last committed progress report (done_before, loaded_at, as_of)."""
        return self.pool.runInteraction(_progress_reports)

    def job_progress(self, uuids: list) -> Deferred:
        """{uuid: last committed slot that got further than scheduled}, for those that have one."""
        wanted = list(uuids)

        def read(txn: Any) -> dict[str, str]:
            found: dict[str, str] = {}
            for chunk, marks in _chunks(wanted):
                found.update(
                    _all(
                        txn,
                        f"SELECT job_uuid, last_slot FROM job_progress WHERE job_uuid IN ({marks})",
                        chunk,
                    )
                )
            return found

        return self.pool.runInteraction(read)

    def query_executions(
        self,
        job_uuid: str | None = None,
        project_uuid: str | None = None,
        state: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Deferred:
        """
        A page of committed records, newest scheduled_at first, and the total
        matching: the same filters and shape as L{ExecutionStore.query}.
        """
        try:
            clause, params = execution_filters(
                job_uuid, project_uuid, state, since, until, limit, offset
            )
        except ValueError:
            return fail()
        return self.pool.runInteraction(query_page, clause, params, limit, offset)

    def latest_executions(self, uuids: list) -> Deferred:
        """job_uuid -> its newest committed record, for those of C{uuids} that have one."""
        return self.pool.runInteraction(latest_of, list(uuids))

    def get_credential_by_key(self, api_key: str) -> Deferred:
        """The credential for C{api_key} including its secret hash and archive time, or None."""
        return self._row(
            lambda row: None if row is None else dict(zip(CREDENTIAL_COLUMNS, row, strict=True)),
            f"SELECT {_CREDENTIALS} FROM credentials WHERE api_key = ?",
            (api_key,),
        )

    def get_credential(self, uuid: str) -> Deferred:
        """The credential with C{uuid} without its secret hash, or None."""
        return self._row(
            _public_credential,
            f"SELECT {_PUBLIC_CREDENTIALS} FROM credentials WHERE uuid = ?",
            (uuid,),
        )

    def list_credentials(self, limit: int = 50, offset: int = 0) -> Deferred:
        """A page of credentials (without hashes) ordered by creation, and the total."""
        return self._listing(
            _public_credential,
            f"SELECT {_PUBLIC_CREDENTIALS} FROM credentials ORDER BY created_at, uuid",
            "SELECT COUNT(*) FROM credentials",
            (),
            limit,
            offset,
        )

    def signing_secrets(self) -> Deferred:
        """Every project's signing secrets: {project_uuid: [(secret, expires_at or None)]}."""

        def read(txn: Any) -> dict[str, list[tuple[str, str | None]]]:
            found: dict[str, list[tuple[str, str | None]]] = {}
            rows = _all(
                txn,
                "SELECT project_uuid, secret, expires_at FROM signing_secrets"
                " ORDER BY project_uuid, created_at DESC, secret",
            )
            for project_uuid, secret, expires_at in rows:
                found.setdefault(project_uuid, []).append((secret, expires_at))
            return found

        return self.pool.runInteraction(read)

    def count_credentials(self) -> Deferred:
        """How many credentials exist, archived ones included."""
        return self._scalar("SELECT COUNT(*) FROM credentials")

    def snapshot(self, path: str | None = None) -> Deferred:
        """
        The whole state machine as a SQLite database image made with the
        backup API, as it is when this is called: written to the file
        C{path} (fires with None), or as bytes.

        With C{run_blocking} the copy is made from a second connection that
        opens a read transaction in turn with the pool's commands, so it sees
        exactly the commands applied before the call; the copy then runs on
        another thread while the pool goes on applying (WAL lets that reader
        and the writer run side by side). Without it the copy is made inside
        the pool and every command after the call waits for it.
        """
        if self.run_blocking is None:
            return self.pool.runInteraction(_snapshot_image, path)
        return Deferred.fromCoroutine(self._snapshot_beside(self.run_blocking, path))

    async def _snapshot_beside(
        self, run_blocking: Callable[..., Deferred], path: str | None
    ) -> bytes | None:
        reader = await self.pool.runInteraction(_open_reader)
        return await run_blocking(_image_of_reader, reader, path)

    def restore(self, image: Any) -> Deferred:
        """
        Replace the whole state machine with C{image} (from L{snapshot}):
        bytes, or an image on disk with a C{path}.
        """
        if getattr(image, "path", None) is None:
            image = bytes(image)
        return self.pool.runInteraction(_restore_image, image)

    def dump(self) -> Deferred:
        """Every row of every table as sorted lists: equal dumps mean equal state."""

        def read(txn: Any) -> dict:
            return {
                table: sorted(list(row) for row in _all(txn, f"SELECT * FROM {table}"))
                for table in _DUMPED_TABLES
            }

        return self.pool.runInteraction(read)


def _open_reader(txn: Any) -> sqlite3.Connection:
    """A new connection to this file holding a read transaction that begins now."""
    path = next(row[2] for row in _all(txn, "PRAGMA database_list") if row[1] == "main")
    reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        reader.execute("BEGIN")
        # The read transaction (and the version of the file it sees) starts
        # with the first read, not with BEGIN.
        reader.execute("SELECT value FROM meta WHERE key = 'applied_index'").fetchone()
    except BaseException:
        reader.close()
        raise
    return reader


def _image_of_reader(reader: sqlite3.Connection, path: str | None) -> bytes | None:
    """
    Copy the version of the file C{reader}'s read transaction sees (the
    backup uses a source connection's open transaction), then close it.
    """
    try:
        return _image(reader, path)
    finally:
        reader.close()


def _image(connection: sqlite3.Connection, path: str | None) -> bytes | None:
    """Back C{connection}'s database up into the file C{path}, or into bytes."""
    if path is not None:
        target = sqlite3.connect(path)
        try:
            connection.backup(target)
            # A rollback-journal file: reading it later (restoring from it in
            # place) creates no -wal or -shm files beside it.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
        return None
    with tempfile.TemporaryDirectory() as folder:
        copy = os.path.join(folder, "snapshot.db")
        _image(connection, copy)
        with open(copy, "rb") as f:
            return f.read()


def _snapshot_image(txn: Any, path: str | None = None) -> bytes | None:
    # txn is a DB-API cursor (or adbapi's proxy for one): .connection is sqlite3's.
    return _image(txn.connection, path)


def _restore_image(txn: Any, image: Any) -> None:
    path = getattr(image, "path", None)
    if path is not None:
        # An image on disk (a Raft snapshot file): copied from where it is.
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            source.backup(txn.connection)
        finally:
            source.close()
    else:
        with tempfile.TemporaryDirectory() as folder:
            copy = os.path.join(folder, "snapshot.db")
            with open(copy, "wb") as f:
                f.write(image)
            source = sqlite3.connect(copy)
            try:
                source.backup(txn.connection)
            finally:
                source.close()
    # An image from an older version lacks the newer tables and columns.
    _create_schema(txn)
