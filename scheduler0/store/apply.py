"""
Applying one command: the handler of each op (L{HANDLERS}), in a savepoint
inside the transaction that also advances the applied index, and the
results remembered by request id so a retry is answered, not applied again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from scheduler0.store.audit import record_audit
from scheduler0.store.checks import _job_rows, _Rejected
from scheduler0.store.cluster_handlers import (
    _assign_jobs,
    _commit_executions,
    _record_progress,
    _remove_member,
    _set_eligible,
    _set_entry_version,
    _set_members,
)
from scheduler0.store.commands import Command, Op, Result, canonical_json, error, ok
from scheduler0.store.handlers import (
    _archive_credential,
    _bulk_jobs,
    _create_credential,
    _create_jobs,
    _create_project,
    _delete_job,
    _delete_project,
    _reseal_signing_secrets,
    _rotate_signing_secret,
    _update_job,
    _update_project,
    _upgrade_credential_hash,
)
from scheduler0.store.rows import _JOBS, _all, _chunks, _job, _one_known
from scheduler0.versions import unknown_op

# How many log indexes a request id is remembered for: a retry of the same
# request inside that span gets the first result instead of applying twice.
REQUEST_MEMORY = 100_000


HANDLERS: dict[str, Callable[[Any, Mapping], Any]] = {
    Op.CREATE_PROJECT: _create_project,
    Op.UPDATE_PROJECT: _update_project,
    Op.DELETE_PROJECT: _delete_project,
    Op.CREATE_JOBS: _create_jobs,
    Op.UPDATE_JOB: _update_job,
    Op.DELETE_JOB: _delete_job,
    Op.CREATE_CREDENTIAL: _create_credential,
    Op.ARCHIVE_CREDENTIAL: _archive_credential,
    Op.UPGRADE_CREDENTIAL_HASH: _upgrade_credential_hash,
    Op.ROTATE_SIGNING_SECRET: _rotate_signing_secret,
    Op.RESEAL_SIGNING_SECRETS: _reseal_signing_secrets,
    Op.SET_MEMBERS: _set_members,
    Op.REMOVE_MEMBER: _remove_member,
    Op.SET_ELIGIBLE: _set_eligible,
    Op.ASSIGN_JOBS: _assign_jobs,
    Op.COMMIT_EXECUTIONS: _commit_executions,
    Op.RECORD_PROGRESS: _record_progress,
    Op.SET_ENTRY_VERSION: _set_entry_version,
    Op.BULK_JOBS: _bulk_jobs,
}
# Handlers that are also given the entry's log index.
_GIVEN_INDEX = frozenset((Op.CREATE_JOBS, Op.ASSIGN_JOBS, Op.RECORD_PROGRESS, Op.SET_ENTRY_VERSION))


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
    if command.audit is not None:
        record_audit(txn, index, command, result)
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


def entry_version_after(command: Command, result: Result) -> int | None:
    """
    The entry version the cluster writes once C{command} applied with
    C{result}, when it changed it (None: it did not).
    """
    if command.op == Op.SET_ENTRY_VERSION and result.ok and not result.duplicate:
        return int(result.value["entry_version"])
    return None


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
        # Written by a newer release: applying nothing here would leave this
        # node's state apart from the others'. The transaction rolls back
        # (the applied index stays) and the node stops (scheduler0.versions).
        raise unknown_op(command.op)
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
