"""
Checks on request bodies and query strings, before anything reaches the
state machine.

Each checker returns the cleaned value or raises L{Invalid} with a sentence
about the value; callers prefix it with the field's path (C{jobs[3].spec})
so the client is told exactly which input to fix.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from scheduler0.api.errors import FieldErrors
from scheduler0.config import MAX_RETRY_DELAY_S
from scheduler0.model import CONCURRENCY_POLICIES
from scheduler0.scheduler.spec import SpecError, make_schedule, validate_spec, validate_timezone
from scheduler0.timeutil import format_instant
from scheduler0.values import (
    JOB_READ_ONLY_FIELDS,
    READ_ONLY,
    REQUIRED,
    RETRY_DELAYS,
    UNKNOWN,
    FieldProblem,
    Invalid,
    check_fields,
    check_job_fields,
    labels_check,
)

MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 4096
MAX_URL_LENGTH = 2048
MAX_SPEC_LENGTH = 1024
MAX_CATCH_UP_WINDOW_S = 10 * 365 * 24 * 3600
MAX_TIMEOUT_S = 24 * 3600
MAX_RETRY_MAX = 1000
MAX_ID_LENGTH = 128

PROJECT_WRITABLE_FIELDS = ("name", "description", "notify_url", "paused")
PROJECT_READ_ONLY_FIELDS = ("uuid", "created_at", "updated_at")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_string(value: object, *, max_length: int, allow_blank: bool = False) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {json_type(value)}")
    if not allow_blank and not value.strip():
        raise Invalid("must not be empty")
    if len(value) > max_length:
        raise Invalid(f"must be at most {max_length} characters")
    return value


def check_name(value: object) -> str:
    return check_string(value, max_length=MAX_NAME_LENGTH)


def check_description(value: object) -> str:
    return check_string(value, max_length=MAX_DESCRIPTION_LENGTH, allow_blank=True)


def check_id(value: object) -> str:
    return check_string(value, max_length=MAX_ID_LENGTH)


def _spec_message(error: SpecError, prefix: str) -> str:
    """A SpecError's message without its own leading C{spec:}/C{timezone:}."""
    message = str(error)
    if message.startswith(prefix + ":"):
        message = message[len(prefix) + 1 :].strip()
    return message


def check_spec(value: object) -> str:
    spec = check_string(value, max_length=MAX_SPEC_LENGTH)
    try:
        validate_spec(spec)
    except SpecError as error:
        raise Invalid(_spec_message(error, "spec")) from None
    return spec


_DAWN = datetime.min.replace(tzinfo=UTC)


def at_instant(spec: str) -> datetime | None:
    """The instant of a valid C{@at} spec (None for any other kind of spec)."""
    words = spec.split(None, 1)
    if not words or words[0].lower() != "@at":
        return None
    return make_schedule(spec).next_after(_DAWN) or _DAWN


def past_at_problem(spec: str, now: datetime) -> str | None:
    """
    Why a valid C{spec} can never fire when written at C{now}: an C{@at}
    instant before it (such a job would never fire). None otherwise.
    """
    instant = at_instant(spec)
    if instant is None or instant >= now:
        return None
    return (
        f"@at {format_instant(instant)} is in the past (it is {format_instant(now)} on this "
        "node), so the job would never fire"
    )


def check_timezone(value: object) -> str:
    name = check_string(value, max_length=MAX_NAME_LENGTH)
    try:
        validate_timezone(name)
    except SpecError as error:
        raise Invalid(_spec_message(error, "timezone")) from None
    return name


# Whitespace (as str.isspace sees it) and control characters.
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")


@functools.lru_cache(maxsize=4096)
def _url_problem(url: str) -> str | None:
    """What is wrong with C{url} as a callback URL, or None (many jobs share one)."""
    if _URL_FORBIDDEN.search(url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"is not a valid URL ({error})"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an absolute http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if port == 0:
        return "must not use port 0"
    return None


def check_callback_url(value: object) -> str:
    url = check_string(value, max_length=MAX_URL_LENGTH)
    problem = _url_problem(url)
    if problem is not None:
        raise Invalid(problem)
    return url


def check_execution_type(value: object) -> str:
    if value != "http":
        raise Invalid('must be "http" (the only execution type)')
    return "http"


def check_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {json_type(value)}")
    return value


def _check_number(
    value: object, *, minimum: float, maximum: float, exclusive_minimum: bool
) -> float:
    if not _is_number(value):
        raise Invalid(f"must be a number, not {json_type(value)}")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise Invalid("must be a finite number")
    if exclusive_minimum and number <= minimum:
        raise Invalid(f"must be greater than {minimum:g}")
    if number < minimum:
        raise Invalid(f"must be at least {minimum:g}")
    if number > maximum:
        raise Invalid(f"must be at most {maximum:g}")
    return number


def check_catch_up_window(value: object) -> float:
    return _check_number(value, minimum=0, maximum=MAX_CATCH_UP_WINDOW_S, exclusive_minimum=False)


def check_timeout(value: object) -> float:
    return _check_number(value, minimum=0, maximum=MAX_TIMEOUT_S, exclusive_minimum=True)


def check_retry_max(value: object) -> int:
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema says).
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"must be an integer, not {json_type(value)}")
    if value < 0:
        raise Invalid("must be at least 0")
    if value > MAX_RETRY_MAX:
        raise Invalid(f"must be at most {MAX_RETRY_MAX}")
    return value


def check_retry_delay(value: object) -> float:
    return _check_number(value, minimum=0, maximum=MAX_RETRY_DELAY_S, exclusive_minimum=False)


