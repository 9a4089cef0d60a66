"""
Projects: create (with the signing secret, shown once), list, get, update,
delete (with its jobs on ?cascade=true) and rotate the signing secret.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import ClassVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from scheduler0.api.errors import APIError, FieldErrors, invalid
from scheduler0.api.jobs import no_resolver
from scheduler0.api.ports import StateReader
from scheduler0.api.request import Call, Writes, list_page, not_found, prefer, utc_now
from scheduler0.api.validation import check_project
from scheduler0.credentials import token as make_token
from scheduler0.netpolicy import NetworkPolicy, check_url
from scheduler0.sealing import SealError, SecretSealer, sealed_key_id
from scheduler0.secret_hash import SecretHasher
from scheduler0.timeutil import format_instant
from scheduler0.versions import FIRST_ENTRY_VERSION, require_entry_version

#: The entry version of commands that carry a project's C{paused}.
PAUSE_ENTRY_VERSION = 2


def present_project(project: dict) -> dict:
    """A stored project as the API answers it: C{paused} always shown."""
    return {**project, "paused": bool(project.get("paused", False))}


@attrs.define(eq=False, kw_only=True)
class ProjectsResource:
    """
    The project routes. C{signing_grace_s} is how long a rotated-out signing
    secret keeps signing unless the rotation asks for another grace_s.
    """

    HANDLERS: ClassVar[tuple[str, ...]] = (
        "create_project",
        "list_projects",
        "get_project",
        "update_project",
        "delete_project",
        "rotate_signing_secret",
        "seal_signing_secrets",
    )

    state: StateReader
    writes: Writes
    clock: IReactorTime
    token: Callable[[int], str] = make_token
    net_policy: NetworkPolicy = attrs.field(factory=NetworkPolicy)
    resolve: Callable[[str], Deferred] = no_resolver
    signing_grace_s: float = 86400
    # Seals each new signing secret before it is proposed, so the command,
    # the logs and the state hold ciphertext only (None: plain text, tests).
    sealer: SecretSealer | None = None
    # Sealers of the node's PreviousSecretKeys: secrets sealed under them are
    # resealed without an old_secret_key.
    previous_sealers: tuple[SecretSealer, ...] = ()
    # The client secret hasher, whose keys classify the stored hashes in the
    # seal route's answer (None: not reported).
    hasher: SecretHasher | None = None

    def _stored(self, secret: str) -> str:
        """A new signing secret as the command carries it: sealed when there is a sealer."""
        return secret if self.sealer is None else self.sealer.seal(secret)

    async def _project_or_404(self, project_uuid: str) -> dict:
        project = await self.state.get_project(project_uuid)
        if not project:
            raise not_found("project", project_uuid)
        return present_project(project)

    async def _pause_version(self, paused: bool) -> int:
        """
        The entry version a project command carrying C{paused} needs: 2, or
        1 while the cluster writes 1 and the project is not paused (the
        field is then left out); pausing then needs every node upgraded.
        """
        current = await self.state.entry_version()
        if paused:
            require_entry_version(current, PAUSE_ENTRY_VERSION, "paused")
        return PAUSE_ENTRY_VERSION if current >= PAUSE_ENTRY_VERSION else FIRST_ENTRY_VERSION

    async def _check_notify_url(self, url: str | None) -> None:
        """CallbackAllowNetworks/CallbackDenyNetworks apply to notices as to callbacks."""
        if url is not None:
            reason = await check_url(self.net_policy, url, self.resolve)
            if reason is not None:
                raise invalid("notify_url", f"notify_url: {reason}")

    async def create_project(self, call: Call) -> dict:
        body = call.object_body()
        errors = FieldErrors()
        fields = check_project(body, errors=errors, partial=False)
        errors.raise_if_any()
        await self._check_notify_url(fields.get("notify_url"))
        if await self.state.get_project_by_name(fields["name"]):
            raise APIError(
                409,
                f"name: a project named {fields['name']!r} already exists",
                {"name": "already exists"},
            )
        now = format_instant(utc_now(self.clock))
        project = {
            "uuid": self.writes.new_uuid(),
            "name": fields["name"],
            "description": fields.get("description", ""),
            "created_at": now,
            "updated_at": now,
        }
        # Left out when there is none, so nodes of an earlier release (in
        # an upgrade) apply the command alike.
        if fields.get("notify_url") is not None:
            project["notify_url"] = fields["notify_url"]
        paused = bool(fields.get("paused", False))
        version = await self._pause_version(paused)
        if version >= PAUSE_ENTRY_VERSION:
            project["paused"] = paused
        secret = self.token(32)
        value = await self.writes.propose(
            "create_project",
            {"project": project, "signing_secret": self._stored(secret)},
            call=call,
            version=version,
        )
        # The signing secret is shown in this answer only.
        local = {**project, "notify_url": fields.get("notify_url"), "paused": paused}
        return {**present_project(prefer(value, local)), "signing_secret": secret}

    async def rotate_signing_secret(self, call: Call) -> dict:
        body = call.object_body(required=False) or {}
        unknown = sorted(set(body) - {"grace_s"})
        if unknown:
            raise invalid(unknown[0], f"{unknown[0]}: unknown field")
        grace = body.get("grace_s", self.signing_grace_s)
        if (
            isinstance(grace, bool)
            or not isinstance(grace, (int, float))
            or not 0 <= grace <= 30 * 86400
        ):
            raise invalid("grace_s", "grace_s: must be a number of seconds from 0 to 2592000")
        project = await self._project_or_404(call.path["uuid"])
        now = utc_now(self.clock)
        secret = self.token(32)
        expires_at = format_instant(now + timedelta(seconds=grace))
        await self.writes.propose(
            "rotate_signing_secret",
            {
                "project_uuid": project["uuid"],
                "secret": self._stored(secret),
                "at": format_instant(now),
                "expires_at": expires_at,
            },
            call=call,
        )
        return {
            "project_uuid": project["uuid"],
            "signing_secret": secret,
            "previous_expires_at": expires_at,
        }

    async def seal_signing_secrets(self, call: Call) -> dict:
        """
        Seal every stored signing secret under this node's SecretKey, or under
        C{new_secret_key} (the first step of rotating SecretKey); values sealed
        under C{old_secret_key} are opened with it. Plain text secrets of an
        earlier release are sealed too. One command through the proposer.
        """
        body = call.object_body(required=False) or {}
        keys = {}
        for name in sorted(body):
            if name not in ("old_secret_key", "new_secret_key"):
                raise invalid(name, f"{name}: unknown field")
            value = body[name]
            if not isinstance(value, str) or len(value) < 16:
                raise invalid(name, f"{name}: must be a string of at least 16 characters")
            keys[name] = SecretSealer.from_secret_key(value)
        if self.sealer is None:
            raise APIError(409, "this node has no SecretKey to seal with", {"body": "no key"})
        target = keys.get("new_secret_key", self.sealer)
        openers = {sealer.key_id: sealer for sealer in self.previous_sealers}
        openers[self.sealer.key_id] = self.sealer
        if "old_secret_key" in keys:
            openers[keys["old_secret_key"].key_id] = keys["old_secret_key"]
        entries = []
        for project_uuid, rows in sorted((await self.state.signing_secrets()).items()):
            for stored, _expires in rows:
                entry = self._resealed(project_uuid, stored, openers, target)
                if entry is not None:
                    entries.append(entry)
        counts: dict = {"resealed": 0, "skipped": 0}
        if entries:
            proposed = await self.writes.propose(
                "reseal_signing_secrets", {"secrets": entries}, call=call
            )
            if isinstance(proposed, dict):
                counts = proposed
        answer = {**counts, "key_id": target.key_id}
        if self.hasher is not None:
            # What an operator rotating SecretKey waits on before dropping
            # PreviousSecretKeys: previous_keys at 0.
            key_ids = await self.state.credential_hash_key_ids()
            answer["credential_hashes"] = self.hasher.classify(key_ids)
        return answer

    def _resealed(
        self, project_uuid: str, stored: str, openers: dict[str, SecretSealer], target: SecretSealer
    ) -> dict | None:
        """One entry of the reseal command, or None when C{stored} is sealed under C{target}."""
        sealed_id = sealed_key_id(stored)
        if sealed_id == target.key_id:
            return None
        if sealed_id is not None and sealed_id not in openers:
            assert self.sealer is not None
            raise APIError(
                409,
                f"old_secret_key: a signing secret of project {project_uuid} is sealed under "
                f"key id {sealed_id}, which is neither this node's SecretKey "
                f"(key id {self.sealer.key_id}), one of its PreviousSecretKeys, "
                "nor old_secret_key",
                {"old_secret_key": "needed"},
            )
        opener = openers[sealed_id] if sealed_id is not None else target
        try:
            secret = opener.open(stored)
        except SealError as error:
            raise APIError(409, f"old_secret_key: {error}", {"old_secret_key": "wrong"}) from None
        return {"project_uuid": project_uuid, "from": stored, "to": target.seal(secret)}

    async def list_projects(self, call: Call) -> dict:
        limit, offset = call.query["limit"], call.query["offset"]
        items, total = await self.state.list_projects(
            limit=limit, offset=offset, uuids=call.project_filter()
        )
        return list_page([present_project(p) for p in items], total, limit, offset)

    async def get_project(self, call: Call) -> dict:
        return await self._project_or_404(call.path["uuid"])

    async def update_project(self, call: Call) -> dict:
        body = call.object_body()
        errors = FieldErrors()
        changes = check_project(body, errors=errors, partial=True)
        errors.raise_if_any()
        project = await self._project_or_404(call.path["uuid"])
        changes = {k: v for k, v in changes.items() if project.get(k) != v}
        if not changes:
            return project
        if "notify_url" in changes:
            await self._check_notify_url(changes["notify_url"])
        if "name" in changes:
            other = await self.state.get_project_by_name(changes["name"])
            if other and other.get("uuid") != project["uuid"]:
                raise APIError(
                    409,
                    f"name: a project named {changes['name']!r} already exists",
                    {"name": "already exists"},
                )
        version = FIRST_ENTRY_VERSION
        if "paused" in changes:
            version = await self._pause_version(True)
        updated_at = format_instant(utc_now(self.clock))
        value = await self.writes.propose(
            "update_project",
            {"uuid": project["uuid"], "changes": changes, "updated_at": updated_at},
            call=call,
            version=version,
        )
        if "paused" in changes:
            # Its jobs stop (or fire again) on every node before the answer.
            await self.writes.everywhere()
        return present_project(prefer(value, {**project, **changes, "updated_at": updated_at}))

    async def delete_project(self, call: Call) -> dict:
        project = await self._project_or_404(call.path["uuid"])
        cascade = bool(call.query.get("cascade"))
        if not cascade:
            count = await self.state.count_jobs(project["uuid"])
            if count:
                raise APIError(
                    409,
                    f"project has {count} job{'s' if count != 1 else ''}; "
                    "delete them first or pass ?cascade=true",
                    {"cascade": f"project has {count} jobs"},
                )
        value = await self.writes.propose(
            "delete_project", {"uuid": project["uuid"], "cascade": cascade}, call=call
        )
        await self.writes.everywhere()
        return value if isinstance(value, dict) else {"uuid": project["uuid"], "deleted_jobs": []}
