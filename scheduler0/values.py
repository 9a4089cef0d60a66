"""
A job and an execution record as values, and the one check of each.

L{check_fields} is the loop every layer runs over a job (or project) body:
unknown, read-only and missing fields and each field's own check, giving
L{FieldProblem}s that each layer words as it always has (the API as a 400's
fields, the state machine as an C{invalid} result, in L{scheduler0.store.checks}).
What a field may hold is two rule sets over the same fields: what a client
may ask for (the API's, with lengths, ranges and the schedule's syntax, in
L{scheduler0.api.validation}) and what a stored job must be
(L{STORED_JOB_CHECKS}, here).

L{job_row} and L{execution_row} check a whole proposed job or execution
record the way the state machine does, fast enough for the thousands one
command carries; L{Job} and L{Execution} are the values they describe.
Base layer: imports only L{scheduler0.model} and L{scheduler0.timeutil}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from scheduler0.labels import LabelError, check_labels
from scheduler0.model import (
    CONCURRENCY_POLICIES,
    EXECUTION_COLUMNS,
    EXECUTION_STATES,
    JOB_COLUMNS,
    JOB_DEFAULTS,
)
from scheduler0.timeutil import format_instant, parse_instant, utc_from_timestamp


class Invalid(ValueError):
    """
    One input value is wrong; the message says how (without the field name).
    C{subfield}, when given, names the part of the value at fault (the key
    of one of a job's labels), so the field named is C{field.subfield}.
    """

    def __init__(self, message: str = "", subfield: str | None = None) -> None:
        super().__init__(message)
        self.subfield = subfield


def invalid_field(field: str, problem: Invalid) -> str:
    """The field an L{Invalid} of C{field}'s check is about (C{labels.team})."""
    return field if problem.subfield is None else f"{field}.{problem.subfield}"


#: The kinds of L{FieldProblem}.
UNKNOWN = "unknown"
READ_ONLY = "read_only"
REQUIRED = "required"
INVALID = "invalid"
RETRY_DELAYS = "retry_delays"


@attrs.frozen
class FieldProblem:
    """
    What is wrong with one field of a body: its C{kind} (L{UNKNOWN},
    L{READ_ONLY}, L{REQUIRED}, L{INVALID}, L{RETRY_DELAYS}) and, for an
    invalid value, the check's own sentence (C{detail}).
    """

    field: str
    kind: str
    detail: str = ""


Check = Callable[[object], Any]

# What a client may write: the stored job's columns but for identity,
# bookkeeping and the anchor (which the API derives).
JOB_WRITABLE_FIELDS = tuple(
    column
    for column in JOB_COLUMNS
    if column not in ("uuid", "created_at", "updated_at", "anchor_at")
)
#: The fields a new job must be given (the rest have L{JOB_DEFAULTS}).
JOB_REQUIRED_FIELDS = ("project_uuid", "name", "spec", "callback_url")
#: The fields a job is answered with that a client cannot set.
JOB_READ_ONLY_FIELDS = (
    "uuid",
    "created_at",
    "updated_at",
    "anchor_at",
    "next_run_at",
    "last_run_at",
    "last_status",
)
#: The fields a proposer gives every new job, besides the required ones.
JOB_IDENTITY_FIELDS = ("uuid", "created_at", "updated_at")


def check_fields(
    body: Mapping[str, Any],
    *,
    checks: Mapping[str, Check],
    read_only: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
    first_only: bool = False,
) -> tuple[dict[str, Any], list[FieldProblem]]:
    """
    Check every key of C{body} against C{checks}: the cleaned values of the
    fields that passed, and the problems in the body's order (then the
    missing C{required} fields, in their order); with C{first_only}, up to
    the first problem.
    """
    cleaned: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for key, value in body.items():
        if key in read_only:
            problems.append(FieldProblem(key, READ_ONLY))
        elif key not in checks:
            problems.append(FieldProblem(key, UNKNOWN))
        else:
            try:
                cleaned[key] = checks[key](value)
            except Invalid as problem:
                problems.append(FieldProblem(invalid_field(key, problem), INVALID, str(problem)))
        if problems and first_only:
            return cleaned, problems
    for key in required:
        if key not in body:
            problems.append(FieldProblem(key, REQUIRED))
    return cleaned, problems


def check_job_fields(
    body: Mapping[str, Any],
    *,
    checks: Mapping[str, Check],
    partial: bool,
    read_only: tuple[str, ...] = (),
    required: tuple[str, ...] = JOB_REQUIRED_FIELDS,
    first_only: bool = False,
) -> tuple[dict[str, Any], list[FieldProblem]]:
    """
    L{check_fields} for a job (all C{required} fields unless C{partial}),
    plus a C{retry_max_delay_s} below a C{retry_delay_s} given with it
    (L{RETRY_DELAYS}, after the others).
    """
    cleaned, problems = check_fields(
        body,
        checks=checks,
        read_only=read_only,
        required=() if partial else required,
        first_only=first_only,
    )
    if problems and first_only:
        return cleaned, problems
    if "retry_delay_s" in cleaned and "retry_max_delay_s" in cleaned:
        if cleaned["retry_max_delay_s"] < cleaned["retry_delay_s"]:
            problems.append(FieldProblem("retry_max_delay_s", RETRY_DELAYS))
    return cleaned, problems


# -- what a stored job is ----------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string")
    return value


def _json(value: object) -> Any:
    """A value JSON can carry (else JSON's own TypeError or ValueError, not L{Invalid})."""
    json.dumps(value, sort_keys=True)
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be a boolean")
    return value


def _non_negative(value: object) -> float:
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise Invalid("must be a non-negative number")
    return float(value)  # type: ignore[arg-type]


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Invalid("must be a non-negative integer")
    return value


def _delay(value: object) -> float:
    if not _is_number(value) or not 0 <= value < float("inf"):  # type: ignore[operator]
        raise Invalid("must be a non-negative number")
    return float(value)  # type: ignore[arg-type]


def _policy(value: object) -> str:
    if not isinstance(value, str) or value not in CONCURRENCY_POLICIES:
        raise Invalid(f"must be one of {', '.join(CONCURRENCY_POLICIES)}")
    return value


def labels_check(value: object) -> dict[str, str]:
    """A job's labels (L{scheduler0.labels.check_labels}), as a field check words them."""
    try:
        return check_labels(value)
    except LabelError as problem:
        raise Invalid(str(problem), problem.key) from None


#: What each field of a stored job must be (the state machine's rules).
STORED_JOB_CHECKS: dict[str, Check] = {
    "uuid": _text,
    "project_uuid": _text,
    "name": _text,
    "spec": _text,
    "callback_url": _text,
    "data": _json,
    "timezone": _text,
    "execution_type": _text,
    "paused": _flag,
    "catch_up_window_s": _non_negative,
    "timeout_s": _non_negative,
    "retry_max": _count,
    "retry_delay_s": _delay,
    "retry_max_delay_s": _delay,
    "concurrency_policy": _policy,
    "coalesce": _flag,
    "created_at": _text,
    "updated_at": _text,
    "anchor_at": _text,
    "labels": labels_check,
}


class JobError(ValueError):
    """
    A proposed job is not a job: C{problem} says which field and how;
    C{cleaned} holds the fields that passed (a layer words the retry
    delays' problem with them).
    """

    def __init__(self, problem: FieldProblem, cleaned: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{problem.field}: {problem.kind} {problem.detail}".strip())
        self.problem = problem
        self.cleaned: Mapping[str, Any] = {} if cleaned is None else cleaned


_JOB_KEYS = frozenset(JOB_COLUMNS)
_NUMBER_TYPES = (int, float)
_POLICY_SET = frozenset(CONCURRENCY_POLICIES)
_INFINITY = float("inf")
_D = JOB_DEFAULTS
# (Read once per field of every job: as names, not lookups.)
_DEFAULT_TIMEZONE = JOB_DEFAULTS["timezone"]
_DEFAULT_EXECUTION_TYPE = JOB_DEFAULTS["execution_type"]
_DEFAULT_PAUSED = JOB_DEFAULTS["paused"]
_DEFAULT_CATCH_UP_WINDOW_S = JOB_DEFAULTS["catch_up_window_s"]
_DEFAULT_TIMEOUT_S = JOB_DEFAULTS["timeout_s"]
_DEFAULT_RETRY_MAX = JOB_DEFAULTS["retry_max"]
_DEFAULT_RETRY_DELAY_S = JOB_DEFAULTS["retry_delay_s"]
_DEFAULT_RETRY_MAX_DELAY_S = JOB_DEFAULTS["retry_max_delay_s"]
_DEFAULT_CONCURRENCY_POLICY = JOB_DEFAULTS["concurrency_policy"]
_DEFAULT_COALESCE = JOB_DEFAULTS["coalesce"]


@attrs.define(frozen=True, slots=True, kw_only=True)
class Job:
    """
    One job as the state machine stores it: its fields are L{JOB_COLUMNS},
    the optional ones defaulting to L{JOB_DEFAULTS}; C{anchor_at} (the
    instant its schedule counts from) defaults to C{created_at}.
    """

    uuid: str
    project_uuid: str
    name: str
    spec: str
    callback_url: str
    data: Any = _D["data"]
    timezone: str = _D["timezone"]
    execution_type: str = _D["execution_type"]
    paused: bool = _D["paused"]
    catch_up_window_s: float = _D["catch_up_window_s"]
    timeout_s: float = _D["timeout_s"]
    retry_max: int = _D["retry_max"]
    retry_delay_s: float = _D["retry_delay_s"]
    retry_max_delay_s: float = _D["retry_max_delay_s"]
    concurrency_policy: str = _D["concurrency_policy"]
    coalesce: bool = _D["coalesce"]
    created_at: str
    updated_at: str
    anchor_at: str
    labels: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_mapping(cls, job: Any) -> Job:
        """The job a proposed mapping describes (L{job_row}'s checks and errors)."""
        return cls(**dict(zip(JOB_COLUMNS, job_row(job), strict=True)))

    def as_dict(self) -> dict[str, Any]:
        """The job as the dict reads return."""
        return {column: getattr(self, column) for column in JOB_COLUMNS}


def job_row(job: Any) -> tuple:
    """
    The fields of the job a proposed mapping describes, in L{JOB_COLUMNS}
    order, or L{JobError} naming the first field at fault (an unknown one
    first, then in column order). Creating a million jobs runs this once
    per job, so the usual case (every field of its plain type) is checked
    directly, and only a job that fails that is checked field by field.
    """
    if type(job) is not dict or not _JOB_KEYS.issuperset(job):
        return _checked_job_row(job)
    get = job.get
    uuid = get("uuid")
    project_uuid = get("project_uuid")
    name = get("name")
    spec = get("spec")
    callback_url = get("callback_url")
    timezone = get("timezone", _DEFAULT_TIMEZONE)
    execution_type = get("execution_type", _DEFAULT_EXECUTION_TYPE)
    created_at = get("created_at")
    updated_at = get("updated_at")
    anchor = get("anchor_at")
    paused = get("paused", _DEFAULT_PAUSED)
    window = get("catch_up_window_s", _DEFAULT_CATCH_UP_WINDOW_S)
    timeout = get("timeout_s", _DEFAULT_TIMEOUT_S)
    retry_max = get("retry_max", _DEFAULT_RETRY_MAX)
    retry_delay = get("retry_delay_s", _DEFAULT_RETRY_DELAY_S)
    retry_max_delay = get("retry_max_delay_s", _DEFAULT_RETRY_MAX_DELAY_S)
    policy = get("concurrency_policy", _DEFAULT_CONCURRENCY_POLICY)
    coalesce = get("coalesce", _DEFAULT_COALESCE)
    labels = get("labels")
    if labels is None:
        labels = _NO_LABELS
    elif type(labels) is not dict or (labels and not _good_labels(labels)):
        return _checked_job_row(job)
    if (
        type(uuid) is not str
        or type(project_uuid) is not str
        or type(name) is not str
        or type(spec) is not str
        or type(callback_url) is not str
        or type(timezone) is not str
        or type(execution_type) is not str
        or type(created_at) is not str
        or type(updated_at) is not str
        or (anchor is not None and type(anchor) is not str)
        or type(paused) is not bool
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
        # (Also refuses NaN and infinity, which the field checks name.)
        or not 0 <= retry_delay <= retry_max_delay < _INFINITY
    ):
        return _checked_job_row(job)
    return (
        uuid,
        project_uuid,
        name,
        spec,
        callback_url,
        get("data"),
        timezone,
        execution_type,
        paused,
        float(window),
        float(timeout),
        retry_max,
        float(retry_delay),
        float(retry_max_delay),
        policy,
        coalesce,
        created_at,
        updated_at,
        created_at if anchor is None else anchor,
        labels,
    )


_NO_LABELS: dict[str, str] = {}


def _good_labels(labels: dict) -> bool:
    """Whether a job's labels pass L{check_labels} (without wording why not)."""
    try:
        check_labels(labels)
    except LabelError:
        return False
    return True


def _checked_job_row(job: Any) -> tuple:
    """L{job_row} field by field, naming the first problem."""
    if not isinstance(job, Mapping):
        raise JobError(FieldProblem("jobs", INVALID, "each job must be an object"))
    unknown = sorted(set(job) - _JOB_KEYS)
    if unknown:
        raise JobError(FieldProblem(unknown[0], UNKNOWN))
    # In column order, as the state machine checks them, up to a missing
    # required field.
    body: dict[str, Any] = {}
    missing: FieldProblem | None = None
    for column in JOB_COLUMNS:
        if column in JOB_IDENTITY_FIELDS:
            body[column] = job.get(column)
        elif column == "anchor_at":
            anchor = job.get("anchor_at")
            body[column] = job.get("created_at") if anchor is None else anchor
        elif column in job:
            body[column] = job[column]
        elif column in JOB_DEFAULTS:
            body[column] = JOB_DEFAULTS[column]
        else:
            missing = FieldProblem(column, REQUIRED)
            break
    cleaned, problems = check_job_fields(
        body, checks=STORED_JOB_CHECKS, partial=True, first_only=True
    )
    if problems:
        raise JobError(problems[0], cleaned)
    if missing is not None:
        raise JobError(missing, cleaned)
    return tuple(cleaned[column] for column in JOB_COLUMNS)


# -- what an execution record is ----------------------------------------------


@attrs.define(frozen=True, slots=True, kw_only=True)
class Execution:
    """
    One execution record: a slot of a job (C{scheduled_at}) and how it went.
    Its fields are L{EXECUTION_COLUMNS}; C{state} is one of
    L{EXECUTION_STATES}, and the instants are L{format_instant} text.
    """

    execution_id: str
    job_uuid: str
    project_uuid: str | None = None
    scheduled_at: str
    state: str = "scheduled"
    attempts: int = 0
    node_id: int | str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    status_code: int | str | None = None
    error: str | None = None
    skip_reason: str | None = None
    response_body: str | None = None

    @classmethod
    def from_mapping(cls, execution: Any) -> Execution:
        """The record a mapping describes (L{execution_row}'s checks and errors)."""
        return cls(**dict(zip(EXECUTION_COLUMNS, execution_row(execution), strict=True)))

    def as_dict(self) -> dict[str, Any]:
        """The record as the dict reads return."""
        return {column: getattr(self, column) for column in EXECUTION_COLUMNS}


_CANONICAL = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z"
)
_TIME_FIELDS = ("scheduled_at", "started_at", "finished_at")


def instant_text(field: str, value: Any) -> str | None:
    """Normalise a time to the C{format_instant} text; floats are POSIX seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_instant(utc_from_timestamp(value))
    if isinstance(value, str):
        if _CANONICAL.fullmatch(value):
            # Already in the one textual form (the scheduler writes these):
            # no need to parse and re-format, which costs more than the row.
            return value
        try:
            return format_instant(parse_instant(value))
        except ValueError as e:
            raise ValueError(f"execution field {field}: {e}") from e
    raise ValueError(f"execution field {field} must be an instant string or None")


def execution_row(execution: Mapping) -> tuple:
    """Validate one execution record and return its row in column order."""
    if not isinstance(execution, Mapping):
        raise ValueError("an execution record must be a mapping")
    unknown = sorted(set(execution) - set(EXECUTION_COLUMNS))
    if unknown:
        raise ValueError(f"unknown execution field {unknown[0]}")
    for field in ("execution_id", "job_uuid"):
        if not isinstance(execution.get(field), str):
            raise ValueError(f"execution field {field} must be a string")
    if execution.get("scheduled_at") is None:
        raise ValueError("execution field scheduled_at is required")
    state = execution.get("state", "scheduled")
    if state not in EXECUTION_STATES:
        raise ValueError(f"execution field state must be one of {', '.join(EXECUTION_STATES)}")
    values = {column: execution.get(column) for column in EXECUTION_COLUMNS}
    values["state"] = state
    values["attempts"] = int(execution.get("attempts") or 0)
    for field in _TIME_FIELDS:
        values[field] = instant_text(field, values[field])
    return tuple(values[column] for column in EXECUTION_COLUMNS)


_COLUMN_SET = frozenset(EXECUTION_COLUMNS)
_STATE_SET = frozenset(EXECUTION_STATES)
_INT64 = range(-(2**63), 2**63)
_canonical = _CANONICAL.fullmatch


def plain_execution_row(execution: Any) -> tuple | None:
    """
    The row of a record whose fields all have their plain types and whose
    times are canonical (as nodes send them), or None for anything else
    (L{execution_row} then says what is wrong). The leader commits thousands
    of records per command, so this checks types directly.
    """
    if type(execution) is not dict or not _COLUMN_SET.issuperset(execution):
        return None
    get = execution.get
    execution_id, job_uuid, scheduled_at = get("execution_id"), get("job_uuid"), get("scheduled_at")
    if (
        type(execution_id) is not str
        or type(job_uuid) is not str
        or type(scheduled_at) is not str
        or not _canonical(scheduled_at)
    ):
        return None
    state = get("state", "scheduled")
    attempts = get("attempts") or 0
    if state not in _STATE_SET or type(attempts) is not int or attempts not in _INT64:
        return None
    started_at, finished_at = get("started_at"), get("finished_at")
    for instant in (started_at, finished_at):
        if instant is not None and (type(instant) is not str or not _canonical(instant)):
            return None
    project_uuid, node_id, status_code = get("project_uuid"), get("node_id"), get("status_code")
    error, skip_reason = get("error"), get("skip_reason")
    response_body = get("response_body")
    for value in (project_uuid, node_id, status_code, error, skip_reason, response_body):
        if (
            value is not None
            and type(value) is not str
            and (type(value) is not int or value not in _INT64)
        ):
            return None
    return (
        execution_id,
        job_uuid,
        project_uuid,
        scheduled_at,
        state,
        attempts,
        node_id,
        started_at,
        finished_at,
        status_code,
        error,
        skip_reason,
        response_body,
    )
