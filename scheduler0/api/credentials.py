"""
Client credentials (admin only): create (the secret is shown once; the
store keeps its hash), list, get and archive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from scheduler0.api.errors import invalid
from scheduler0.api.ports import Cluster, StateReader
from scheduler0.api.request import Call, Writes, list_page, maybe, not_found, prefer, utc_now
from scheduler0.credentials import token as make_token
from scheduler0.timeutil import format_instant


def public_credential(credential: Mapping[str, Any]) -> dict:
    public = {k: v for k, v in credential.items() if k not in ("api_secret_hash", "api_secret")}
    public.setdefault("archived_at", None)
    return public


@attrs.define(eq=False, kw_only=True)
class CredentialsResource:
    """
    The credential routes. C{hash_secret} gives the stored form of a new
    secret (a keyed hash, scheduler0.secret_hash); it may return a Deferred.
    """

    HANDLERS: ClassVar[tuple[str, ...]] = (
        "post_credential",
        "list_credentials",
        "get_credential",
        "archive_credential",
    )

    state: StateReader
    writes: Writes
    clock: IReactorTime
    token: Callable[[int], str] = make_token
    hash_secret: Callable[[str], Any]
    cluster: Cluster | None = None

    async def _credential_or_404(self, credential_uuid: str) -> dict:
        credential = await self.state.get_credential(credential_uuid)
        if not credential:
            raise not_found("credential", credential_uuid)
        return public_credential(credential)

    def create_credential(self) -> Deferred:
        """
        Make a new client credential through the state machine; fires with
        C{{uuid, api_key, api_secret, created_at}}. The secret exists only in
        this result: the store keeps its hash. (Used by the route and by a
        new node printing its first credential.)
        """
        return Deferred.fromCoroutine(self._create_credential())

    async def _create_credential(self) -> dict:
        api_key = self.token(24)
        api_secret = self.token(32)
        credential = {
            "uuid": self.writes.new_uuid(),
            "api_key": api_key,
            "api_secret_hash": await maybe(self.hash_secret(api_secret)),
            "created_at": format_instant(utc_now(self.clock)),
        }
        await self.writes.propose("create_credential", {"credential": credential})
        return {
            "uuid": credential["uuid"],
            "api_key": api_key,
            "api_secret": api_secret,
            "created_at": credential["created_at"],
        }

    async def post_credential(self, call: Call) -> tuple[int, dict]:
        body = call.object_body(required=False)
        if body:
            name = next(iter(body))
            raise invalid(name, f"{name}: unknown field (a credential takes no fields)")
        return 201, await self._create_credential()

    async def list_credentials(self, call: Call) -> dict:
        limit, offset = call.query["limit"], call.query["offset"]
        items, total = await self.state.list_credentials(limit=limit, offset=offset)
        return list_page([public_credential(c) for c in items], total, limit, offset)

    async def get_credential(self, call: Call) -> dict:
        return await self._credential_or_404(call.path["uuid"])

    async def archive_credential(self, call: Call) -> dict:
        credential = await self._credential_or_404(call.path["uuid"])
        if credential.get("archived_at"):
            return credential
        archived_at = format_instant(utc_now(self.clock))
        value = await self.writes.propose(
            "archive_credential",
            {"uuid": credential["uuid"], "archived_at": archived_at},
            call=call,
        )
        if self.cluster is not None:
            # Acknowledged once every reachable node refuses the credential too.
            await self.cluster.wait_members_applied(self.cluster.config.raft_apply_timeout)
        return public_credential(prefer(value, {**credential, "archived_at": archived_at}))
