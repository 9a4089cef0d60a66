"""
The checks of a command's arguments, and of a proposed job's fields, made
while applying it: each refuses with L{_Rejected} naming the field at fault,
so the state machine answers every node the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler0.model import CONCURRENCY_POLICIES, JOB_COLUMNS, JOB_DEFAULTS
from scheduler0.store.commands import Result, canonical_json, error
from scheduler0.timeutil import format_instant, parse_instant

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
    """A command is refused; carries the result. Never leaves the state machine."""

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
