"""
The checks of a command's arguments, and of a proposed job's fields, made
while applying it: each refuses with L{_Rejected} naming the field at fault,
so the state machine answers every node the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler0.model import JOB_COLUMNS
from scheduler0.store.commands import Result, canonical_json, error
from scheduler0.timeutil import format_instant, parse_instant
from scheduler0.values import (
    INVALID,
    REQUIRED,
    RETRY_DELAYS,
    STORED_JOB_CHECKS,
    UNKNOWN,
    FieldProblem,
    Invalid,
    JobError,
    invalid_field,
    job_row,
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


def _job_problem(problem: FieldProblem, cleaned: Mapping[str, Any]) -> _Rejected:
    """
    The state machine's words for a proposed job's problem (C{cleaned}: the
    fields that passed, which hold the retry delays).
    """
    field = problem.field
    if problem.kind == UNKNOWN:
        return _invalid(field, f"unknown job field {field}")
    if problem.kind == REQUIRED:
        return _invalid(field, f"job field {field} is required")
    if problem.kind == RETRY_DELAYS:
        delay, max_delay = cleaned["retry_delay_s"], cleaned["retry_max_delay_s"]
        return _invalid(
            field,
            f"job field retry_max_delay_s ({max_delay:g}) must be at least retry_delay_s"
            f" ({delay:g})",
        )
    if field == "jobs":
        return _invalid(field, problem.detail)
    return _invalid(field, f"job field {field} {problem.detail}")


def _check_job_field(field: str, value: Any) -> Any:
    """The stored form of one job field, or L{_Rejected} naming the field."""
    try:
        value = STORED_JOB_CHECKS[field](value)
    except Invalid as problem:
        raise _job_problem(
            FieldProblem(invalid_field(field, problem), INVALID, str(problem)), {}
        ) from None
    return canonical_json(value) if field in _JSON_FIELDS else value


# The job fields stored as JSON text.
_JSON_FIELDS = frozenset(("data", "labels"))


def _check_retry_delays(delay: float, max_delay: float) -> None:
    """The longest wait between attempts cannot be shorter than the first one."""
    if max_delay < delay:
        delays = {"retry_delay_s": delay, "retry_max_delay_s": max_delay}
        raise _job_problem(FieldProblem("retry_max_delay_s", RETRY_DELAYS), delays)


_DATA = JOB_COLUMNS.index("data")
_LABELS = JOB_COLUMNS.index("labels")
_NO_LABELS_TEXT = "{}"


def _job_rows(jobs: list) -> list[tuple]:
    """
    The rows of proposed jobs in L{JOB_COLUMNS} order (L{job_row}, with
    C{data} as JSON text), or L{_Rejected} naming the first job's fault.
    """
    rows = []
    try:
        for job in jobs:
            values = job_row(job)
            data = values[_DATA]
            text = "null" if data is None else canonical_json(data)
            labels = values[_LABELS]
            labels_text = canonical_json(labels) if labels else _NO_LABELS_TEXT
            rows.append(
                (
                    *values[:_DATA],
                    text,
                    *values[_DATA + 1 : _LABELS],
                    labels_text,
                    *values[_LABELS + 1 :],
                )
            )
    except JobError as refused:
        raise _job_problem(refused.problem, refused.cleaned) from None
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
