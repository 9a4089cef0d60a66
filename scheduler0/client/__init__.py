"""
The Python client of the Scheduler0 API.

L{Client} is blocking and needs only the standard library; L{AsyncClient}
(imported on first use, it needs Twisted and treq) has the same methods and
answers Deferreds. Both return the answer's C{data} as plain dicts and lists
and raise L{APIError} for an error answer, L{NodeUnreachable} (a
C{ConnectionError}) when the node does not answer at all.
"""

from __future__ import annotations

from typing import Any

from scheduler0.client.operations import APIError, NodeUnreachable, Request
from scheduler0.client.sync import Client

__all__ = ["APIError", "AsyncClient", "Client", "NodeUnreachable", "Request"]


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from scheduler0.client.asynchronous import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
