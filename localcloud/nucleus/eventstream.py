"""AWS event-stream framing (the transport under Greengrass IPC), both directions.

A frame, all integers big-endian::

    u32 total_length | u32 headers_length | u32 crc32(first 8 bytes)
    headers | payload | u32 crc32(everything before it)

A header is ``u8 name_length, name (UTF-8), u8 type, value``. Values by type: 0 true
and 1 false (no bytes), 2 i8, 3 i16, 4 i32, 5 i64, 6 bytes and 7 UTF-8 string (u16
length prefix), 8 timestamp (i64 milliseconds since the epoch), 9 UUID (16 bytes).

Decoding is strict: any inconsistency raises :class:`EventStreamError` and the
caller is expected to drop the connection (a stream cannot resynchronise).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

PRELUDE_LENGTH = 12
TRAILER_LENGTH = 4
MIN_FRAME_LENGTH = PRELUDE_LENGTH + TRAILER_LENGTH
#: The limits of the AWS C implementation.
MAX_FRAME_LENGTH = 16 * 1024 * 1024
MAX_HEADERS_LENGTH = 128 * 1024

_PRELUDE = struct.Struct(">III")
_U32 = struct.Struct(">I")


class EventStreamError(ValueError):
    """Malformed event-stream data: the connection must be closed."""


class HeaderType(IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTES = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


_INT_FORMATS = {
    HeaderType.BYTE: struct.Struct(">b"),
    HeaderType.INT16: struct.Struct(">h"),
    HeaderType.INT32: struct.Struct(">i"),
    HeaderType.INT64: struct.Struct(">q"),
    HeaderType.TIMESTAMP: struct.Struct(">q"),
}
_U16 = struct.Struct(">H")


@dataclass(frozen=True)
class Header:
    """One typed header. ``value`` is bool, int, bytes, str or uuid.UUID."""

    name: str
    type: HeaderType
    value: Any

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        return cls(name, HeaderType.STRING, value)

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        return cls(name, HeaderType.INT32, value)

    @classmethod
    def boolean(cls, name: str, value: bool) -> Header:
        return cls(name, HeaderType.BOOL_TRUE if value else HeaderType.BOOL_FALSE, value)


@dataclass
class Message:
    """A decoded frame: ordered headers and the raw payload."""

    headers: list[Header] = field(default_factory=list)
    payload: bytes = b""

    def get(self, name: str, default: Any = None) -> Any:
        """The value of the first header called ``name`` (case-insensitive)."""
        lowered = name.lower()
        for header in self.headers:
            if header.name.lower() == lowered:
                return header.value
        return default


# -- encoding --------------------------------------------------------------------------
def _encode_header(header: Header) -> bytes:
    name = header.name.encode()
    if not 1 <= len(name) <= 255:
        raise ValueError(f"header name length must be 1..255: {header.name!r}")
    kind = HeaderType(header.type)
    out = bytes([len(name)]) + name + bytes([kind])
    value = header.value
    if kind in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        return out
    if kind in _INT_FORMATS:
        return out + _INT_FORMATS[kind].pack(int(value))
    if kind in (HeaderType.BYTES, HeaderType.STRING):
        data = value.encode() if kind is HeaderType.STRING else bytes(value)
        if len(data) > 0xFFFF:
            raise ValueError(f"header {header.name!r} value is too long")
        return out + _U16.pack(len(data)) + data
    # UUID
    data = value.bytes if isinstance(value, uuid.UUID) else bytes(value)
    if len(data) != 16:
        raise ValueError("a UUID header value is 16 bytes")
    return out + data


def encode_headers(headers: Iterable[Header]) -> bytes:
    return b"".join(_encode_header(h) for h in headers)


def encode(headers: Iterable[Header], payload: bytes = b"") -> bytes:
    """One complete frame."""
    header_bytes = encode_headers(headers)
    total = PRELUDE_LENGTH + len(header_bytes) + len(payload) + TRAILER_LENGTH
    if total > MAX_FRAME_LENGTH or len(header_bytes) > MAX_HEADERS_LENGTH:
        raise ValueError("frame too large")
    prelude = struct.pack(">II", total, len(header_bytes))
    prelude += _U32.pack(zlib.crc32(prelude))
    body = prelude + header_bytes + bytes(payload)
    return body + _U32.pack(zlib.crc32(body))


# -- decoding --------------------------------------------------------------------------
def decode_headers(data: bytes) -> list[Header]:
    """Parse a complete header block; raise EventStreamError on any inconsistency."""
    headers: list[Header] = []
    view = memoryview(data)
    pos = 0
    end = len(data)

    def take(count: int) -> bytes:
        nonlocal pos
        if pos + count > end:
            raise EventStreamError("header block truncated")
        chunk = bytes(view[pos : pos + count])
        pos += count
        return chunk

    while pos < end:
        name_length = take(1)[0]
        if name_length == 0:
            raise EventStreamError("empty header name")
        try:
            name = take(name_length).decode()
        except UnicodeDecodeError as exc:
            raise EventStreamError("header name is not UTF-8") from exc
        try:
            kind = HeaderType(take(1)[0])
        except ValueError as exc:
            raise EventStreamError(f"unknown type for header {name!r}") from exc
        value: Any
        if kind is HeaderType.BOOL_TRUE:
            value = True
        elif kind is HeaderType.BOOL_FALSE:
            value = False
        elif kind in _INT_FORMATS:
            fmt = _INT_FORMATS[kind]
            value = fmt.unpack(take(fmt.size))[0]
        elif kind in (HeaderType.BYTES, HeaderType.STRING):
            raw = take(_U16.unpack(take(2))[0])
            if kind is HeaderType.STRING:
                try:
                    value = raw.decode()
                except UnicodeDecodeError as exc:
                    raise EventStreamError(f"header {name!r} is not UTF-8") from exc
            else:
                value = raw
        else:
            value = uuid.UUID(bytes=take(16))
        headers.append(Header(name, kind, value))
    return headers


def decode(frame: bytes) -> Message:
    """Decode exactly one complete frame."""
    decoder = FrameDecoder()
    messages = decoder.feed(frame)
    if len(messages) != 1 or decoder.buffered:
        raise EventStreamError("expected exactly one complete frame")
    return messages[0]


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole messages back."""

    def __init__(self, max_frame_length: int = MAX_FRAME_LENGTH) -> None:
        self._buffer = bytearray()
        self._max = max_frame_length
        self._failed = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Append ``data``; return every message now complete, in order.

        Raises EventStreamError on a bad prelude CRC, message CRC, or lengths; after
        that the decoder refuses further input.
        """
        if self._failed:
            raise EventStreamError("decoder already failed")
        self._buffer += data
        messages: list[Message] = []
        try:
            while len(self._buffer) >= PRELUDE_LENGTH:
                total, headers_length, prelude_crc = _PRELUDE.unpack_from(self._buffer)
                if zlib.crc32(self._buffer[:8]) != prelude_crc:
                    raise EventStreamError("prelude CRC mismatch")
                if total < MIN_FRAME_LENGTH or total > self._max:
                    raise EventStreamError(f"bad frame length {total}")
                if headers_length > MAX_HEADERS_LENGTH or headers_length > total - MIN_FRAME_LENGTH:
                    raise EventStreamError(f"bad headers length {headers_length}")
                if len(self._buffer) < total:
                    break
                frame = bytes(self._buffer[:total])
                del self._buffer[:total]
                (message_crc,) = _U32.unpack_from(frame, total - TRAILER_LENGTH)
                if zlib.crc32(frame[: total - TRAILER_LENGTH]) != message_crc:
                    raise EventStreamError("message CRC mismatch")
                header_end = PRELUDE_LENGTH + headers_length
                headers = decode_headers(frame[PRELUDE_LENGTH:header_end])
                messages.append(Message(headers, frame[header_end : total - TRAILER_LENGTH]))
        except EventStreamError:
            self._failed = True
            self._buffer.clear()
            raise
        return messages
