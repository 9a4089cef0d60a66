"""
Signing secrets at rest: sealed with AES-GCM under a key derived from the
node's C{SecretKey}, so a copied data directory, snapshot or backup does not
give away the secrets that sign callbacks.

The proposer seals a secret before it proposes the command (the nonce is its
own random choice), so every node applies the same ciphertext and the state
machine stays deterministic; the signer opens the secrets when it loads them.
A stored value reads C{s0seal:v1:<key id>:<base64 nonce + ciphertext>}; a
value without that prefix is a secret stored in plain text by an earlier
release, which still signs until it is sealed (L{SecretSealer.open} passes it
through).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Sequence

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "s0seal:v1:"

_KEY_LABEL = b"scheduler0 signing secrets at rest v1"
_ID_LABEL = b"scheduler0 sealing key id v1"
_AAD = b"scheduler0 signing secret"
_NONCE_BYTES = 12


class SealError(Exception):
    """A sealed secret cannot be opened: another SecretKey sealed it, or it is damaged."""


def derive_sealing_key(secret_key: str) -> bytes:
    """The 256-bit AES key for secrets at rest, derived from C{SecretKey}."""
    if not secret_key:
        raise ValueError("SecretKey must not be empty")
    return hmac.new(secret_key.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short public name of a sealing key (it tells keys apart, it reveals nothing of them)."""
    return hmac.new(key, _ID_LABEL, hashlib.sha256).hexdigest()[:8]


def is_sealed(stored: str) -> bool:
    """Whether a stored value is sealed (else it is a plain text secret of an earlier release)."""
    return stored.startswith(PREFIX)


def sealed_key_id(stored: str) -> str | None:
    """The id of the key that sealed C{stored}, or C{None} for a plain text value."""
    if not is_sealed(stored):
        return None
    return stored[len(PREFIX) :].split(":", 1)[0]


@attrs.frozen
class SecretSealer:
    """Seals and opens signing secrets under one key derived from a C{SecretKey}."""

    key: bytes = attrs.field(repr=False)
    random_bytes: Callable[[int], bytes] = attrs.field(default=os.urandom, repr=False)
    # Sealers of the node's PreviousSecretKeys: L{open} uses them for values
    # they sealed (a rotation's stragglers); nothing is sealed under them.
    previous: tuple[SecretSealer, ...] = attrs.field(default=(), repr=False)

    @classmethod
    def from_secret_key(cls, secret_key: str, previous: Sequence[str] = ()) -> SecretSealer:
        """
        The sealer of a node whose C{SecretKey} is C{secret_key} and whose
        C{PreviousSecretKeys} are C{previous}.
        """
        older = tuple(cls(derive_sealing_key(key)) for key in previous if key and key != secret_key)
        return cls(derive_sealing_key(secret_key), previous=older)

    @property
    def key_id(self) -> str:
        """This sealer's key id, as written in the values it seals."""
        return key_id(self.key)

    def seal(self, secret: str) -> str:
        """C{secret} sealed for storage, under a fresh random nonce."""
        nonce = self.random_bytes(_NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, secret.encode("utf-8"), _AAD)
        encoded = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{PREFIX}{self.key_id}:{encoded}"

    def open(self, stored: str) -> str:
        """
        The secret in a stored value: opened when sealed, as it is when plain
        text. Raises L{SealError} naming both key ids when another key sealed it.
        """
        if not is_sealed(stored):
            return stored
        sealed_id, _, encoded = stored[len(PREFIX) :].partition(":")
        for older in self.previous:
            if sealed_id == older.key_id and sealed_id != self.key_id:
                return older.open(stored)
        if sealed_id != self.key_id:
            raise SealError(
                f"a signing secret was sealed under key id {sealed_id}, but this node's "
                f"SecretKey has key id {self.key_id}: every node needs the SecretKey "
                "the secrets were sealed with (see 'Rotating SecretKey' in README)"
            )
        try:
            raw = base64.b64decode(encoded, validate=True)
            opened = AESGCM(self.key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
        except (InvalidTag, ValueError, binascii.Error):
            raise SealError(
                f"a signing secret sealed under key id {sealed_id} is damaged"
            ) from None
        return opened.decode("utf-8")

    def reseal(self, stored: str, new: SecretSealer) -> str:
        """A stored value (sealed under this key, or plain text) sealed under C{new}."""
        return new.seal(self.open(stored))
