"""
Signed callbacks (SPEC §9): every callback POST carries

    X-Scheduler0-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]

where each C{v1} is HMAC-SHA256 over C{"<t>." + body} with one signing secret
of a project whose executions are in the body. A project has one current
secret; after a rotation the previous one signs too until its grace period
ends, so a receiver can switch secrets without dropping a callback. A
receiver accepts the POST when C{t} is recent and any C{v1} matches a secret
it holds (L{verify} is the reference recipe).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from scheduler0.sealing import SealError, SecretSealer
from scheduler0.store.commands import Op, Result
from scheduler0.timeutil import parse_instant

if TYPE_CHECKING:
    from scheduler0.store.state import StateStore

log = Logger()

HEADER = "X-Scheduler0-Signature"

# What a receiver should allow between t and its own clock.
DEFAULT_TOLERANCE_S = 300

# Commands after which the signer reloads the secrets it holds.
RELOAD_ON = frozenset(
    {
        Op.CREATE_PROJECT,
        Op.DELETE_PROJECT,
        Op.ROTATE_SIGNING_SECRET,
        Op.RESEAL_SIGNING_SECRETS,
        Op.STATE_RESTORED,
    }
)


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of C{"<timestamp>." + body} under C{secret}."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str | bytes], timestamp: int, body: bytes) -> str:
    """The header value signing C{body} at C{timestamp} with each of C{secrets}."""
    parts = [f"t={timestamp}"]
    parts.extend(f"v1={signature(secret, timestamp, body)}" for secret in secrets)
    return ",".join(parts)


def verify(
    header: str,
    body: bytes,
    secret: str | bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """
    Whether C{header} proves C{body} was signed with C{secret} within
    C{tolerance_s} of C{now}: the check a callback receiver makes.
    """
    timestamp = None
    candidates = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    # Every candidate is compared, so the time taken does not tell which matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


@attrs.define(eq=False)
class CallbackSigner:
    """
    The executor's C{sign} hook: holds every project's live signing secrets
    (loaded from the state machine, reloaded after the commands that change
    them) and signs each callback body with those of the projects in it.
    The stored secrets are sealed (L{scheduler0.sealing}); C{sealer} opens
    them. A secret this node's key cannot open (resealed under a new
    SecretKey this node does not have yet) keeps signing with what it held.
    """

    clock: IReactorTime
    state: StateStore
    sealer: SecretSealer | None = None
    _secrets: dict[str, list[tuple[str, float | None]]] = attrs.field(factory=dict)
    _loading: bool = False
    _again: bool = False

    def load(self) -> Deferred:
        """Read the secrets from the state machine (again)."""
        if self._loading:
            # A reload during a reload: read once more when this one ends.
            self._again = True
            return succeed(None)
        self._loading = True
        return Deferred.fromCoroutine(self._load())

    async def _load(self) -> None:
        try:
            while True:
                self._again = False
                stored = await self.state.signing_secrets()
                self._secrets = self._opened(stored)
                if not self._again:
                    return
        except Exception:
            log.failure("loading the callback signing secrets failed")
        finally:
            self._loading = False

    def _opened(
        self, stored: dict[str, list[tuple[str, str | None]]]
    ) -> dict[str, list[tuple[str, float | None]]]:
        """The stored secrets opened, each with its expiry instant (None: current)."""
        opened: dict[str, list[tuple[str, float | None]]] = {}
        problems: list[str] = []
        for project, rows in stored.items():
            held = dict((expires, secret) for secret, expires in self._secrets.get(project, ()))
            for value, expires_at in rows:
                expires = None if expires_at is None else parse_instant(expires_at).timestamp()
                try:
                    secret = value if self.sealer is None else self.sealer.open(value)
                except SealError as error:
                    problems.append(str(error))
                    if expires not in held:
                        continue
                    secret = held[expires]
                opened.setdefault(project, []).append((secret, expires))
        if problems:
            log.error(
                "{count} callback signing secrets cannot be opened: {problem}",
                count=len(problems),
                problem=problems[0],
            )
        return opened

    def on_applied(self, command: Any, result: Result) -> None:
        """The proposer's subscriber: reload after a change of secrets."""
        if command.op in RELOAD_ON and result.ok:
            self.load()

    def secrets_for(self, projects: Iterable[str]) -> list[str]:
        """The secrets that sign now for C{projects}, current ones first."""
        now = self.clock.seconds()
        current: list[str] = []
        previous: list[str] = []
        for project in sorted(set(projects)):
            for secret, expires in self._secrets.get(project, ()):
                if expires is None:
                    current.append(secret)
                elif expires > now:
                    previous.append(secret)
        return current + previous

    def sign(self, body: bytes, deliveries: list[Any]) -> dict[str, str]:
        """The headers for one callback POST of C{deliveries} with C{body}."""
        secrets = self.secrets_for(d.project_uuid for d in deliveries)
        if not secrets:
            return {}
        return {HEADER: signature_header(secrets, int(self.clock.seconds()), body)}
