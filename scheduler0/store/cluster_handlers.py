"""
The state machine's handlers for the cluster: its members, which node owns
each job, the progress each node reports, and committed execution history.
Each is C{(txn, args) -> value} (some also given the log index), or raises
L{_Rejected}.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from scheduler0.store.checks import (
    _INT64,
    _bindable,
    _instant_arg,
    _integer,
    _invalid,
    _list,
    _Rejected,
    _text,
)
from scheduler0.store.commands import error
from scheduler0.store.executions import (
    EXECUTION_COLUMNS,
    FAILURE_RETENTION,
    prune_history,
)
from scheduler0.store.handlers import _add_loads
from scheduler0.store.rows import (
    _all,
    _all_members,
    _chunks,
    _member,
    _one,
    _one_known,
    _progress_reports,
)
from scheduler0.timeutil import format_instant, parse_instant
from scheduler0.values import execution_row, plain_execution_row
from scheduler0.versions import ENTRY_VERSION, FIRST_ENTRY_VERSION


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


def _set_entry_version(txn: Any, args: Mapping, index: int = 0) -> Any:
    """
    Raise the entry version the cluster writes to C{version} (the leader
    proposes it once every member reads it; L{scheduler0.versions}). It
    never goes down: a lower one changes nothing. The value is the entry
    version now. The log index is kept: the leader of a new cluster, whose
    files started at this release's version, logs it once, so that a member
    that joins later and replays the log learns it too.
    """
    version = _integer(args, "version", FIRST_ENTRY_VERSION)
    if version > ENTRY_VERSION:
        # Not reached: such a command is of that entry version, refused
        # before it gets here (Command.from_bytes).
        raise _invalid("version", f"version must be at most {ENTRY_VERSION}")
    txn.execute(
        "INSERT INTO meta (key, value) VALUES ('entry_version', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        (version,),
    )
    txn.execute(
        "INSERT INTO meta (key, value) VALUES ('entry_version_index', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (index,),
    )
    now = _one_known(txn, "SELECT value FROM meta WHERE key = 'entry_version'")[0]
    return {"entry_version": now}
