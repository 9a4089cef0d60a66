"""
Structured logs: the node's events as JSON lines, one event per execution
and per leadership change, and no secret in either format.

Every part of the node logs through C{twisted.logger} with named fields
(C{log.info("... {job_uuid}", job_uuid=...)}). The text format (twistd's
own) shows the formatted message; C{--log-format json} writes each event as
one JSON object per line holding the message and every field, so a log
pipeline can filter on C{job_uuid} or C{event} without parsing sentences.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import IO, Any

import attrs
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from zope.interface import implementer

from scheduler0.timeutil import format_instant, utc_from_timestamp

LOG_FORMATS = ("text", "json")

REDACTED = "[redacted]"

# A field whose name holds one of these is never written as it is, in
# either format: the events that carry credentials by mistake stay safe.
_SECRET_WORDS = ("secret", "password", "passwd", "authorization", "private_key", "cookie")

# Keys of legacy (twisted.python.log) events that the message already says.
_LEGACY_KEYS = frozenset({"message", "time", "isError", "format", "why", "failure"})

_LEVEL_ORDER = {
    LogLevel.debug: 0,
    LogLevel.info: 1,
    LogLevel.warn: 2,
    LogLevel.error: 3,
    LogLevel.critical: 4,
}
_LEVEL_NAMES = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARN": LogLevel.warn,
    "ERROR": LogLevel.error,
}


def level_named(name: str) -> LogLevel:
    """The L{LogLevel} of a C{LogLevel} config value (INFO when unknown)."""
    return _LEVEL_NAMES.get(name.upper(), LogLevel.info)


def is_secret_field(name: str) -> bool:
    """Whether a field called C{name} may hold a credential."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redacted(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of C{event} with every secret-named field replaced."""
    return {
        key: (REDACTED if is_secret_field(key) and value is not None else value)
        for key, value in event.items()
    }


