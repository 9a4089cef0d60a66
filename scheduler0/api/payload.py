"""
How big a job's callback item gets, so a job whose C{data} can never fit in
a callback body (HTTPExecutorPayloadMaxSizeMb) is refused when it is
written, not failed at every run.

A callback body is a JSON array of items, each made by the executor
(L{scheduler0.executor.http._encode}) as::

    {"execution_id":"<36-char uuid>",<job members>,"scheduled_at":"<24-char instant>","attempt":<n>}

where the job members are L{job_members_json} (job_uuid, project_uuid, name,
spec, data; UTF-8, no spaces). A body holding just that item adds the two
brackets, and the executor fails the item at once when that is over the
cap. So the largest body one item of a job can need is fixed text, plus the
job's members, plus the digits of its last attempt number (retry_max + 1):
L{callback_item_bytes} counts exactly that, and a test holds it equal to the
executor's own encoding.
"""

from __future__ import annotations

import json
from typing import Any

from scheduler0.delivery import job_members_json

#: Execution ids are uuid5 text; slots are C{YYYY-MM-DDTHH:MM:SS.mmmZ}.
EXECUTION_ID_CHARS = 36
INSTANT_CHARS = 24
# '[' '{"execution_id":"' id '",' members ',"scheduled_at":"' instant '","attempt":' n '}' ']'
_FRAME_BYTES = (
    len('[{"execution_id":"')
    + EXECUTION_ID_CHARS
    + len('",')
    + len(',"scheduled_at":"')
    + INSTANT_CHARS
    + len('","attempt":')
    + len("}]")
)
# The members' own text around the values: "job_uuid":"","project_uuid":"",...
_MEMBER_KEYS_BYTES = len(job_members_json("", "", "", "", None)) - len("null")
# One JSON string character takes at most 6 bytes (a \u00XX escape).
_MAX_BYTES_PER_CHAR = 6
_DATA_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_cap_bytes(max_size_mb: float) -> int:
    """HTTPExecutorPayloadMaxSizeMb in bytes, as the node's executor counts it."""
    return int(max_size_mb * 1024 * 1024)


def callback_item_bytes(job: dict[str, Any]) -> int:
    """
    The bytes of a callback body holding only C{job}'s item at its last
    attempt (C{retry_max} + 1): the most one execution of the job can need.
    """
    members = job_members_json(
        job["uuid"], job["project_uuid"], job["name"], job["spec"], job.get("data")
    )
    return _FRAME_BYTES + len(members.encode("utf-8")) + len(str(int(job["retry_max"]) + 1))


def data_problem(job: dict[str, Any], cap: int) -> str | None:
    """
    Why no execution of C{job} could ever be sent with its C{data} (its
    callback item cannot fit in a body of C{cap} bytes, or the data is not
    sendable JSON at all), or None. Most jobs are settled by a bound that
    costs one encoding of their data; the exact size is worked out only
    near the cap.
    """
    data = job.get("data")
    try:
        data_text = "null" if data is None else _DATA_ENCODER.encode(data)
        data_bytes = len(data_text.encode("utf-8"))
    except ValueError as error:
        # 1e400 (read as infinity), or a lone UTF-16 surrogate (\ud800):
        # the executor could never encode it.
        return f"cannot be sent as JSON ({error})"
    texts = len(job["uuid"]) + len(job["project_uuid"]) + len(job["name"]) + len(job["spec"])
    bound = (
        _FRAME_BYTES
        + _MEMBER_KEYS_BYTES
        + _MAX_BYTES_PER_CHAR * texts
        + data_bytes
        + len(str(int(job["retry_max"]) + 1))
    )
    if bound <= cap:
        return None
    try:
        size = callback_item_bytes(job)
    except ValueError:
        return None  # not the data's fault (a name that cannot be encoded)
    if size <= cap:
        return None
    return (
        f"is {data_bytes:,} bytes as JSON; a callback carrying it (with the job's ids, name "
        f"and spec) would be {size:,} bytes, over the HTTPExecutorPayloadMaxSizeMb cap of "
        f"{cap:,} bytes, so no execution of this job could ever be sent"
    )
