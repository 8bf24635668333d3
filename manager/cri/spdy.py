"""SPDY/3.1 framing: the frames kubelet's clients speak (moby/spdystream), encoded and decoded, nothing more.

A frame is a dataclass; `encode_frame` and `FrameReader.read_frame` turn it into bytes and back. Header blocks
(SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams primed with SPDY/3's dictionary, one compression context per
direction per connection: `HeaderCodec` holds both ends and must see every header block of its connection, in
order. The connection and its streams (who may send what, when) live in `manager.cri.spdyconn`.

Wire shapes (SPDY/3 draft, section 2.2):
    control: 1 | version(15) | type(16) | flags(8) | length(24) | payload
    data:    0 | stream id(31)           | flags(8) | length(24) | payload
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from shimproto.errors import ShimdError

VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes.
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION = 1, 2, 3, 4
CANCEL, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_IN_USE = 5, 6, 7, 8
STREAM_ALREADY_CLOSED, FRAME_TOO_LARGE = 9, 11

# GOAWAY status codes.
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2

SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 64 * 1024
MAX_LENGTH = (1 << 24) - 1
# A header block bigger than this (decompressed) is refused: nothing kubelet's clients send comes close.
MAX_HEADER_BLOCK = 256 * 1024

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges age "
    "allow authorization cache-control connection content-base content-encoding content-language content-length "
    "content-location content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status 200 OK version HTTP/1.1 url public set-cookie "
    "keep-alive origin"
).split()
_WORDS[_WORDS.index("200") : _WORDS.index("OK") + 1] = ["200 OK"]  # the one entry with a space
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# SPDY/3's zlib dictionary (draft 3, 2.6.10.1): length-prefixed common header words, then a raw tail.
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class ProtocolError(ShimdError):
    """The peer sent bytes that are not SPDY/3.1 (the connection cannot go on)."""

    code = "invalid_argument"


class ConnectionClosed(ShimdError):
    """The peer closed the connection (EOF on a frame boundary or inside one)."""

    code = "unavailable"


Headers = dict[str, list[str]]


@dataclass
class SynStream:
    stream_id: int
    headers: Headers
    flags: int = 0
    associated_id: int = 0
    priority: int = 0


@dataclass
class SynReply:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass
class RstStream:
    stream_id: int
    status: int


@dataclass
class Settings:
    values: dict[int, int] = field(default_factory=dict)  # id -> value (the per-entry flags are dropped)
    flags: int = 0


@dataclass
class Ping:
    ping_id: int


@dataclass
class GoAway:
    last_good_id: int
    status: int = GOAWAY_OK


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass
class Data:
    stream_id: int
    data: bytes
    flags: int = 0


Frame = SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate | Data


class HeaderCodec:
    """Both zlib contexts of one connection: one compresses what we send, one inflates what we receive.

    Each block is one zlib sync flush of the sending context, so blocks must be encoded and decoded in the order
    they cross the wire (the connection's write lock and single reader thread see to that)."""

    def __init__(self) -> None:
        self._out = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._in = zlib.decompressobj(15, DICTIONARY)

    def encode(self, headers: Headers) -> bytes:
        block = [struct.pack(">I", len(headers))]
        for name, values in headers.items():
            n = name.lower().encode()
            v = b"\x00".join(x.encode() for x in values)
            block += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
        return self._out.compress(b"".join(block)) + self._out.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, payload: bytes) -> Headers:
        try:
            raw = self._in.decompress(payload, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise ProtocolError(f"decompress header block: {e}") from None
        if self._in.unconsumed_tail:
            raise ProtocolError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        return _parse_block(raw)


def _parse_block(raw: bytes) -> Headers:
    def take(off: int) -> tuple[bytes, int]:
        if off + 4 > len(raw):
            raise ProtocolError("header block truncated")
        (n,) = struct.unpack_from(">I", raw, off)
        if off + 4 + n > len(raw):
            raise ProtocolError("header block truncated")
        return raw[off + 4 : off + 4 + n], off + 4 + n

    if len(raw) < 4:
        raise ProtocolError("header block truncated")
    (count,) = struct.unpack_from(">I", raw, 0)
    off, headers = 4, {}
    for _ in range(count):
        name, off = take(off)
        value, off = take(off)
        key = name.decode("latin-1").lower()
        if not key:
            raise ProtocolError("empty header name")
        headers.setdefault(key, []).extend(value.decode("latin-1").split("\x00"))
    if off != len(raw):
        raise ProtocolError("trailing bytes after the header block")
    return headers


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ProtocolError(f"control frame of {len(payload)} bytes is too large")
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def encode_frame(frame: Frame, codec: HeaderCodec) -> bytes:
    """The bytes of one frame; header blocks go through `codec` (so call this in wire order)."""
    if isinstance(frame, Data):
        if len(frame.data) > MAX_LENGTH:
            raise ProtocolError(f"data frame of {len(frame.data)} bytes is too large")
        return struct.pack(">II", frame.stream_id & 0x7FFFFFFF, (frame.flags << 24) | len(frame.data)) + frame.data
    if isinstance(frame, SynStream):
        head = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0)
        return _control(SYN_STREAM, frame.flags, head + codec.encode(frame.headers))
    if isinstance(frame, SynReply):
        return _control(SYN_REPLY, frame.flags, struct.pack(">I", frame.stream_id) + codec.encode(frame.headers))
    if isinstance(frame, HeadersFrame):
        return _control(HEADERS, frame.flags, struct.pack(">I", frame.stream_id) + codec.encode(frame.headers))
    if isinstance(frame, RstStream):
        return _control(RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
    if isinstance(frame, Settings):
        body = b"".join(struct.pack(">II", k & 0xFFFFFF, v) for k, v in frame.values.items())
        return _control(SETTINGS, frame.flags, struct.pack(">I", len(frame.values)) + body)
    if isinstance(frame, Ping):
        return _control(PING, 0, struct.pack(">I", frame.ping_id))
    if isinstance(frame, GoAway):
        return _control(GOAWAY, 0, struct.pack(">II", frame.last_good_id, frame.status))
    if isinstance(frame, WindowUpdate):
        return _control(WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta & 0x7FFFFFFF))
    raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameReader:
    """Reads whole frames from a blocking binary file (a socket's makefile, or http.server's rfile).

    Unknown control frame types are skipped, as the draft asks; an unsupported version is a ProtocolError."""

    def __init__(self, rfile: BinaryIO, codec: HeaderCodec) -> None:
        self._r = rfile
        self._codec = codec

    def _exact(self, n: int, what: str) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._r.read(n - len(buf))
            if not chunk:
                raise ConnectionClosed(f"connection closed while reading {what}")
            buf += chunk
        return buf

    def read_frame(self) -> Frame:
        while True:
            first = self._r.read(8)
            if not first:
                raise ConnectionClosed("connection closed")
            head = first + (self._exact(8 - len(first), "a frame header") if len(first) < 8 else b"")
            word, flags_len = struct.unpack(">II", head)
            flags, length = flags_len >> 24, flags_len & 0xFFFFFF
            version, ftype = (word >> 16) & 0x7FFF, word & 0xFFFF
            if word & 0x80000000 and version != VERSION:  # before reading a payload that may never come
                raise ProtocolError(f"unsupported SPDY version {version}")
            payload = self._exact(length, "a frame payload")
            if not word & 0x80000000:
                return Data(word & 0x7FFFFFFF, payload, flags)
            frame = self._control(ftype, flags, payload)
            if frame is not None:
                return frame

    def _control(self, ftype: int, flags: int, p: bytes) -> Frame | None:
        def need(n: int) -> None:
            if len(p) < n:
                raise ProtocolError(f"control frame type {ftype} of {len(p)} bytes is too short")

        if ftype == SYN_STREAM:
            need(10)
            sid, assoc, prio = struct.unpack_from(">IIB", p)
            return SynStream(sid & 0x7FFFFFFF, self._codec.decode(p[10:]), flags, assoc & 0x7FFFFFFF, prio >> 5)
        if ftype in (SYN_REPLY, HEADERS):
            need(4)
            sid = struct.unpack_from(">I", p)[0] & 0x7FFFFFFF
            cls = SynReply if ftype == SYN_REPLY else HeadersFrame
            return cls(sid, self._codec.decode(p[4:]), flags)
        if ftype == RST_STREAM:
            need(8)
            sid, status = struct.unpack_from(">II", p)
            return RstStream(sid & 0x7FFFFFFF, status)
        if ftype == SETTINGS:
            need(4)
            (count,) = struct.unpack_from(">I", p)
            need(4 + 8 * count)
            pairs = (struct.unpack_from(">II", p, 4 + 8 * i) for i in range(count))
            return Settings({k & 0xFFFFFF: v for k, v in pairs}, flags)
        if ftype == PING:
            need(4)
            return Ping(struct.unpack_from(">I", p)[0])
        if ftype == GOAWAY:
            need(4)
            last = struct.unpack_from(">I", p)[0] & 0x7FFFFFFF
            return GoAway(last, struct.unpack_from(">I", p, 4)[0] if len(p) >= 8 else GOAWAY_OK)
        if ftype == WINDOW_UPDATE:
            need(8)
            sid, delta = struct.unpack_from(">II", p)
            return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        return None  # unknown control frame: ignored (SPDY/3 2.2.1)
