"""
The audit log: one record per user write, kept in the state machine so every
node holds the same log.

The API puts what only it knows on the command (L{scheduler0.store.commands.Command.audit}:
who, through which node, which route, when, and how many records to keep);
applying the command adds the record with what the command did to which
object and whether it was applied or refused. Everything comes from the
command and its result, never from the clock or this node: every node
writes the same record under the same C{seq} (the command's log index) and
trims the same oldest records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from scheduler0.store.commands import Command, Op, Result
from scheduler0.store.rows import _all, _one, _one_known

AUDIT_TABLE = """CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_key TEXT,
    via INTEGER,
    method TEXT,
    route TEXT,
    op TEXT NOT NULL,
    object_type TEXT,
    object_uuid TEXT,
    object_uuids TEXT NOT NULL,
    object_count INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    code TEXT)"""

AUDIT_COLUMNS = (
    "seq",
    "at",
    "actor",
    "actor_key",
    "via",
    "method",
    "route",
    "op",
    "object_type",
    "object_uuid",
    "object_uuids",
    "object_count",
    "outcome",
    "code",
)
_SELECT = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit"

#: How many object uuids one record names (a create_jobs of 10,000 jobs
#: names the first ones and the count).
OBJECTS_NAMED = 10

#: The records kept when a command does not say (C{AuditLogMaxEntries}).
DEFAULT_KEEP = 100_000

#: The actor of a write made with the admin credentials.
ADMIN_ACTOR = "admin"

# op -> (object type, the argument naming the object).
_OBJECTS: dict[str, tuple[str, str]] = {
    Op.UPDATE_PROJECT: ("project", "uuid"),
    Op.DELETE_PROJECT: ("project", "uuid"),
    Op.ROTATE_SIGNING_SECRET: ("project", "project_uuid"),
    Op.UPDATE_JOB: ("job", "uuid"),
    Op.DELETE_JOB: ("job", "uuid"),
    Op.ARCHIVE_CREDENTIAL: ("credential", "uuid"),
}


def audit_stamp(
    *,
    at: str,
    actor: str,
    via: int | None,
    method: str,
    route: str,
    keep: int,
    actor_key: str | None = None,
) -> dict[str, Any]:
    """The audit metadata the API puts on a user's command."""
    stamp: dict[str, Any] = {
        "at": at,
        "actor": actor,
        "via": via,
        "method": method,
        "route": route,
        "keep": keep,
    }
    if actor_key is not None:
        stamp["actor_key"] = actor_key
    return stamp


def _objects(
    op: str, args: Mapping[str, Any], value: Any = None
) -> tuple[str | None, list[str], int]:
    """
    What C{op} with C{args} acts on: (type, the first uuids, how many).
    C{value}: what applying it gave (a bulk action's jobs are known only
    once it is applied).
    """
    named = _OBJECTS.get(op)
    if named is not None:
        value = args.get(named[1])
        return named[0], [value] if isinstance(value, str) else [], 1
    if op == Op.CREATE_PROJECT:
        project = args.get("project")
        value = project.get("uuid") if isinstance(project, Mapping) else None
        return "project", [value] if isinstance(value, str) else [], 1
    if op == Op.CREATE_CREDENTIAL:
        credential = args.get("credential")
        value = credential.get("uuid") if isinstance(credential, Mapping) else None
        return "credential", [value] if isinstance(value, str) else [], 1
    if op == Op.CREATE_JOBS:
        jobs = args.get("jobs")
        jobs = jobs if isinstance(jobs, list) else []
        uuids = [
            job["uuid"]
            for job in jobs[:OBJECTS_NAMED]
            if isinstance(job, Mapping) and isinstance(job.get("uuid"), str)
        ]
        return "job", uuids, len(jobs)
    if op == Op.BULK_JOBS:
        changed = value.get("uuids") if isinstance(value, Mapping) else None
        changed = changed if isinstance(changed, list) else []
        return "job", [u for u in changed[:OBJECTS_NAMED] if isinstance(u, str)], len(changed)
    if op == Op.RESEAL_SIGNING_SECRETS:
        secrets = args.get("secrets")
        return "signing_secret", [], len(secrets) if isinstance(secrets, list) else 0
    # An op added later: what its arguments name, if anything.
    value = args.get("uuid")
    return None, [value] if isinstance(value, str) else [], 1 if isinstance(value, str) else 0