def check_concurrency_policy(value: object) -> str:
    if not isinstance(value, str) or value not in CONCURRENCY_POLICIES:
        shown = repr(value) if isinstance(value, str) else json_type(value)
        raise Invalid(f"must be one of {', '.join(CONCURRENCY_POLICIES)}, not {shown}")
    return value


def check_notify_url(value: object) -> str | None:
    """A project's notify_url: null (no notices), or a URL checked as a callback_url is."""
    if value is None:
        return None
    return check_callback_url(value)


def check_any_json(value: object) -> Any:
    return value


JOB_CHECKS: dict[str, Callable[[object], Any]] = {
    "project_uuid": check_id,
    "name": check_name,
    "spec": check_spec,
    "callback_url": check_callback_url,
    "data": check_any_json,
    "timezone": check_timezone,
    "execution_type": check_execution_type,
    "paused": check_bool,
    "catch_up_window_s": check_catch_up_window,
    "timeout_s": check_timeout,
    "retry_max": check_retry_max,
    "retry_delay_s": check_retry_delay,
    "retry_max_delay_s": check_retry_delay,
    "concurrency_policy": check_concurrency_policy,
    "coalesce": check_bool,
    "labels": labels_check,
}

PROJECT_CHECKS: dict[str, Callable[[object], Any]] = {
    "name": check_name,
    "description": check_description,
    "notify_url": check_notify_url,
    # Issue 19: a paused project fires none of its jobs.
    "paused": check_bool,
}


def retry_delays_problem(delay: float, max_delay: float, *, given: bool = True) -> str | None:
    """
    What is wrong with a job's C{retry_delay_s}/C{retry_max_delay_s} pair
    (the longest wait between attempts cannot be shorter than the first),
    or None. C{given}: both came in the request (else one is a default or
    the stored value, and the message says so).
    """
    if max_delay >= delay:
        return None
    if given:
        return f"must be at least retry_delay_s ({delay:g}), not {max_delay:g}"
    return (
        f"is {max_delay:g}, less than retry_delay_s ({delay:g}); give a retry_max_delay_s "
        f"of at least {delay:g}"
    )


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def problem_message(path: str, problem: FieldProblem, allowed: Iterable[str]) -> str:
    """How the API words one of a body's L{FieldProblem}s (C{path} is where it is)."""
    if problem.kind == READ_ONLY:
        return f"{path}: is read-only and cannot be set"
    if problem.kind == UNKNOWN:
        return f"{path}: unknown field (allowed: {', '.join(allowed)})"
    if problem.kind == REQUIRED:
        return f"{path}: is required"
    return f"{path}: {problem.detail}"


def add_problems(
    problems: list[FieldProblem],
    *,
    prefix: str,
    allowed: Iterable[str],
    errors: FieldErrors,
    cleaned: Mapping[str, Any],
) -> None:
    """Record C{problems} in C{errors} under C{prefix + field}, as the API words them."""
    for problem in problems:
        path = prefix + problem.field
        if problem.kind == RETRY_DELAYS:
            delays = (cleaned["retry_delay_s"], cleaned["retry_max_delay_s"])
            message = f"{path}: {retry_delays_problem(*delays)}"
        else:
            message = problem_message(path, problem, allowed)
        errors.add(path, message)


def check_job(
    body: Mapping[str, Any], *, prefix: str, errors: FieldErrors, partial: bool
) -> dict[str, Any]:
    """
    The cleaned writable fields of one job object (all required ones unless
    C{partial}). A C{retry_max_delay_s} below a C{retry_delay_s} given with
    it is refused here; against a default or stored value the caller checks
    (L{retry_delays_problem}).
    """
    cleaned, problems = check_job_fields(
        body, checks=JOB_CHECKS, partial=partial, read_only=JOB_READ_ONLY_FIELDS
    )
    add_problems(problems, prefix=prefix, allowed=JOB_CHECKS, errors=errors, cleaned=cleaned)
    return cleaned


def check_project(body: Mapping[str, Any], *, errors: FieldErrors, partial: bool) -> dict[str, Any]:
    """The cleaned writable fields of a project object (C{name} required unless C{partial})."""
    cleaned, problems = check_fields(
        body,
        checks=PROJECT_CHECKS,
        read_only=PROJECT_READ_ONLY_FIELDS,
        required=() if partial else ("name",),
    )
    add_problems(problems, prefix="", allowed=PROJECT_CHECKS, errors=errors, cleaned=cleaned)
    return cleaned


# -- cursors -----------------------------------------------------------------


_INSTANT_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def encode_cursor(offset: int, after: tuple[str, str] | None = None) -> str:
    """
    An opaque token for the list position C{offset}; with C{after}, the
    (created_at, uuid) of the last item shown, so the next page is found
    through the index instead of by skipping C{offset} rows.
    """
    raw = f"o:{offset}" if after is None else f"k:{offset}|{after[0]}|{after[1]}"
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")


def decode_cursor(token: str) -> tuple[int, tuple[str, str] | None]:
    """
    The (offset, after) inside a token from L{encode_cursor}; L{Invalid}
    for anything else.
    """
    refused = Invalid("is not a cursor this API issued")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise refused from None
    kind, _, rest = raw.partition(":")
    if kind == "o":
        number, after = rest, None
    elif kind == "k":
        number, _, position = rest.partition("|")
        created_at, _, uuid = position.partition("|")
        if not _INSTANT_TEXT.fullmatch(created_at) or not 0 < len(uuid) <= MAX_ID_LENGTH:
            raise refused
        after = (created_at, uuid)
    else:
        raise refused
    if not number.isdigit() or len(number) > 18:
        raise refused
    return int(number), after
