"""
Binary wire form of Raft messages and of configuration entries.

``encode(message) -> bytes`` and ``decode(bytes) -> message`` are what the
TCP transport carries as opaque frame payloads.  The layout is a version
byte, a message tag byte (the position in ``MESSAGE_TYPES``), then each
field in declaration order: ints as signed 64-bit big-endian, bools as one
byte, str/bytes as a 32-bit length and the bytes, node sets as a count and
sorted strings, entry tuples as a count and entries.  ``decode`` rejects
anything malformed with :class:`DecodeError`, naming the field at fault.
"""

from __future__ import annotations

import struct

import attrs

from scheduler0.raft.messages import (
    ENTRY_KINDS,
    MESSAGE_TYPES,
    ClusterConfig,
    Entry,
    Message,
)

VERSION = 1

_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_ENTRY_HEAD = struct.Struct(">qqB")


class DecodeError(ValueError):
    """The bytes are not a well-formed message of this protocol version."""


def _schema(cls: type) -> tuple[tuple[str, str], ...]:
    return tuple((f.name, str(f.type)) for f in attrs.fields(cls))


_SCHEMAS = {cls: _schema(cls) for cls in MESSAGE_TYPES}
_TAGS = {cls: tag for tag, cls in enumerate(MESSAGE_TYPES)}


def _put_bytes(out: list[bytes], value: bytes) -> None:
    out.append(_U32.pack(len(value)))
    out.append(value)


def _put(out: list[bytes], kind: str, value: object) -> None:
    # The value's type is the one its schema C{kind} names (the attrs field
    # type); it is not checked again here, once per field of every message,
    # hence the ignores.
    if kind == "int":
        out.append(_I64.pack(value))
    elif kind == "bool":
        out.append(b"\x01" if value else b"\x00")
    elif kind == "str":
        _put_bytes(out, value.encode("utf-8"))  # type: ignore[attr-defined]
    elif kind == "bytes":
        _put_bytes(out, bytes(value))  # type: ignore[call-overload]
    elif kind == "frozenset[str]":
        names = sorted(value)  # type: ignore[call-overload]
        out.append(_U32.pack(len(names)))
        for name in names:
            _put_bytes(out, name.encode("utf-8"))
    elif kind == "tuple[Entry, ...]":
        out.append(_U32.pack(len(value)))  # type: ignore[arg-type]
        for entry in value:  # type: ignore[attr-defined]
            out.append(_ENTRY_HEAD.pack(entry.term, entry.index, entry.kind))
            _put_bytes(out, entry.data)
            _put_bytes(out, entry.request_id.encode("utf-8"))
    else:  # pragma: no cover - schema is fixed
        raise TypeError(kind)


def encode(message: Message) -> bytes:
    """Serialise one peer message."""
    cls = type(message)
    try:
        tag = _TAGS[cls]
    except KeyError:
        raise TypeError(f"not a Raft message: {cls.__name__}") from None
    out = [bytes((VERSION, tag))]
    for name, kind in _SCHEMAS[cls]:
        _put(out, kind, getattr(message, name))
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(f"truncated message in field {field!r}")
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def i64(self, field: str) -> int:
        return _I64.unpack(self.take(8, field))[0]

    def u32(self, field: str) -> int:
        return _U32.unpack(self.take(4, field))[0]

    def blob(self, field: str) -> bytes:
        return self.take(self.u32(field), field)

    def text(self, field: str) -> str:
        try:
            return self.blob(field).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"field {field!r} is not valid UTF-8") from None


def _get(reader: _Reader, kind: str, field: str) -> object:
    if kind == "int":
        return reader.i64(field)
    if kind == "bool":
        flag = reader.take(1, field)
        if flag not in (b"\x00", b"\x01"):
            raise DecodeError(f"field {field!r} is not a boolean")
        return flag == b"\x01"
    if kind == "str":
        return reader.text(field)
    if kind == "bytes":
        return reader.blob(field)
    if kind == "frozenset[str]":
        count = reader.u32(field)
        return frozenset(reader.text(field) for _ in range(count))
    if kind == "tuple[Entry, ...]":
        count = reader.u32(field)
        if count > len(reader.data):
            raise DecodeError(f"field {field!r} claims {count} entries")
        entries = []
        for _ in range(count):
            term, index, entry_kind = _ENTRY_HEAD.unpack(reader.take(_ENTRY_HEAD.size, field))
            if entry_kind not in ENTRY_KINDS:
                raise DecodeError(f"field {field!r} has an entry of unknown kind {entry_kind}")
            data = reader.blob(field)
            request_id = reader.text(field)
            entries.append(Entry(term, index, entry_kind, data, request_id))
        return tuple(entries)
    raise AssertionError(kind)  # pragma: no cover


def decode(data: bytes) -> Message:
    """Parse bytes made by :func:`encode`; raise :class:`DecodeError` otherwise."""
    if len(data) < 2:
        raise DecodeError("message shorter than its 2-byte header")
    if data[0] != VERSION:
        raise DecodeError(f"unsupported message version {data[0]}")
    if data[1] >= len(MESSAGE_TYPES):
        raise DecodeError(f"unknown message tag {data[1]}")
    cls = MESSAGE_TYPES[data[1]]
    reader = _Reader(data)
    reader.pos = 2
    values = {name: _get(reader, kind, name) for name, kind in _SCHEMAS[cls]}
    if reader.pos != len(data):
        raise DecodeError(f"{len(data) - reader.pos} trailing bytes after {cls.__name__}")
    # Each value was decoded as its schema field's type.
    return cls(**values)  # type: ignore[arg-type]


def encode_config(config: ClusterConfig) -> bytes:
    """The data of a CONFIG log entry."""
    out: list[bytes] = [bytes((VERSION,))]
    _put(out, "frozenset[str]", config.voters)
    _put(out, "frozenset[str]", config.learners)
    return b"".join(out)


def decode_config(data: bytes) -> ClusterConfig:
    """Inverse of :func:`encode_config`; :class:`DecodeError` when malformed."""
    if not data or data[0] != VERSION:
        raise DecodeError("config entry has no or an unsupported version byte")
    reader = _Reader(data)
    reader.pos = 1
    voters = _get(reader, "frozenset[str]", "voters")
    learners = _get(reader, "frozenset[str]", "learners")
    if reader.pos != len(data):
        raise DecodeError("trailing bytes after config entry")
    assert isinstance(voters, frozenset) and isinstance(learners, frozenset)
    return ClusterConfig(voters, learners)
