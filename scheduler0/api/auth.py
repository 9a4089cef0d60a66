"""
Who may call: authentication (an API key and secret, or admin HTTP Basic)
and each credential's request rate. A verified credential is remembered
until one is archived, so the common request reads nothing and hashes
nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Callable
from typing import Any

import attrs
from passlib.hash import pbkdf2_sha256
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from scheduler0.api.errors import APIError
from scheduler0.api.limits import RateLimiter
from scheduler0.api.ports import StateReader
from scheduler0.api.request import Principal, last_header, maybe
from scheduler0.api.routes import ADMIN, ANONYMOUS, Route
from scheduler0.errors import StoreUnavailable
from scheduler0.store.commands import Command, Result

log = Logger()

REALM_CHALLENGE = 'Basic realm="scheduler0"'
VERIFIED_CACHE_LIMIT = 10_000


def default_verify(secret: str, hashed: str) -> bool:
    return pbkdf2_sha256.verify(secret, hashed)


@attrs.define(eq=False, kw_only=True)
class Authenticator:
    """
    Decides who a request comes from (L{authenticate}) and whether that
    credential is over its rate (L{check_rate}). C{verify_secret} may
    return a Deferred (the node runs pbkdf2 in a thread); C{read_barrier},
    when given, lets a key created through another node a moment ago be
    found.
    """

    state: StateReader
    admin: Any
    verify_secret: Callable[[str, str], Any] = default_verify
    read_barrier: Callable[[], Any] | None = None
    # Requests per credential (None: no limit); see scheduler0.api.limits.
    rate_limiter: RateLimiter | None = None
    _verified: dict[tuple[str, str, str], bool] = attrs.field(init=False, factory=dict)
    # api_key -> (sha256 of the secret, credential uuid) of live credentials
    # whose secret was verified: the fast path of authentication.
    _live_credentials: dict[str, tuple[bytes, str]] = attrs.field(init=False, factory=dict)

    async def authenticate(self, route: Route, request: IRequest) -> Principal:
        if route.auth == ANONYMOUS:
            return Principal(ANONYMOUS)
        admin_only = route.auth == ADMIN
        challenge = {"WWW-Authenticate": REALM_CHALLENGE} if admin_only else {}
        try:
            authorization = last_header(request, "authorization")
            api_key = last_header(request, "x-api-key")
            api_secret = last_header(request, "x-secret-key")
        except APIError as error:
            raise APIError(401, error.message, error.fields, headers=challenge) from None
        if authorization is not None:
            if self._admin_matches(authorization):
                return Principal(ADMIN)
            raise APIError(
                401,
                "authorization: wrong admin username or password",
                {"authorization": "rejected"},
                headers=challenge,
            )
        if api_key is None and api_secret is None:
            needed = (
                "HTTP Basic admin credentials"
                if admin_only
                else "x-api-key and x-secret-key headers (or HTTP Basic admin credentials)"
            )
            raise APIError(401, f"authentication required: send {needed}", {}, headers=challenge)
        for header, value in (("x-api-key", api_key), ("x-secret-key", api_secret)):
            if not value:
                raise APIError(
                    401, f"{header}: header is missing", {header: "missing"}, headers=challenge
                )
        assert api_key is not None and api_secret is not None  # both checked just above
        credential_uuid = await self._client_matches(api_key, api_secret, challenge)
        if admin_only:
            raise APIError(
                403, "this route needs admin credentials (HTTP Basic), not a client API key"
            )
        return Principal("client", credential_uuid)

    def check_rate(self, principal: Principal) -> None:
        """
        Refuse with 429 a credential over its request rate. This runs after
        authentication, so the key is one the caller proved it holds.
        """
        if self.rate_limiter is None or principal.kind == ANONYMOUS:
            return
        if principal.kind == ADMIN:
            key, header = "admin", "authorization"
        else:
            key, header = f"client:{principal.credential_uuid}", "x-api-key"
        wait = self.rate_limiter.take(key)
        if wait is None:
            return
        seconds = math.ceil(wait)
        raise APIError(
            429,
            f"{header}: too many requests for this credential; retry in {seconds} s",
            {header: "over the request rate limit"},
            code="rate_limited",
            headers={"Retry-After": str(seconds)},
        )

    def _admin_matches(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        username, sep, password = decoded.partition(b":")
        expected_user = str(getattr(self.admin, "username", "") or "").encode("utf-8")
        expected_password = str(getattr(self.admin, "password", "") or "").encode("utf-8")
        if not sep or not expected_password:
            return False
        user_ok = hmac.compare_digest(username, expected_user)
        password_ok = hmac.compare_digest(password, expected_password)
        return user_ok and password_ok

    async def _client_matches(self, api_key: str, api_secret: str, challenge: dict) -> str | None:
        rejected = APIError(
            401,
            "x-api-key/x-secret-key: unknown API key or wrong secret",
            {"x-api-key": "rejected"},
            headers=challenge,
        )
        digest = hashlib.sha256(api_secret.encode("utf-8")).digest()
        known = self._live_credentials.get(api_key)
        if known is not None and hmac.compare_digest(known[0], digest):
            # Verified before and not archived since (an archive empties
            # this cache before it is acknowledged): no store read, no hash.
            return known[1]
        credential = await self.state.get_credential_by_key(api_key)
        if not credential and self.read_barrier is not None:
            # In a cluster the key may have been created a moment ago through
            # another node: look again once this node has caught up.
            try:
                await maybe(self.read_barrier())
            except StoreUnavailable:
                raise rejected from None
            credential = await self.state.get_credential_by_key(api_key)
        if not credential:
            raise rejected
        hashed = credential.get("api_secret_hash") or ""
        key = (api_key, digest.hex(), hashed)
        if key not in self._verified:
            try:
                ok = bool(await maybe(self.verify_secret(api_secret, hashed)))
            except Exception:
                # The stored hash is unreadable; log which credential, never the headers.
                log.failure(
                    "verifying the secret of credential {uuid} failed",
                    Failure(),
                    uuid=credential.get("uuid"),
                )
                ok = False
            if not ok:
                raise rejected
            if len(self._verified) >= VERIFIED_CACHE_LIMIT:
                self._verified.clear()
            self._verified[key] = True
        if credential.get("archived_at"):
            raise APIError(
                401,
                "x-api-key: this credential has been archived",
                {"x-api-key": "archived"},
                headers=challenge,
            )
        if len(self._live_credentials) >= VERIFIED_CACHE_LIMIT:
            self._live_credentials.clear()
        self._live_credentials[api_key] = (digest, credential.get("uuid"))
        return credential.get("uuid")

    def on_applied(self, command: Command, result: Result) -> None:
        """
        The proposer's subscriber: forget verified credentials when one is
        archived (or the whole state is replaced), so the archived one is
        refused from the next request on, on every node as it applies.
        """
        if command.op in ("archive_credential", "state_restored"):
            self._live_credentials.clear()
