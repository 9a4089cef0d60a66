"""
Sans-IO wire format of the Raft peer transport: length-prefixed frames and the
authenticated handshake.

Every frame is a 4-byte big-endian length followed by that many bytes; the
first byte of a frame body is its kind (hello, challenge, auth, welcome, data).
Nothing here touches sockets, clocks or the reactor, so the format can be
tested byte by byte and reused by any adapter.

The handshake is a mutual challenge-response keyed by a link key derived from
the cluster's shared secret.  The connecting side (client) sends its node id,
the node id it expects to reach and a fresh nonce; the accepting side (server)
answers with its own fresh nonce and a MAC that proves it knows the key; the
client answers with its MAC; the server confirms with a welcome frame.  Both
MACs cover both nonces and both node ids and carry a role label, so neither can
be replayed on another connection nor reflected back at its sender, and the
secret itself never crosses the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import attrs

#: Default largest frame body accepted or sent (16 MiB).
DEFAULT_MAX_FRAME = 16 * 2**20

#: Largest frame accepted before a connection is authenticated: handshake
#: frames are tiny, so an unauthenticated peer cannot make us buffer megabytes.
HANDSHAKE_MAX_FRAME = 256

_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size

#: Frame kinds (first byte of each frame body).
KIND_HELLO = 1
KIND_CHALLENGE = 2
KIND_AUTH = 3
KIND_WELCOME = 4
KIND_DATA = 16

MAGIC = b"S0RAFT"
VERSION = 1
NONCE_SIZE = 32
MAC_SIZE = 32

_HELLO = struct.Struct(f">B{len(MAGIC)}sBQQ{NONCE_SIZE}s")
_CHALLENGE = struct.Struct(f">BQ{NONCE_SIZE}s{MAC_SIZE}s")
_AUTH = struct.Struct(f">B{MAC_SIZE}s")
_NODE_ID_MAX = 2**64 - 1

_KEY_LABEL = b"scheduler0/raft-transport/v1 link key"


class FrameError(Exception):
    """A frame on the wire is malformed (bad length, unknown kind or bad body)."""


class FrameTooLarge(FrameError):
    """A frame is longer than the configured maximum."""


class HandshakeError(Exception):
    """The peer failed the handshake (wrong key, wrong node id, bad message)."""


def encode_frame(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return C{body} with its 4-byte big-endian length prefix."""
    return b"".join(frame_parts(body, max_frame))


