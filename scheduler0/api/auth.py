"""
Who may call: authentication (an API key and secret, or admin HTTP Basic),
each credential's request rate, and the throttle on failed authentication.

A client secret is checked against its keyed hash (scheduler0.secret_hash:
microseconds); a hash from before keyed hashes (pbkdf2, in a thread) is
still accepted and replaced through the state machine on its first
successful use. A verified credential is remembered until one is archived,
so the common request reads nothing. Failures are throttled per source
address and per API key (scheduler0.api.limits.FailureThrottle): a
throttled request is answered 429 before any store read or hash check, and
an unknown key is remembered for a few seconds so it costs no store read
(nor, in a cluster, a ReadIndex round) again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from scheduler0.api.errors import APIError
from scheduler0.api.limits import FailureThrottle, RateLimiter
from scheduler0.api.ports import StateReader
from scheduler0.api.request import Principal, last_header, maybe
from scheduler0.api.routes import ADMIN, ANONYMOUS, Route
from scheduler0.api.scope import Scope
from scheduler0.errors import StoreUnavailable
from scheduler0.metrics import AUTH_FAILURE_REASONS, AUTH_THROTTLE_SCOPES
from scheduler0.secret_hash import SecretHasher, is_keyed, verify_legacy
from scheduler0.store.commands import Command, Op, Result

log = Logger()

REALM_CHALLENGE = 'Basic realm="scheduler0"'
VERIFIED_CACHE_LIMIT = 10_000

#: Seconds an API key the store does not hold is answered 401 from memory.
#: Keys are random tokens made by the node, so nobody can present a key
#: before it exists: a creation applied here clears the cache anyway.
UNKNOWN_KEY_SECONDS = 5.0

#: Why an authentication failed / which throttle refused, as counted in /metrics.
FAILURE_REASONS = AUTH_FAILURE_REASONS
THROTTLE_SCOPES = AUTH_THROTTLE_SCOPES


def default_verify(secret: str, hashed: str) -> bool:
    """The check of a hash from before keyed hashes (pbkdf2-sha256)."""
    return verify_legacy(secret, hashed)


class AuthObserver(Protocol):
    """What hears each failed and each throttled authentication (the metrics)."""

    def on_auth_failure(self, reason: str) -> None: ...

    def on_auth_throttled(self, scope: str) -> None: ...


def key_hint(api_key: str) -> str:
    """What a log line may show of an API key: its first 4 characters."""
    return api_key[:4] + "..."


def _hasher_for(admin: Any) -> SecretHasher:
    return SecretHasher.from_secret_key(
        str(getattr(admin, "secret_key", "") or ""),
        tuple(getattr(admin, "previous_secret_keys", ()) or ()),
    )


@attrs.define(eq=False, kw_only=True)
class Authenticator:
    """
    Decides who a request comes from (L{authenticate}) and whether that
    credential is over its rate (L{check_rate}).

    C{hasher} checks keyed hashes (derived from the admin credentials'
    C{secret_key} by default). C{verify_secret} checks a pbkdf2 hash from
    before them and may return a Deferred (the node runs it in a thread);
    C{upgrade_hash(uuid, old_hash, new_hash)} proposes its replacement.
    C{read_barrier}, when given, lets a key created through another node a
    moment ago be found. C{throttle} (None: off) refuses sources and keys
    after repeated failures; C{observer} counts failures and refusals.
    """

    state: StateReader
    admin: Any
    clock: IReactorTime | None = None
    hasher: SecretHasher = attrs.field(
        default=attrs.Factory(lambda self: _hasher_for(self.admin), takes_self=True)
    )
    verify_secret: Callable[[str, str], Any] = default_verify
    upgrade_hash: Callable[[str, str, str], Any] | None = None
    read_barrier: Callable[[], Any] | None = None
    # Requests per credential (None: no limit); see scheduler0.api.limits.
    rate_limiter: RateLimiter | None = None
    throttle: FailureThrottle | None = None
    observer: AuthObserver | None = None
    _verified: dict[tuple[str, str, str], bool] = attrs.field(init=False, factory=dict)
    # api_key -> (sha256 of the secret, credential uuid, scope) of live
    # credentials whose secret was verified: the fast path of authentication.
    _live_credentials: dict[str, tuple[bytes, str, Scope]] = attrs.field(init=False, factory=dict)
    # api_key -> until when it is known not to exist.
    _unknown_keys: dict[str, float] = attrs.field(init=False, factory=dict)
    # Credentials whose upgrade is proposed now / whose failed upgrade was logged.
    _upgrading: set[str] = attrs.field(init=False, factory=set)
    _upgrade_failed: set[str] = attrs.field(init=False, factory=set)
    _other_key_logged: set[str] = attrs.field(init=False, factory=set)

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
        address = _source_address(request)
        if authorization is not None:
            if self._admin_matches(authorization):
                return Principal(ADMIN)
            self._refuse_throttled(address, None, "authorization")
            self._failed("admin_rejected", address, None)
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
        if admin_only:
            # An admin route's only scheme is Basic: without an Authorization
            # header the request is unauthenticated for it (401 and the
            # challenge), whatever client headers came along, which are not
            # even checked.
            raise APIError(
                401,
                "authorization: this route needs HTTP Basic admin credentials; a client API "
                "key is not accepted here",
                {"authorization": "missing"},
                headers=challenge,
            )
        assert api_key is not None and api_secret is not None  # both checked just above
        credential_uuid, scope = await self._client_matches(api_key, api_secret, challenge, address)
        return Principal("client", credential_uuid, scope, key_hint(api_key))

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

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else 0.0

    def _refuse_throttled(self, address: str, api_key: str | None, header: str) -> None:
        """
        Answer 429 when the source address or the key failed too often
        lately; nothing is read or hashed before this.
        """
        if self.throttle is None:
            return
        scopes = [("address", f"address:{address}")]
        if api_key is not None:
            scopes.append(("key", f"key:{api_key}"))
        for kind, scope in scopes:
            wait = self.throttle.wait(scope)
            if wait is None:
                continue
            if self.observer is not None:
                self.observer.on_auth_throttled(kind)
            seconds = math.ceil(wait)
            what = "this address" if kind == "address" else "this API key"
            raise APIError(
                429,
                f"{header}: too many failed authentications from {what}; retry in {seconds} s",
                {header: "too many failed authentications"},
                code="auth_throttled",
                headers={"Retry-After": str(seconds)},
            )

    def _failed(self, reason: str, address: str, api_key: str | None) -> None:
        """Count one failed authentication; log once when it starts a throttled burst."""
        if self.observer is not None:
            self.observer.on_auth_failure(reason)
        if self.throttle is None:
            return
        scopes = [("address", f"address:{address}", address)]
        if api_key is not None:
            scopes.append(("key", f"key:{api_key}", key_hint(api_key)))
        for kind, scope, shown in scopes:
            if self.throttle.failed(scope):
                log.warn(
                    "authentication failures: {allowed} within {window} s for {kind} {who} "
                    "(last: {reason}); its requests are answered 429 for {window} s at a time "
                    "until they stop",
                    allowed=self.throttle.allowed,
                    window=self.throttle.window,
                    kind=kind,
                    who=shown,
                    reason=reason,
                )

    def _known_unknown(self, api_key: str) -> bool:
        """Whether C{api_key} was found not to exist less than UNKNOWN_KEY_SECONDS ago."""
        until = self._unknown_keys.get(api_key)
        if until is None:
            return False
        if until > self._now():
            return True
        del self._unknown_keys[api_key]
        return False

    def _remember_unknown(self, api_key: str) -> None:
        if len(self._unknown_keys) >= VERIFIED_CACHE_LIMIT:
            self._unknown_keys.clear()
        self._unknown_keys[api_key] = self._now() + UNKNOWN_KEY_SECONDS

    async def _client_matches(
        self, api_key: str, api_secret: str, challenge: dict, address: str
    ) -> tuple[str | None, Scope]:
        digest = hashlib.sha256(api_secret.encode("utf-8")).digest()
        known = self._live_credentials.get(api_key)
        if known is not None and hmac.compare_digest(known[0], digest):
            # Verified before and not archived since (an archive empties
            # this cache before it is acknowledged): no store read, no hash.
            return known[1], known[2]
        self._refuse_throttled(address, api_key, "x-api-key")

        def rejected(reason: str) -> APIError:
            self._failed(reason, address, api_key)
            return APIError(
                401,
                "x-api-key/x-secret-key: unknown API key or wrong secret",
                {"x-api-key": "rejected"},
                headers=challenge,
            )

        if self._known_unknown(api_key):
            raise rejected("unknown_key")
        credential = await self.state.get_credential_by_key(api_key)
        if not credential and self.read_barrier is not None:
            # In a cluster the key may have been created a moment ago through
            # another node: look again once this node has caught up.
            try:
                await maybe(self.read_barrier())
            except StoreUnavailable:
                raise rejected("unknown_key") from None
            credential = await self.state.get_credential_by_key(api_key)
        if not credential:
            self._remember_unknown(api_key)
            raise rejected("unknown_key")
        hashed = credential.get("api_secret_hash") or ""
        if not await self._secret_matches(credential, api_secret, digest, hashed):
            raise rejected("wrong_secret")
        if credential.get("archived_at"):
            self._failed("archived", address, api_key)
            raise APIError(
                401,
                "x-api-key: this credential has been archived",
                {"x-api-key": "archived"},
                headers=challenge,
            )
        if not self.hasher.current(hashed):
            self._upgrade(credential.get("uuid") or "", hashed, api_secret)
        if len(self._live_credentials) >= VERIFIED_CACHE_LIMIT:
            self._live_credentials.clear()
        scope = Scope.of(credential)
        self._live_credentials[api_key] = (digest, credential.get("uuid"), scope)
        return credential.get("uuid"), scope

    async def _secret_matches(
        self, credential: dict, api_secret: str, digest: bytes, hashed: str
    ) -> bool:
        """
        Whether C{api_secret} is the credential's: its keyed hash at once
        (under the current SecretKey or a previous one), a pbkdf2 hash from
        before them through C{verify_secret}.
        """
        if is_keyed(hashed):
            if self.hasher.verify(api_secret, hashed):
                return True
            if self.hasher.verify_previous(api_secret, hashed):
                return True
            uuid = credential.get("uuid") or ""
            if self.hasher.other_key(hashed) and uuid not in self._other_key_logged:
                self._other_key_logged.add(uuid)
                log.warn(
                    "credential {uuid}: its secret was hashed under another SecretKey than "
                    "this node's SecretKey and PreviousSecretKeys; it cannot be verified here "
                    "(every node needs the same SecretKey)",
                    uuid=uuid,
                )
            return False
        key = (credential.get("api_key") or "", digest.hex(), hashed)
        if key in self._verified:
            return True
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
        if ok:
            if len(self._verified) >= VERIFIED_CACHE_LIMIT:
                self._verified.clear()
            self._verified[key] = True
        return ok

    def _upgrade(self, uuid: str, old_hash: str, api_secret: str) -> None:
        """
        Propose replacing a pbkdf2 hash, or a keyed hash under a previous
        SecretKey, by the keyed hash under the current one of the secret just
        verified, without waiting for it; a failure is logged once per
        credential and the next successful use tries again.
        """
        if self.upgrade_hash is None or not uuid or uuid in self._upgrading:
            return
        self._upgrading.add(uuid)
        new_hash = self.hasher.hash(api_secret)

        def failed(failure: Failure) -> None:
            if uuid not in self._upgrade_failed:
                self._upgrade_failed.add(uuid)
                log.warn(
                    "credential {uuid}: replacing its hash (pbkdf2, or under a previous "
                    "SecretKey) by a keyed hash failed ({error}); it is tried again on its "
                    "next use",
                    uuid=uuid,
                    error=failure.getErrorMessage(),
                )

        d = Deferred.fromCoroutine(_call(self.upgrade_hash, uuid, old_hash, new_hash))
        d.addErrback(failed)
        d.addBoth(lambda _: self._upgrading.discard(uuid))

    def on_applied(self, command: Command, result: Result) -> None:
        """
        The proposer's subscriber: forget verified credentials when one is
        archived (or the whole state is replaced), so the archived one is
        refused from the next request on, on every node as it applies; and
        forget unknown keys when one is created.
        """
        if command.op in (Op.ARCHIVE_CREDENTIAL, Op.STATE_RESTORED, Op.DELETE_PROJECT):
            # (A deleted project leaves the scopes that named it.)
            self._live_credentials.clear()
        if command.op in (Op.CREATE_CREDENTIAL, Op.STATE_RESTORED):
            self._unknown_keys.clear()


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return await maybe(fn(*args))


def _source_address(request: IRequest) -> str:
    """The client's address as the connection gives it (a proxy's, behind one)."""
    try:
        peer = request.getClientAddress()
    except Exception:
        return "unknown"
    return str(getattr(peer, "host", None) or "unknown")
