"""
What the API's own string formats hold, for schemathesis.

The OpenAPI document marks a job's C{spec}, its C{timezone} and a page
C{cursor} with formats of this API (scheduler0-spec, iana-timezone,
scheduler0-cursor): no JSON Schema
keyword states them exactly. Load this
module as schemathesis hooks so that a request valid by the document holds
valid values of them:

    SCHEMATHESIS_HOOKS=harness.schemathesis_hooks schemathesis run URL/openapi.json ...
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Any

import schemathesis
from hypothesis import strategies as st

from scheduler0.api.openapi import CURSOR_FORMAT, SPEC_FORMAT, TIMEZONE_FORMAT
from scheduler0.api.validation import encode_cursor
from scheduler0.scheduler.spec import SpecError, validate_spec, validate_timezone

MAX_OFFSET = 10**18 - 1
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _known_zone(name: str) -> bool:
    try:
        validate_timezone(name)
    except SpecError:
        return False
    return True


def _valid_spec(spec: str) -> bool:
    try:
        validate_spec(spec)
    except (SpecError, ValueError):
        return False
    return True


def _field(low: int, high: int) -> Any:
    """One cron field: *, a value, a range, or either with a step."""
    value = st.integers(low, high)
    pair = st.tuples(value, value).map(sorted)
    base = st.one_of(
        st.just("*"),
        value.map(str),
        pair.map(lambda p: f"{p[0]}-{p[1]}"),
    )
    step = st.integers(1, high - low + 1)
    stepped = st.tuples(st.sampled_from(["*", str(low)]), step).map(lambda p: f"{p[0]}/{p[1]}")
    return st.one_of(base, stepped)


# Fields that every month has, so any combination names a real instant.
_CRON = st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12), _field(0, 6)).map(
    " ".join
)
_SIX = st.tuples(_field(0, 59), _CRON).map(" ".join)
_EVERY = st.tuples(st.integers(1, 10_000), st.sampled_from("smhd")).map(
    lambda p: f"@every {p[0]}{p[1]}"
)
_AT = st.datetimes(
    min_value=datetime(2100, 1, 1),
    max_value=datetime(9999, 12, 31),
).map(lambda moment: f"@at {moment.strftime('%Y-%m-%dT%H:%M:%S')}Z")

ZONES = st.sampled_from(sorted(n for n in zoneinfo.available_timezones() if _known_zone(n)))
SPECS = st.one_of(st.sampled_from(_MACROS), _CRON, _SIX, _EVERY, _AT).filter(_valid_spec)
CURSORS = st.one_of(
    st.integers(0, MAX_OFFSET).map(encode_cursor),
    st.tuples(st.integers(0, MAX_OFFSET), st.uuids()).map(
        lambda p: encode_cursor(p[0], ("2026-01-02T03:04:05.000Z", str(p[1])))
    ),
)

schemathesis.openapi.format(SPEC_FORMAT, SPECS)
schemathesis.openapi.format(CURSOR_FORMAT, CURSORS)
schemathesis.openapi.format(TIMEZONE_FORMAT, ZONES)


def _delays_disagree(job: Any) -> bool:
    """A job body whose retry_max_delay_s is below the retry_delay_s given with it."""
    if not isinstance(job, dict):
        return False
    delay, max_delay = job.get("retry_delay_s"), job.get("retry_max_delay_s")
    numbers = (int, float)
    if not isinstance(delay, numbers) or not isinstance(max_delay, numbers):
        return False
    if isinstance(delay, bool) or isinstance(max_delay, bool):
        return False
    return max_delay < delay


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """
    Leave out requests that break a rule between two inputs, which the
    document states in words (JSON Schema has no keyword relating two
    properties or two query parameters): a job's retry_max_delay_s below
    the retry_delay_s given with it, a cursor with an offset other than 0,
    and an until not later than since.
    """
    body = case.body
    jobs = body if isinstance(body, list) else [body]
    if any(_delays_disagree(job) for job in jobs):
        return False
    query = case.query or {}
    if "cursor" in query and query.get("offset") not in (None, 0, "0"):
        return False
    return not _empty_window(query.get("since"), query.get("until"))


def _empty_window(since: Any, until: Any) -> bool:
    """An until that is not later than since (both readable instants)."""
    if not isinstance(since, str) or not isinstance(until, str):
        return False
    try:
        start = datetime.fromisoformat(since.replace("Z", "+00:00"))
        end = datetime.fromisoformat(until.replace("Z", "+00:00"))
        return end <= start
    except (ValueError, OverflowError):
        return False