def _plain(value: Any) -> Any:
    """C{value} as JSON can hold it: containers kept, anything else as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if is_secret_field(str(k)) else _plain(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


def event_as_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """
    The JSON object one event is written as: C{time} (UTC, RFC 3339),
    C{level}, C{namespace}, C{message} (as the text format shows it), the
    traceback as C{failure} when the event has one, then the event's own
    fields. Twisted's bookkeeping keys (C{log_*}) are left out.
    """
    clean = redacted(event)
    when = clean.get("log_time")
    level = clean.get("log_level")
    out: dict[str, Any] = {
        "time": format_instant(utc_from_timestamp(when))
        if isinstance(when, (int, float))
        else None,
        "level": level.name if isinstance(level, type(LogLevel.info)) else "info",
        "namespace": clean.get("log_namespace"),
        "message": formatEvent(clean),
    }
    failure = clean.get("log_failure")
    if failure is not None:
        try:
            out["failure"] = failure.getTraceback()
        except Exception:
            out["failure"] = str(failure)
    legacy = "log_legacy" in clean
    for key, value in clean.items():
        if key.startswith("log_") or key in out or (legacy and key in _LEGACY_KEYS):
            continue
        out[key] = _plain(value)
    return out


@implementer(ILogObserver)
@attrs.define(eq=False)
class JSONLinesObserver:
    """Writes each event to C{out} as one line of JSON (C{--log-format json})."""

    out: IO[str]

    def __call__(self, event: Mapping[str, Any]) -> None:
        try:
            line = json.dumps(event_as_json(event), ensure_ascii=False, separators=(",", ":"))
        except Exception as e:  # an event that cannot be shown must not stop logging
            line = json.dumps({"level": "error", "message": f"unloggable event: {e!r}"})
        self.out.write(line + "\n")
        self.out.flush()


def twistd_log_destination(server_options: Mapping[str, Any]) -> IO[str]:
    """
    Where twistd would write its own log for these options: standard output
    when it runs in the foreground without C{--logfile} (or with
    C{--logfile=-}), else the named file (C{twistd.log} by default).
    """
    from twisted.python.logfile import LogFile

    name = server_options.get("logfile") or ""
    if name == "-" or (server_options.get("nodaemon") and not name):
        return sys.stdout
    return LogFile.fromFullPath(name or "twistd.log")  # type: ignore[return-value]


# -- events with ids -----------------------------------------------------------

_EXECUTION_FORMAT = (
    "execution {execution_id} of job {job_uuid} (project {project_uuid}) "
    "scheduled {scheduled_at}: {state}{outcome}"
)


def _outcome_text(record: Mapping[str, Any]) -> str:
    parts = []
    if record.get("status_code") is not None:
        parts.append(f"HTTP {record['status_code']}")
    if record.get("error"):
        parts.append(str(record["error"]))
    if record.get("skip_reason"):
        parts.append(str(record["skip_reason"]))
    attempts = record.get("attempts") or 0
    if attempts:
        parts.append(f"{attempts} attempt{'s' if attempts != 1 else ''}")
    return f" ({', '.join(parts)})" if parts else ""


@attrs.define(eq=False)
class ExecutionEvents:
    """
    One log event for each execution that reached its final state:
    C{succeeded} and C{skipped} at debug, C{failed} at warn, each carrying
    the execution's ids and outcome as fields (C{event="execution"}). An
    event costs about 40 us, near the whole cost of an execution, so at the
    default level (INFO) only failures are logged one by one (what was sent
    and skipped is counted in the metrics); DEBUG logs every one.

    Hung on the scheduler's C{execution_observers}. Events under the
    configured level are not even built: at thousands of executions a
    second the filter downstream would cost more than the firing.
    """

    log: Logger = attrs.field(factory=lambda: Logger(namespace="scheduler0.executions"))
    level: LogLevel = LogLevel.info

    def __call__(self, record: Mapping[str, Any]) -> None:
        level = LogLevel.warn if record.get("state") == "failed" else LogLevel.debug
        if _LEVEL_ORDER[level] < _LEVEL_ORDER[self.level]:
            return
        self.log.emit(
            level,
            _EXECUTION_FORMAT,
            event="execution",
            execution_id=record.get("execution_id"),
            job_uuid=record.get("job_uuid"),
            project_uuid=record.get("project_uuid"),
            scheduled_at=record.get("scheduled_at"),
            state=record.get("state"),
            attempts=record.get("attempts"),
            node_id=record.get("node_id"),
            started_at=record.get("started_at"),
            finished_at=record.get("finished_at"),
            status_code=record.get("status_code"),
            error=record.get("error"),
            skip_reason=record.get("skip_reason"),
            outcome=_outcome_text(record),
        )


@attrs.define(eq=False)
class LeadershipEvents:
    """
    One log event (C{event="leadership"}) each time this node sees the
    cluster's leadership change: its own role, the term or the leader.
    """

    node_id: int
    log: Logger = attrs.field(factory=lambda: Logger(namespace="scheduler0.leadership"))
    _seen: tuple[str, int, int | None] | None = attrs.field(default=None, init=False)

    def observe(self, role: str, term: int, leader_id: int | None) -> bool:
        """Log a change from what was seen last; return whether there was one."""
        now = (role, term, leader_id)
        if now == self._seen:
            return False
        before = self._seen
        self._seen = now
        if role == "leader":
            text = "node {node_id} leads term {term}"
        elif leader_id is None:
            text = "node {node_id} is {role} in term {term}, with no leader known"
        else:
            text = "node {node_id} is {role} in term {term}; node {leader_id} leads"
        if before is not None:
            text += (
                " (before: {previous_role} in term {previous_term}, leader {previous_leader_id})"
            )
        self.log.info(
            text,
            event="leadership",
            node_id=self.node_id,
            role=role,
            term=term,
            leader_id=leader_id,
            previous_role=before[0] if before else None,
            previous_term=before[1] if before else None,
            previous_leader_id=before[2] if before else None,
        )
        return True
