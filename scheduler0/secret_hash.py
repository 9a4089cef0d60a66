"""
How client API secrets are stored and checked: a keyed hash (HMAC-SHA-256
under a key derived from C{SecretKey}) compared in constant time.

API secrets are 256-bit random tokens, so a slow password hash buys nothing
against guessing and makes every failed request expensive. Without the
C{SecretKey} a stolen C{state.db} gives no way to test a guess offline.

Stored form: C{hmac-sha256$<key id>$<hex digest>}. The key id (a digest of
the derived key, not the key) says which C{SecretKey} made the hash, so a
node with another key refuses it plainly instead of by a mismatch. Hashes
made before this scheme (C{$pbkdf2-sha256$...}) are still accepted; the API
replaces each with the keyed hash on its next successful use.
"""

from __future__ import annotations

import hashlib
import hmac

import attrs
from passlib.hash import pbkdf2_sha256

SCHEME = "hmac-sha256"
PREFIX = SCHEME + "$"
LEGACY_PREFIX = "$pbkdf2-sha256$"

# The fixed label of the derivation: a key for API secrets only, unrelated
# to any other key derived from the same SecretKey.
_LABEL = b"scheduler0 client api secret hash v1"


def derive_key(secret_key: str, label: bytes = _LABEL) -> bytes:
    """
    A 32-byte key for one purpose from C{secret_key}: the HKDF steps
    (RFC 5869) with an empty salt, extract then one block of expand with
    C{label} as the info.
    """
    pseudo_random = hmac.new(b"\0" * 32, secret_key.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(pseudo_random, label + b"\x01", hashlib.sha256).digest()


def _hidden(_value: bytes) -> str:
    return "'***'"


@attrs.frozen
class SecretHasher:
    """
    Hashes and checks client API secrets under one derived key; C{repr}
    never shows it.
    """

    key: bytes = attrs.field(repr=_hidden)
    key_id: str = attrs.field(init=False)

    @key_id.default
    def _key_id(self) -> str:
        return hmac.new(self.key, b"key id", hashlib.sha256).hexdigest()[:8]

    @classmethod
    def from_secret_key(cls, secret_key: str) -> SecretHasher:
        """The hasher of a node whose C{.scheduler0} holds C{secret_key}."""
        return cls(derive_key(secret_key))

    def hash(self, secret: str) -> str:
        """The stored form of C{secret}: C{hmac-sha256$<key id>$<hex>}."""
        return f"{PREFIX}{self.key_id}${self._digest(secret)}"

    def verify(self, secret: str, stored: str) -> bool:
        """
        Whether C{secret} matches a keyed hash C{stored} (microseconds,
        constant time); False for one made under another key.
        """
        _, key_id, digest = stored.split("$", 2) if stored.count("$") == 2 else ("", "", "")
        if not hmac.compare_digest(key_id.encode(), self.key_id.encode()):
            return False
        return hmac.compare_digest(self._digest(secret).encode(), digest.encode("ascii", "replace"))

    def _digest(self, secret: str) -> str:
        return hmac.new(self.key, secret.encode("utf-8"), hashlib.sha256).hexdigest()

    def other_key(self, stored: str) -> bool:
        """Whether C{stored} is a keyed hash made under another C{SecretKey}."""
        return is_keyed(stored) and stored.split("$", 2)[1:2] != [self.key_id]


def is_keyed(stored: str) -> bool:
    """Whether C{stored} is a keyed hash (not a legacy pbkdf2 one)."""
    return stored.startswith(PREFIX)


def verify_legacy(secret: str, stored: str) -> bool:
    """A pbkdf2-sha256 hash made before keyed hashes (slow: run it in a thread)."""
    return bool(pbkdf2_sha256.verify(secret, stored))