def _text_or_none(stamp: Mapping[str, Any], key: str) -> str | None:
    value = stamp.get(key)
    return value if isinstance(value, str) else None


def record_audit(txn: Any, index: int, command: Command, result: Result) -> None:
    """
    Add the audit record of C{command}, applied at log C{index} with
    C{result}, and drop the oldest records beyond the number it says to
    keep. A command without audit metadata leaves no record.
    """
    stamp = command.audit
    if not isinstance(stamp, Mapping):
        return
    object_type, uuids, count = _objects(command.op, command.args, result.value)
    via = stamp.get("via")
    row = (
        index,
        _text_or_none(stamp, "at") or "",
        _text_or_none(stamp, "actor") or "unknown",
        _text_or_none(stamp, "actor_key"),
        via if isinstance(via, int) and not isinstance(via, bool) else None,
        _text_or_none(stamp, "method"),
        _text_or_none(stamp, "route"),
        command.op,
        object_type,
        uuids[0] if uuids else None,
        json.dumps(uuids, separators=(",", ":")),
        count,
        "applied" if result.ok else "refused",
        None if result.ok else result.code,
    )
    txn.execute(
        f"INSERT OR REPLACE INTO audit ({', '.join(AUDIT_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})",
        row,
    )
    txn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('audit_rows', 0)")
    txn.execute("UPDATE meta SET value = value + 1 WHERE key = 'audit_rows'")
    keep = stamp.get("keep")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        keep = DEFAULT_KEEP
    _trim(txn, keep)


def _trim(txn: Any, keep: int) -> None:
    """Keep the newest C{keep} records (by seq)."""
    rows = _one_known(txn, "SELECT value FROM meta WHERE key = 'audit_rows'")[0]
    if rows <= keep:
        return
    txn.execute(
        "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit ORDER BY seq LIMIT ?)",
        (rows - keep,),
    )
    txn.execute("UPDATE meta SET value = ? WHERE key = 'audit_rows'", (keep,))


def audit_record(row: tuple) -> dict[str, Any]:
    """A row of the audit table as the API shows it."""
    record = dict(zip(AUDIT_COLUMNS, row, strict=True))
    record["object_uuids"] = json.loads(record["object_uuids"])
    return record


def audit_page(
    txn: Any,
    filters: Mapping[str, Any],
    limit: int,
    before_seq: int | None,
    offset: int = 0,
) -> tuple[list[dict], int, bool]:
    """
    Records newest first matching C{filters} (C{actor}, C{object}, C{op},
    C{via}, C{since}, C{until}: None or absent means any), starting below
    C{before_seq} (or, without it, after skipping C{offset}): (up to C{limit}
    records, how many match, whether more follow).
    """
    where: list[str] = []
    params: list[Any] = []
    for column in ("actor", "op", "via"):
        value = filters.get(column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    obj = filters.get("object")
    if obj is not None:
        where.append("(object_uuid = ? OR instr(object_uuids, ?) > 0)")
        params.extend((obj, json.dumps(obj)))
    if filters.get("since") is not None:
        where.append("at >= ?")
        params.append(filters["since"])
    if filters.get("until") is not None:
        where.append("at < ?")
        params.append(filters["until"])
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = _one_known(txn, f"SELECT COUNT(*) FROM audit{clause}", tuple(params))[0]
    if before_seq is not None:
        where.append("seq < ?")
        params.append(before_seq)
        clause = " WHERE " + " AND ".join(where)
    skip = 0 if before_seq is not None else offset
    rows = _all(
        txn, f"{_SELECT}{clause} ORDER BY seq DESC LIMIT ? OFFSET ?", (*params, limit + 1, skip)
    )
    return [audit_record(row) for row in rows[:limit]], total, len(rows) > limit


def audit_rows(txn: Any) -> int:
    """How many audit records are kept."""
    found = _one(txn, "SELECT value FROM meta WHERE key = 'audit_rows'")
    return 0 if found is None else found[0]