def frame_parts(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    """
    Return the length prefix and body as a list for C{writeSequence}, so a
    large body is not copied just to prepend four bytes.
    """
    if not body:
        raise FrameError("frame body must not be empty")
    if len(body) > max_frame:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds max_frame={max_frame}")
    return [_LENGTH.pack(len(body)), body]


def data_frame_parts(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    """
    Return the wire pieces of a data frame carrying C{payload}; the kind byte
    counts towards C{max_frame}.
    """
    size = len(payload) + 1
    if size > max_frame:
        raise FrameTooLarge(f"payload of {len(payload)} bytes exceeds max_frame={max_frame}")
    return [_LENGTH.pack(size) + bytes((KIND_DATA,)), payload]


@attrs.define(eq=False)
class FrameDecoder:
    """
    Incremental frame parser: feed it whatever a read returned, get back the
    complete frame bodies (zero, one or many) in order.

    A length of zero or above C{max_frame} raises L{FrameError} at once, before
    the body is buffered; the caller must then drop the connection.
    """

    max_frame: int = DEFAULT_MAX_FRAME
    _buffer: bytearray = attrs.field(factory=bytearray, init=False)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes and return the frame bodies now complete."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        position = 0
        available = len(buffer)
        while available - position >= HEADER_SIZE:
            (length,) = _LENGTH.unpack_from(buffer, position)
            if length == 0:
                raise FrameError("frame length 0 is malformed")
            if length > self.max_frame:
                raise FrameTooLarge(f"frame length {length} exceeds max_frame={self.max_frame}")
            end = position + HEADER_SIZE + length
            if end > available:
                break
            frames.append(bytes(buffer[position + HEADER_SIZE : end]))
            position = end
        if position:
            del buffer[:position]
        return frames

    @property
    def buffered(self) -> int:
        """Number of bytes received but not yet part of a complete frame."""
        return len(self._buffer)


def frame_kind(body: bytes) -> int:
    """Return the kind byte of a frame body."""
    return body[0]


def derive_link_key(secret_key: bytes) -> bytes:
    """
    Derive the key used for handshake MACs from the cluster secret, so the
    secret itself is used for nothing but this derivation.
    """
    if not isinstance(secret_key, bytes) or not secret_key:
        raise ValueError("secret_key must be non-empty bytes")
    return hmac.new(secret_key, _KEY_LABEL, hashlib.sha256).digest()


def _check_node_id(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _NODE_ID_MAX:
        raise ValueError(f"{name} must be a positive 64-bit integer, got {value!r}")


@attrs.frozen
class Hello:
    """First handshake message, client to server."""

    client_id: int
    server_id: int
    client_nonce: bytes

    def encode(self) -> bytes:
        _check_node_id("client_id", self.client_id)
        _check_node_id("server_id", self.server_id)
        return _HELLO.pack(
            KIND_HELLO, MAGIC, VERSION, self.client_id, self.server_id, self.client_nonce
        )

    @classmethod
    def decode(cls, body: bytes) -> Hello:
        if len(body) != _HELLO.size:
            raise HandshakeError(f"hello frame has {len(body)} bytes, expected {_HELLO.size}")
        kind, magic, version, client_id, server_id, nonce = _HELLO.unpack(body)
        if kind != KIND_HELLO or magic != MAGIC:
            raise HandshakeError("hello frame has a wrong kind or magic")
        if version != VERSION:
            raise HandshakeError(f"hello frame has version {version}, expected {VERSION}")
        if client_id == 0 or server_id == 0:
            raise HandshakeError("hello frame has node id 0")
        return cls(client_id, server_id, nonce)


@attrs.frozen
class Challenge:
    """Second handshake message, server to client: its nonce and its proof."""

    server_id: int
    server_nonce: bytes
    server_mac: bytes

    def encode(self) -> bytes:
        return _CHALLENGE.pack(KIND_CHALLENGE, self.server_id, self.server_nonce, self.server_mac)

    @classmethod
    def decode(cls, body: bytes) -> Challenge:
        if len(body) != _CHALLENGE.size or body[0] != KIND_CHALLENGE:
            raise HandshakeError("challenge frame is malformed")
        _, server_id, nonce, mac = _CHALLENGE.unpack(body)
        return cls(server_id, nonce, mac)


@attrs.frozen
class Auth:
    """Third handshake message, client to server: the client's proof."""

    client_mac: bytes

    def encode(self) -> bytes:
        return _AUTH.pack(KIND_AUTH, self.client_mac)

    @classmethod
    def decode(cls, body: bytes) -> Auth:
        if len(body) != _AUTH.size or body[0] != KIND_AUTH:
            raise HandshakeError("auth frame is malformed")
        return cls(_AUTH.unpack(body)[1])


WELCOME = bytes((KIND_WELCOME,))


def _transcript(client_id: int, server_id: int, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return b"".join(
        (
            MAGIC,
            bytes((VERSION,)),
            struct.pack(">QQ", client_id, server_id),
            client_nonce,
            server_nonce,
        )
    )


def server_proof(
    link_key: bytes, client_id: int, server_id: int, client_nonce: bytes, server_nonce: bytes
) -> bytes:
    """MAC by which the server proves it holds the link key."""
    message = b"server" + _transcript(client_id, server_id, client_nonce, server_nonce)
    return hmac.new(link_key, message, hashlib.sha256).digest()


def client_proof(
    link_key: bytes, client_id: int, server_id: int, client_nonce: bytes, server_nonce: bytes
) -> bytes:
    """MAC by which the client proves it holds the link key."""
    message = b"client" + _transcript(client_id, server_id, client_nonce, server_nonce)
    return hmac.new(link_key, message, hashlib.sha256).digest()


def proofs_equal(expected: bytes, received: bytes) -> bool:
    """Compare two MACs in constant time."""
    return hmac.compare_digest(expected, received)
