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

After a rotation of C{SecretKey} the node may be given its previous keys
(C{PreviousSecretKeys}): a hash made under one of them still verifies, and
the API replaces it with the hash under the current key on its next
successful use, so a previous key can be dropped once no hash is left under it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence

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


def _keys(keys: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(keys)


@attrs.frozen
class SecretHasher:
    """
    Hashes and checks client API secrets under one derived key; C{repr}
    never shows it.
    """

    key: bytes = attrs.field(repr=_hidden)
    # Keys of previous SecretKeys: hashes under them verify, and are replaced.
    previous_keys: tuple[bytes, ...] = attrs.field(default=(), repr=_hidden, converter=_keys)
    key_id: str = attrs.field(init=False)
    previous_key_ids: tuple[str, ...] = attrs.field(init=False)

    @key_id.default
    def _key_id(self) -> str:
        return _id_of(self.key)

    @previous_key_ids.default
    def _previous_key_ids(self) -> tuple[str, ...]:
        return tuple(_id_of(key) for key in self.previous_keys)

    @classmethod
    def from_secret_key(cls, secret_key: str, previous: Sequence[str] = ()) -> SecretHasher:
        """
        The hasher of a node whose C{.scheduler0} holds C{secret_key} and, as
        C{PreviousSecretKeys}, C{previous}.
        """
        current = derive_key(secret_key)
        older = tuple(derive_key(key) for key in previous if key and key != secret_key)
        return cls(current, older)

    def hash(self, secret: str) -> str:
        """The stored form of C{secret}: C{hmac-sha256$<key id>$<hex>}."""
        return f"{PREFIX}{self.key_id}${self._digest(secret)}"

    def verify(self, secret: str, stored: str) -> bool:
        """
        Whether C{secret} matches a keyed hash C{stored} (microseconds,
        constant time); False for one made under another key.
        """
        return self._verify_under(self.key, self.key_id, secret, stored)

    def verify_previous(self, secret: str, stored: str) -> bool:
        """
        Whether C{secret} matches a keyed hash C{stored} made under one of the
        previous keys (a hash to replace by L{hash} once this is True).
        """
        return any(
            self._verify_under(key, key_id, secret, stored)
            for key, key_id in zip(self.previous_keys, self.previous_key_ids, strict=True)
        )

    def _verify_under(self, key: bytes, key_id: str, secret: str, stored: str) -> bool:
        _, stored_id, digest = stored.split("$", 2) if stored.count("$") == 2 else ("", "", "")
        if not hmac.compare_digest(stored_id.encode(), key_id.encode()):
            return False
        expected = _digest(key, secret).encode()
        return hmac.compare_digest(expected, digest.encode("ascii", "replace"))

    def _digest(self, secret: str) -> str:
        return _digest(self.key, secret)

    def current(self, stored: str) -> bool:
        """Whether C{stored} is a keyed hash made under the current key (nothing to replace)."""
        return key_id_of(stored) == self.key_id

    def other_key(self, stored: str) -> bool:
        """Whether C{stored} is a keyed hash made under a key this hasher does not hold."""
        found = key_id_of(stored)
        return found is not None and found != self.key_id and found not in self.previous_key_ids

    def classify(self, key_ids: Mapping[str | None, int]) -> dict[str, int]:
        """
        Counts of stored hashes by key id (None: pbkdf2) as the kinds an
        operator rotating SecretKey watches: C{current_key}, C{previous_keys}
        (still to be replaced on use), C{pbkdf2}, C{unknown_key} (neither).
        """
        kinds = {"current_key": 0, "previous_keys": 0, "pbkdf2": 0, "unknown_key": 0}
        for key_id, count in key_ids.items():
            if key_id is None:
                kinds["pbkdf2"] += count
            elif key_id == self.key_id:
                kinds["current_key"] += count
            elif key_id in self.previous_key_ids:
                kinds["previous_keys"] += count
            else:
                kinds["unknown_key"] += count
        return kinds


def _id_of(key: bytes) -> str:
    return hmac.new(key, b"key id", hashlib.sha256).hexdigest()[:8]


def _digest(key: bytes, secret: str) -> str:
    return hmac.new(key, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def key_id_of(stored: str) -> str | None:
    """The key id a keyed hash names, or None for a hash that is not keyed."""
    if not is_keyed(stored):
        return None
    return stored.split("$", 2)[1]


def is_keyed(stored: str) -> bool:
    """Whether C{stored} is a keyed hash (not a legacy pbkdf2 one)."""
    return stored.startswith(PREFIX)


def verify_legacy(secret: str, stored: str) -> bool:
    """A pbkdf2-sha256 hash made before keyed hashes (slow: run it in a thread)."""
    return bool(pbkdf2_sha256.verify(secret, stored))
