"""
Health, liveness and the OpenAPI document: the routes that describe the
node and the API rather than its data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

import scheduler0
from scheduler0.api.errors import APIError
from scheduler0.api.openapi import build_openapi
from scheduler0.api.request import Call, maybe
from scheduler0.api.routes import ROUTES


@attrs.define(eq=False, kw_only=True)
class HealthResource:
    """
    The node's health (C{health} answers it: a dict, or a Deferred of one),
    its liveness, and the OpenAPI document generated from the route table.
    """

    HANDLERS: ClassVar[tuple[str, ...]] = ("health_check", "liveness", "openapi_document")

    health: Callable[[], Any]
    defaults: Any
    _openapi: dict | None = attrs.field(init=False, default=None)

    async def health_check(self, call: Call) -> Any:
        """
        The node's health: 200 while it is ready (it can serve writes and
        fire its jobs), else 503 with the same body and the reasons.
        """
        health = await maybe(self.health())
        if isinstance(health, dict) and health.get("ready") is False:
            reasons = [r for r in health.get("reasons") or () if isinstance(r, dict)]
            said = "; ".join(f"{r.get('code')}: {r.get('message')}" for r in reasons)
            raise APIError(
                503,
                f"this node is not ready ({said})" if said else "this node is not ready",
                code="not_ready",
                headers={"Retry-After": "1"},
                data=health,
            )
        return health

    async def liveness(self, call: Call) -> dict:
        """The process serves HTTP (for liveness probes); reads nothing."""
        return {"live": True, "node_id": getattr(self.defaults, "node_id", None)}

    async def openapi_document(self, call: Call) -> dict:
        if self._openapi is None:
            self._openapi = build_openapi(ROUTES, scheduler0.__version__)
        return self._openapi
