"""
The state machine's handlers of projects, jobs, credentials and signing
secrets: each is C{(txn, args) -> value}, or raises L{_Rejected}.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from scheduler0.labels import LabelError, parse_selector
from scheduler0.model import JOB_COLUMNS, PROJECT_COLUMNS
from scheduler0.secret_hash import SCHEME, is_keyed
from scheduler0.store.checks import (
    _JOB_CHANGEABLE,
    _check_job_field,
    _check_retry_delays,
    _invalid,
    _job_rows,
    _mapping,
    _Rejected,
    _text,
)
from scheduler0.store.commands import canonical_json, error
from scheduler0.store.rows import (
    _CREDENTIAL_SCOPE,
    _CREDENTIALS,
    _JOBS,
    _PROJECT_READ,
    _PROJECTS,
    _PUBLIC_CREDENTIALS,
    CREDENTIAL_COLUMNS,
    PUBLIC_CREDENTIAL_COLUMNS,
    ROLES,
    _all,
    _job,
    _one,
    _project,
    _read_project,
    _scoped_credential,
)
from scheduler0.store.selection import index_labels, selected_rows, unindex_labels


def _create_project(txn: Any, args: Mapping) -> Any:
    project = _mapping(args, "project")
    unknown = sorted(set(project) - set(PROJECT_COLUMNS) - {"paused"})
    if unknown:
        raise _invalid(unknown[0], f"unknown project field {unknown[0]}")
    paused = _flag(project, "paused", "project field ")
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
    if paused:
        txn.execute("UPDATE projects SET paused = 1 WHERE uuid = ?", (row[0],))
        return {**dict(zip(PROJECT_COLUMNS, row, strict=True)), "paused": True}
    return _project(row)


def _flag(args: Mapping, field: str, where: str = "") -> bool:
    """An optional boolean argument (absent: false)."""
    value = args.get(field, False)
    if not isinstance(value, bool):
        raise _invalid(field, f"{where}{field} must be a boolean")
    return value


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


def _reseal_signing_secrets(txn: Any, args: Mapping) -> Any:
    """
    Replace stored signing secrets by the same secrets sealed anew (under a
    new SecretKey, or sealed for the first time when they were plain text):
    each of C{secrets} names a project, the value stored now (C{from}) and
    its replacement (C{to}). The proposer sealed C{to}; a row that changed
    since it was read (rotated) is left alone and counted as skipped.
    """
    entries = args.get("secrets")
    if not isinstance(entries, list):
        raise _invalid("secrets", "secrets must be a list")
    resealed = skipped = 0
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise _invalid("secrets", "each of secrets must be an object")
        uuid = _text(entry, "project_uuid")
        before = _text(entry, "from")
        after = _text(entry, "to")
        cursor = txn.execute(
            "UPDATE signing_secrets SET secret = ? WHERE project_uuid = ? AND secret = ?",
            (after, uuid, before),
        )
        if cursor.rowcount:
            resealed += 1
        else:
            skipped += 1
    return {"resealed": resealed, "skipped": skipped}


def _update_project(txn: Any, args: Mapping) -> Any:
    uuid = _text(args, "uuid")
    changes = _mapping(args, "changes")
    updated_at = _text(args, "updated_at")
    for field in sorted(changes):
        if field == "notify_url":
            _notify_url(changes[field])
            continue
        if field == "paused":
            _flag(changes, field, "project field ")
            continue
        if field not in ("name", "description"):
            raise _invalid(field, f"project field {field} cannot be changed")
        _text(changes, field, "project field ")
    current = _read_project(
        _one(txn, f"SELECT {_PROJECT_READ} FROM projects WHERE uuid = ?", (uuid,))
    )
    if current is None:
        raise _Rejected(error("not_found", f"no project with uuid {uuid}", "uuid"))
    if "name" in changes and _one(
        txn, "SELECT 1 FROM projects WHERE name = ? AND uuid != ?", (changes["name"], uuid)
    ):
        raise _Rejected(error("conflict", f"a project named {changes['name']!r} exists", "name"))
    was_paused = bool(current.pop("paused", False))
    paused = changes.get("paused", was_paused)
    current.update({field: changes[field] for field in sorted(changes) if field != "paused"})
    current["updated_at"] = updated_at
    txn.execute(
        "UPDATE projects SET name = ?, description = ?, notify_url = ?, updated_at = ?"
        " WHERE uuid = ?",
        (current["name"], current["description"], current["notify_url"], updated_at, uuid),
    )
    if "paused" in changes:
        _pause_project(txn, uuid, was_paused, paused, updated_at)
    # (Shown only when paused: a project answers as before pauses existed.)
    return {**current, "paused": True} if paused else current


def _pause_project(txn: Any, uuid: str, was_paused: bool, paused: bool, at: str) -> None:
    """
    Pause or resume project C{uuid} (its jobs keep their own paused flag).
    Resuming is to each of its active jobs what resuming the job is: it
    fires from C{at} on, owing no slot that fell while the project was paused.
    """
    txn.execute("UPDATE projects SET paused = ? WHERE uuid = ?", (int(paused), uuid))
    if was_paused and not paused:
        txn.execute(
            "UPDATE jobs SET active_since = ?, updated_at = ?"
            " WHERE project_uuid = ? AND paused = 0",
            (at, at, uuid),
        )


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
    unindex_labels(
        txn,
        _all(
            txn,
            "SELECT uuid, labels FROM jobs WHERE project_uuid = ? AND labels != '{}'",
            (uuid,),
        ),
    )
    txn.execute("DELETE FROM jobs WHERE project_uuid = ?", (uuid,))
    txn.execute("DELETE FROM signing_secrets WHERE project_uuid = ?", (uuid,))
    txn.execute("DELETE FROM projects WHERE uuid = ?", (uuid,))
    _drop_from_scopes(txn, uuid)
    return {"uuid": uuid, "deleted_jobs": jobs}


def _drop_from_scopes(txn: Any, project_uuid: str) -> None:
    """A deleted project leaves every credential scope that named it."""
    rows = _all(
        txn,
        "SELECT uuid, projects FROM credentials WHERE projects IS NOT NULL"
        " AND instr(projects, ?) > 0 ORDER BY uuid",
        (canonical_json(project_uuid),),
    )
    for credential_uuid, projects in rows:
        kept = [p for p in json.loads(projects) if p != project_uuid]
        txn.execute(
            "UPDATE credentials SET projects = ? WHERE uuid = ?",
            (canonical_json(kept), credential_uuid),
        )


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
            index_labels(txn, ((row[0], row[_LABELS]) for row in rows))
            return [_job(row) for row in rows]
    _check_new_jobs(txn, rows)
    txn.executemany(insert, stored)
    _count_new_owners(txn, owners)
    index_labels(txn, ((row[0], row[_LABELS]) for row in rows))
    return [_job(row) for row in rows]


_LABELS = JOB_COLUMNS.index("labels")


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
    resumed = (bool(old["paused"]) and not bool(values["paused"])) or _leaves_paused_project(
        txn, old["project_uuid"], values["project_uuid"]
    )
    rescheduled = any(old[f] != values[f] for f in ("spec", "timezone", "anchor_at"))
    if resumed or rescheduled:
        txn.execute("UPDATE jobs SET active_since = ? WHERE uuid = ?", (updated_at, uuid))
    if old["labels"] != values["labels"]:
        unindex_labels(txn, [(uuid, old["labels"])])
        index_labels(txn, [(uuid, values["labels"])])
    return _job(new_row)


def _leaves_paused_project(txn: Any, before: str, after: str) -> bool:
    """Whether a job moved from a paused project to one that is not (it fires from now)."""
    if before == after:
        return False
    paused = dict(
        _all(txn, "SELECT uuid, paused FROM projects WHERE uuid IN (?, ?)", (before, after))
    )
    return bool(paused.get(before)) and not paused.get(after)


def _delete_job(txn: Any, args: Mapping) -> Any:
    uuid = _text(args, "uuid")
    found = _one(txn, "SELECT owner, labels FROM jobs WHERE uuid = ?", (uuid,))
    if found is None:
        raise _Rejected(error("not_found", f"no job with uuid {uuid}", "uuid"))
    unindex_labels(txn, [(uuid, found[1])])
    txn.execute("DELETE FROM jobs WHERE uuid = ?", (uuid,))
    _add_loads(txn, {found[0]: -1})
    # Its committed history stays (pruned like any other); its progress goes.
    txn.execute("DELETE FROM job_progress WHERE job_uuid = ?", (uuid,))
    return {"uuid": uuid}


#: What a bulk_jobs command may do to the jobs it selects, and which of
#: them it selects (only the jobs the action changes).
BULK_ACTIONS: dict[str, bool | None] = {"pause": False, "resume": True, "delete": None}
#: The most jobs one bulk_jobs command may name as its limit.
BULK_MAX = 10_000


def _bulk_jobs(txn: Any, args: Mapping) -> Any:
    """
    Pause, resume or delete the jobs C{selector} (and C{project_uuid}, when
    given) selects, as this state holds them: at most C{limit} of them in
    creation order, each exactly as L{_update_job} (C{paused} changed at
    C{at}) or L{_delete_job} would. The selector is resolved here, so every
    node changes the same jobs. C{more}: more jobs were selected than
    changed (the same command again changes the next ones).
    """
    action = _text(args, "action")
    if action not in BULK_ACTIONS:
        raise _invalid("action", f"action must be one of {', '.join(BULK_ACTIONS)}")
    text = _text(args, "selector")
    try:
        selector = parse_selector(text)
    except LabelError as problem:
        raise _invalid("selector", f"selector {problem}") from None
    project_uuid = args.get("project_uuid")
    if project_uuid is not None:
        project_uuid = _text(args, "project_uuid")
    at = _text(args, "at")
    limit = args.get("limit")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= BULK_MAX:
        raise _invalid("limit", f"limit must be an integer from 1 to {BULK_MAX}")
    uuids = [
        row[0]
        for row in selected_rows(
            txn,
            "uuid",
            project_uuid=project_uuid,
            paused=BULK_ACTIONS[action],
            selector=selector,
            limit=limit + 1,
        )
    ]
    more = len(uuids) > limit
    uuids = uuids[:limit]
    value: dict[str, Any] = {"action": action, "selector": text, "count": len(uuids)}
    if action == "delete":
        for job_uuid in uuids:
            _delete_job(txn, {"uuid": job_uuid})
    else:
        changes = {"paused": action == "pause"}
        value["jobs"] = [
            _update_job(txn, {"uuid": job_uuid, "changes": changes, "updated_at": at})
            for job_uuid in uuids
        ]
    value["uuids"] = uuids
    value["more"] = more
    return value


def _create_credential(txn: Any, args: Mapping) -> Any:
    credential = _mapping(args, "credential")
    allowed = set(CREDENTIAL_COLUMNS) | {"projects", "role"}
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
    projects, role = _credential_scope(txn, credential)
    row = (uuid, api_key, secret_hash, created_at, archived_at, projects, role)
    txn.execute(
        f"INSERT INTO credentials ({_CREDENTIALS}, {_CREDENTIAL_SCOPE})"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        row,
    )
    return _scoped_credential(
        (uuid, api_key, created_at, archived_at, projects, role), PUBLIC_CREDENTIAL_COLUMNS
    )


def _credential_scope(txn: Any, credential: Mapping) -> tuple[str | None, str | None]:
    """
    The stored scope of a new credential: its projects (JSON list of
    existing projects; None: all) and its role (None: write, full access).
    """
    role = credential.get("role")
    if role is not None and role not in ROLES:
        raise _invalid("role", f"credential field role must be one of {', '.join(ROLES)}")
    projects = credential.get("projects")
    if projects is None:
        return None, role
    if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
        raise _invalid("projects", "credential field projects must be a list of project uuids")
    for project_uuid in projects:
        if not _one(txn, "SELECT 1 FROM projects WHERE uuid = ?", (project_uuid,)):
            raise _Rejected(error("not_found", f"no project with uuid {project_uuid}", "projects"))
    return canonical_json(sorted(set(projects))), role


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
    return _scoped_credential(
        _one(
            txn,
            f"SELECT {_PUBLIC_CREDENTIALS}, {_CREDENTIAL_SCOPE} FROM credentials WHERE uuid = ?",
            (uuid,),
        ),
        PUBLIC_CREDENTIAL_COLUMNS,
    )


def _upgrade_credential_hash(txn: Any, args: Mapping) -> Any:
    """
    Replace the secret hash of credential C{uuid} by C{new_hash} (a keyed
    hash) only while it is still C{old_hash} (a pbkdf2 hash, or a keyed hash
    under a previous SecretKey): a proposal that lost a race with another
    changes nothing. C{upgraded} says whether it changed.
    """
    uuid = _text(args, "uuid")
    old_hash = _text(args, "old_hash")
    new_hash = _text(args, "new_hash")
    if not is_keyed(new_hash):
        raise _invalid("new_hash", f"new_hash must be a {SCHEME} hash")
    txn.execute(
        "UPDATE credentials SET api_secret_hash = ? WHERE uuid = ? AND api_secret_hash = ?",
        (new_hash, uuid, old_hash),
    )
    return {"uuid": uuid, "upgraded": txn.rowcount == 1}
