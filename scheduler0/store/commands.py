"""
Commands: the semantic operations that change replicated state.

A command carries every id and timestamp it needs, fixed by the proposer, so
applying it is a pure function of the command and the current rows. Its bytes
are canonical JSON so every node logs and hashes the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from enum import StrEnum
from typing import Any

import attrs
from twisted.logger import Logger

from scheduler0.versions import ENTRY_VERSION, FIRST_ENTRY_VERSION, UnsupportedVersion

_log = Logger()

#: What a subscriber is called with after each apply: the command and its result.
Subscriber = Callable[["Command", "Result"], None]


class Op(StrEnum):
    """
    The operations the state machine applies (one handler each in
    L{scheduler0.store.apply.HANDLERS}), and L{STATE_RESTORED}. A member
    is its name as text, so it equals the C{op} of a decoded L{Command}.
    """

    CREATE_PROJECT = "create_project"
    UPDATE_PROJECT = "update_project"
    DELETE_PROJECT = "delete_project"
    CREATE_JOBS = "create_jobs"
    UPDATE_JOB = "update_job"
    DELETE_JOB = "delete_job"
    CREATE_CREDENTIAL = "create_credential"
    ARCHIVE_CREDENTIAL = "archive_credential"
    #: Replace a credential's stored secret hash (a pbkdf2 one by its keyed
    #: hash) if it is still the one the proposer saw.
    UPGRADE_CREDENTIAL_HASH = "upgrade_credential_hash"
    ROTATE_SIGNING_SECRET = "rotate_signing_secret"
    RESEAL_SIGNING_SECRETS = "reseal_signing_secrets"
    SET_MEMBERS = "set_members"
    REMOVE_MEMBER = "remove_member"
    SET_ELIGIBLE = "set_eligible"
    ASSIGN_JOBS = "assign_jobs"
    COMMIT_EXECUTIONS = "commit_executions"
    RECORD_PROGRESS = "record_progress"
    #: Raise the entry version the cluster writes (L{scheduler0.versions}):
    #: itself of that version, proposed by the leader once every member reads it.
    SET_ENTRY_VERSION = "set_entry_version"
    #: Issue 19 (entry version 2): pause, resume or delete the jobs a label
    #: selector selects, resolved when applied. A subscriber that does not
    #: name it hears the update_job or delete_job of each job it changed.
    BULK_JOBS = "bulk_jobs"
    #: Not in the log: what subscribers hear after a snapshot replaced the
    #: whole state (every row may have changed).
    STATE_RESTORED = "state_restored"


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys and no spaces: the same value gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@attrs.frozen
class Command:
    """
    One replicated operation, C{op} applied with C{args}. C{version} is the
    entry format it needs (L{scheduler0.versions}): 1 is written without a
    C{"v"}, as the releases before versioning wrote every command.
    C{audit}: who asked for a user's write, for the audit log
    (L{scheduler0.store.audit}); it travels as C{"audit"} in commands of
    entry version 2 and later only, and is absent from every other command.
    """

    op: str
    args: Mapping[str, Any]
    request_id: str | None = None
    version: int = FIRST_ENTRY_VERSION
    audit: Mapping[str, Any] | None = None

    def to_bytes(self) -> bytes:
        """The canonical JSON encoding of this command."""
        encoded: dict[str, Any] = {"op": self.op, "args": self.args, "request_id": self.request_id}
        if self.version != FIRST_ENTRY_VERSION:
            encoded["v"] = self.version
        if self.audit is not None:
            encoded["audit"] = self.audit
        return canonical_json(encoded).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Command:
        """
        Decode L{to_bytes} output; C{ValueError} names what is wrong otherwise,
        L{UnsupportedVersion} a command of a newer entry version than this
        release reads.
        """
        try:
            decoded = json.loads(
                raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
            )
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"command is not valid JSON: {e}") from e
        if not isinstance(decoded, dict):
            raise ValueError("command must be a JSON object")
        op = decoded.get("op")
        if not isinstance(op, str):
            raise ValueError("command field 'op' must be a string")
        args = decoded.get("args")
        if not isinstance(args, dict):
            raise ValueError("command field 'args' must be an object")
        request_id = decoded.get("request_id")
        if request_id is not None and not isinstance(request_id, str):
            raise ValueError("command field 'request_id' must be a string or null")
        version = decoded.get("v", FIRST_ENTRY_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("command field 'v' must be a positive integer")
        if version > ENTRY_VERSION:
            raise UnsupportedVersion(
                f"a command ({op}) of entry version {version}: this release reads entry"
                f" versions up to {ENTRY_VERSION}; it needs a release that writes version {version}"
            )
        audit = decoded.get("audit")
        if audit is not None and not isinstance(audit, dict):
            raise ValueError("command field 'audit' must be an object")
        return cls(op, args, request_id, version, audit)


@attrs.frozen
class Result:
    """
    What applying a command gave: its C{value}, or why it was refused
    (C{code} is "conflict", "not_found" or "invalid", C{field} the argument
    at fault). C{duplicate}: the command had been applied before (the same
    log index, or a retry of the same request), so nothing changed now.
    """

    ok: bool
    value: Any = None
    code: str | None = None
    message: str | None = None
    field: str | None = None
    duplicate: bool = False

    @classmethod
    def success(cls, value: Any) -> Result:
        """A command applied, giving C{value}."""
        return cls(True, value)

    @classmethod
    def failure(cls, code: str, message: str, field: str | None = None) -> Result:
        """A command refused, changing nothing."""
        return cls(False, code=code, message=message, field=field)

    def to_json(self) -> dict[str, Any]:
        """
        The JSON object of this result, as forwarded between peers and kept
        for retries: C{{"ok": true, "value": ...}} or C{{"ok": false, "code":
        ..., "message": ..., "field": ...}}, with C{"duplicate": true} if so.
        """
        encoded: dict[str, Any]
        if self.ok:
            encoded = {"ok": True, "value": self.value}
        else:
            encoded = {"ok": False, "code": self.code, "message": self.message, "field": self.field}
        if self.duplicate:
            encoded["duplicate"] = True
        return encoded

    @classmethod
    def from_json(cls, encoded: Mapping[str, Any]) -> Result:
        """The result of a L{to_json} object (of this release or an earlier one)."""
        duplicate = bool(encoded.get("duplicate", False))
        if encoded.get("ok"):
            return cls(True, encoded.get("value"), duplicate=duplicate)
        return cls(
            False,
            code=encoded.get("code"),
            message=encoded.get("message"),
            field=encoded.get("field"),
            duplicate=duplicate,
        )


def ok(value: Any) -> Result:
    """A successful apply result."""
    return Result.success(value)


def error(code: str, message: str, field: str | None = None) -> Result:
    """A rejected command: C{code} is "conflict", "not_found" or "invalid"."""
    return Result.failure(code, message, field)


@attrs.define
class Subscribers:
    """
    Who hears the commands a proposer applies: each subscriber names the ops
    it wants (or None: every op), and is called, in the order subscribed,
    with C{(command, result)} after each apply of one of them. A subscriber
    that raises is logged; the others are still told.
    """

    _entries: list[tuple[Subscriber, frozenset[str] | None]] = attrs.field(factory=list)

    def add(self, fn: Subscriber, ops: Collection[str] | None = None) -> None:
        self._entries.append((fn, None if ops is None else frozenset(ops)))

    def tell(self, command: Command, result: Result) -> None:
        if command.op == Op.BULK_JOBS:
            self._tell_bulk(command, result)
            return
        op = command.op
        for fn, ops in list(self._entries):
            if ops is not None and op not in ops:
                continue
            try:
                fn(command, result)
            except Exception:
                _log.failure("a subscriber failed on {op}", op=op)

    def _tell_bulk(self, command: Command, result: Result) -> None:
        """
        A bulk_jobs to the subscribers that name it; to the others, the
        update_job or delete_job of each job it changed (L{bulk_effects}).
        """
        effects: list[tuple[Command, Result]] | None = None
        for fn, ops in list(self._entries):
            if ops is not None and Op.BULK_JOBS in ops:
                told = [(command, result)]
            else:
                if effects is None:
                    effects = bulk_effects(command, result)
                told = [
                    (effect, outcome)
                    for effect, outcome in effects
                    if ops is None or effect.op in ops
                ]
            for each, outcome in told:
                try:
                    fn(each, outcome)
                except Exception:
                    _log.failure("a subscriber failed on {op}", op=each.op)


def bulk_effects(command: Command, result: Result) -> list[tuple[Command, Result]]:
    """
    What an applied bulk_jobs did, job by job: the update_job (with the job
    as changed) or delete_job command and result each job would have had.
    """
    if not result.ok or not isinstance(result.value, Mapping):
        return []
    value = result.value
    if value.get("action") == "delete":
        return [
            (Command(Op.DELETE_JOB, {"uuid": uuid}), ok({"uuid": uuid}))
            for uuid in value.get("uuids") or ()
        ]
    at = command.args.get("at")
    return [
        (
            Command(
                Op.UPDATE_JOB,
                {"uuid": job["uuid"], "changes": {"paused": job["paused"]}, "updated_at": at},
            ),
            ok(job),
        )
        for job in value.get("jobs") or ()
    ]
