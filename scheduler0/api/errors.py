"""
The one exception type handlers raise to answer with an error envelope.

Handlers never build error responses by hand: they raise L{APIError} and the
application turns it into C{{"success": false, "data": null, "error": ...}},
so every error anywhere in the API has the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

# Error codes by HTTP status, used when a handler does not name its own code.
DEFAULT_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
    507: "insufficient_storage",
}


@attrs.define(eq=False)
class APIError(Exception):
    """
    A request that cannot be answered with success.

    C{fields} maps each offending input (a body field like C{jobs[3].spec},
    a query parameter, a header or C{body}) to what is wrong with it.
    C{data} is the answer's C{data} (null unless an error still has
    something to show: the health check's 503 keeps its whole body).
    """

    status: int
    message: str
    fields: Mapping[str, str] = attrs.field(factory=dict)
    code: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    data: Any = None

    def __str__(self) -> str:
        return f"{self.status} {self.message}"

    def envelope(self) -> dict:
        """The JSON body for this error."""
        return {
            "success": False,
            "data": self.data,
            "error": {
                "code": self.code or DEFAULT_CODES.get(self.status, "error"),
                "message": self.message,
                "fields": dict(self.fields),
            },
        }


def invalid(field: str, message: str) -> APIError:
    """A 400 naming one field, with the field's message as the summary."""
    return APIError(400, message, {field: message})


class FieldErrors:
    """
    Collects per-field problems of one request so a client sees all of them
    at once rather than fixing one per round trip.
    """

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def add(self, field: str, message: str) -> None:
        self.fields.setdefault(field, message)

    def __bool__(self) -> bool:
        return bool(self.fields)

    def raise_if_any(self, status: int = 400) -> None:
        if self.fields:
            raise error_for_fields(self.fields, status)


def error_for_fields(fields: Mapping[str, str], status: int = 400) -> APIError:
    """An APIError whose summary is the first field's message (plus a count)."""
    first = next(iter(fields.values()))
    extra = len(fields) - 1
    message = (
        first if not extra else f"{first} (and {extra} more problem{'s' if extra > 1 else ''})"
    )
    return APIError(status, message, dict(fields))


def insufficient_storage(error: Any) -> APIError:
    """
    The 507 of a write the data directory could not store (a
    L{scheduler0.errors.WritesRefused}): its message names the directory and
    its free space, and C{data} says the same as numbers.
    """
    return APIError(
        507,
        str(error),
        data={
            "data_dir": getattr(error, "data_dir", ""),
            "free_bytes": getattr(error, "free_bytes", 0),
            "floor_bytes": getattr(error, "floor_bytes", 0),
            "cause": getattr(error, "cause", ""),
        },
    )
