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

from scheduler0.api.errors import FieldErrors, error_for_fields
from scheduler0.api.ports import Cluster, StateReader
from scheduler0.api.request import Call, Writes, list_page, maybe, not_found, prefer, utc_now
from scheduler0.api.scope import ROLES, WRITE
from scheduler0.credentials import token as make_token
from scheduler0.timeutil import format_instant
from scheduler0.versions import FIRST_ENTRY_VERSION, require_entry_version


def public_credential(credential: Mapping[str, Any]) -> dict:
    public = {k: v for k, v in credential.items() if k not in ("api_secret_hash", "api_secret")}
    public.setdefault("archived_at", None)
    # Issue 19: the scope (a credential without one: every project, write).
    public.setdefault("projects", None)
    public.setdefault("role", WRITE)
    return public


#: The entry version of a credential created with a scope.
SCOPE_ENTRY_VERSION = 2


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

    async def _create_credential(
        self,
        call: Call | None = None,
        scope: Mapping[str, Any] | None = None,
        show_scope: bool = False,
    ) -> dict:
        api_key = self.token(24)
        api_secret = self.token(32)
        credential = {
            "uuid": self.writes.new_uuid(),
            "api_key": api_key,
            "api_secret_hash": await maybe(self.hash_secret(api_secret)),
            "created_at": format_instant(utc_now(self.clock)),
            **(scope or {}),
        }
        version = SCOPE_ENTRY_VERSION if scope else FIRST_ENTRY_VERSION
        await self.writes.propose(
            "create_credential", {"credential": credential}, call=call, version=version
        )
        created = {
            "uuid": credential["uuid"],
            "api_key": api_key,
            "api_secret": api_secret,
            "created_at": credential["created_at"],
        }
        if show_scope:
            # The route's answer shows the scope (a node's first credential,
            # printed at start-up, is shown as it always was).
            created["projects"] = credential.get("projects")
            created["role"] = credential.get("role", WRITE)
        return created

    async def post_credential(self, call: Call) -> tuple[int, dict]:
        body = call.object_body(required=False) or {}
        errors = FieldErrors()
        for name in sorted(set(body) - {"projects", "role"}):
            errors.add(name, f"{name}: unknown field (a credential takes projects and role)")
        scope: dict[str, Any] = {}
        role = body.get("role")
        if role is not None:
            if role not in ROLES:
                errors.add("role", f"role: must be one of {', '.join(ROLES)}")
            scope["role"] = role
        projects = body.get("projects")
        if projects is not None:
            if not isinstance(projects, list) or not projects:
                errors.add("projects", "projects: must be a non-empty list of project uuids")
                projects = []
            for position, project_uuid in enumerate(projects):
                if not isinstance(project_uuid, str) or not project_uuid:
                    errors.add(f"projects[{position}]", f"projects[{position}]: must be a uuid")
        errors.raise_if_any()
        if projects is not None:
            missing = {}
            for position, project_uuid in enumerate(projects):
                if not await self.state.get_project(project_uuid):
                    field = f"projects[{position}]"
                    missing[field] = f"{field}: no project {project_uuid!r}"
            if missing:
                raise error_for_fields(missing, 404)
            scope["projects"] = sorted(set(projects))
        if scope:
            require_entry_version(await self.state.entry_version(), SCOPE_ENTRY_VERSION, "projects")
        return 201, await self._create_credential(call, scope, show_scope=True)

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
