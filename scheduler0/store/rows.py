"""
The state machine's rows as values (projects, jobs, credentials, members,
progress reports) and the small SQL helpers its handlers and reads share.
"""

from __future__ import annotations

import json
from typing import Any, overload

from scheduler0.model import CREDENTIAL_ROLES, JOB_COLUMNS, PROJECT_COLUMNS

CREDENTIAL_COLUMNS = ("uuid", "api_key", "api_secret_hash", "created_at", "archived_at")
PUBLIC_CREDENTIAL_COLUMNS = ("uuid", "api_key", "created_at", "archived_at")

_PROJECTS = ", ".join(PROJECT_COLUMNS)
_JOBS = ", ".join(JOB_COLUMNS)
_CREDENTIALS = ", ".join(CREDENTIAL_COLUMNS)
_PUBLIC_CREDENTIALS = ", ".join(PUBLIC_CREDENTIAL_COLUMNS)


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
    labels = job["labels"]
    job["labels"] = json.loads(labels) if labels and labels != "{}" else {}
    return job


def _public_credential(row: tuple | None) -> dict | None:
    return None if row is None else dict(zip(PUBLIC_CREDENTIAL_COLUMNS, row, strict=True))


# Issue 19: the columns read beside a project (its pause) and beside a
# credential (its scope). A project or credential without them (not paused;
# full access) reads as before they existed.
_PROJECT_READ = f"{_PROJECTS}, paused"
_CREDENTIAL_SCOPE = "projects, role"
ROLES = CREDENTIAL_ROLES


@overload
def _read_project(row: tuple) -> dict: ...
@overload
def _read_project(row: None) -> None: ...
def _read_project(row: tuple | None) -> dict | None:
    """A row of L{_PROJECT_READ}: the project, with C{paused: true} when it is paused."""
    if row is None:
        return None
    project = dict(zip(PROJECT_COLUMNS, row[:-1], strict=True))
    if row[-1]:
        project["paused"] = True
    return project


def _scope(projects: str | None, role: str | None) -> dict[str, Any]:
    """A credential's scope as stored, as fields: none for full access."""
    if projects is None and role is None:
        return {}
    return {"projects": None if projects is None else json.loads(projects), "role": role or "write"}


def _scoped_credential(row: tuple | None, columns: tuple[str, ...]) -> dict | None:
    """A row of C{columns} then L{_CREDENTIAL_SCOPE}: the credential with its scope, if any."""
    if row is None:
        return None
    credential = dict(zip(columns, row[:-2], strict=True))
    credential.update(_scope(row[-2], row[-1]))
    return credential


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


def _progress_reports(txn: Any) -> dict[int, tuple[str, int, int]]:
    """node_id -> its last progress report (done_before, loaded_at, as_of)."""
    return {
        row[0]: (row[1], row[2], row[3])
        for row in _all(txn, "SELECT node_id, done_before, loaded_at, as_of FROM node_progress")
    }
