"""Append-only record files, shared by the shim's event journal and the manager's.

Each record is one write(2) of a frame: the byte 0xc1 (which msgpack never uses), the payload's length and CRC-32
(4 bytes each, big-endian), then the payload, a msgpack map. A process crash can leave at most a torn last frame;
other damage (a disk error, a stray write, an edit) anywhere in the file is found by the check. Files written before
frames existed hold bare msgpack maps; both kinds are read, also mixed in one file.

Reading (`read`) keeps every record that checks out, in file order, skips what does not (resynchronising at the
next frame that checks out) and reports each bad stretch by offset and length, so the owner of the file can move
the bad bytes aside and say so (`recover`). A reader never sees a record that was not completely written.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack

from .model import ID_RE

MAGIC = 0xC1
HEAD = struct.Struct(">BII")  # magic, payload length, crc32 of the payload
MAX_RECORD = 1 << 20  # a frame that claims more is damage, not a record
_MAP_FIRST = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])  # how a bare msgpack map starts


def is_event(rec: dict, seq_key: str = "seq") -> bool:
    """Has rec what every reader of an event needs: a valid container id, a type, a positive sequence number?"""
    return isinstance(rec.get("id"), str) and bool(ID_RE.fullmatch(rec["id"])) and isinstance(rec.get("type"), str) \
        and all(isinstance(rec.get(k), int) and not isinstance(rec[k], bool) and rec[k] > 0
                for k in {"seq", seq_key})


def next_after(records: list[dict], key: str, lost_bytes: int) -> int:
    """The first sequence number free for certain: past every record kept and past as many records as the bytes
    moved aside could have held (a frame is at least 16 bytes), so no number is ever given out twice."""
    top = max((r[key] for r in records), default=0)
    return top + 1 + (lost_bytes // 16 + 1 if lost_bytes else 0)


def open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def frame(record: dict) -> bytes:
    payload = msgpack.packb(record, use_bin_type=True)
    return HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def append(fd: int, record: dict) -> None:
    os.write(fd, frame(record))


@dataclass
class Read:
    records: list[dict] = field(default_factory=list)
    bad: list[tuple[int, int, str]] = field(default_factory=list)  # (offset, length, why) of each bad stretch
    size: int = 0  # bytes read
    torn_tail: bool = False  # the last bad stretch is an unfinished last frame (a crash mid-write)


def _frame_at(data: bytes, off: int) -> tuple[object, int] | None:
    """(the decoded payload, the frame's end) if a whole frame that checks out starts at off."""
    if off + HEAD.size > len(data):
        return None
    magic, n, crc = HEAD.unpack_from(data, off)
    end = off + HEAD.size + n
    if magic != MAGIC or n > MAX_RECORD or end > len(data):
        return None
    payload = data[off + HEAD.size:end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False), end
    except (ValueError, TypeError, msgpack.UnpackException):  # TypeError: a map key that cannot be one (a list)
        return None


def _bare_at(data: bytes, off: int) -> tuple[object, int] | None:
    """(a bare msgpack map, its end) if one starts at off (the format before frames)."""
    if data[off] not in _MAP_FIRST:
        return None
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(data) - off + 1)
    unpacker.feed(data[off:])
    try:
        obj = unpacker.unpack()
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.OutOfData):  # TypeError: a list as a map key
        return None
    return obj, off + unpacker.tell()


def parse(data: bytes, valid: Callable[[dict], bool] = lambda r: True) -> Read:
    """The records of data that check out and that valid() accepts; the rest reported as bad stretches."""
    out = Read(size=len(data))
    off, bad_from = 0, -1
    while off < len(data):
        got = _frame_at(data, off) if data[off] == MAGIC else _bare_at(data, off)
        ok = got is not None and isinstance(got[0], dict) and valid(got[0])
        if ok:
            assert got is not None
            if bad_from >= 0:
                out.bad.append((bad_from, off - bad_from, "damaged bytes"))
                bad_from = -1
            out.records.append(got[0])  # type: ignore[arg-type]
            off = got[1]
            continue
        if got is not None and bad_from < 0:  # whole, but not a record the owner can use
            out.bad.append((off, got[1] - off, "a record without the fields it needs"))
            off = got[1]
            continue
        if bad_from < 0:
            bad_from = off
        nxt = data.find(bytes([MAGIC]), off + 1)
        off = nxt if nxt >= 0 else len(data)
    if bad_from >= 0:
        out.bad.append((bad_from, len(data) - bad_from, "damaged bytes"))
        out.torn_tail = data[bad_from] == MAGIC and _torn(data, bad_from)
    return out


def _torn(data: bytes, off: int) -> bool:
    """Does a frame start at off that the file ends in the middle of (what a crash mid-write leaves)?"""
    if off + HEAD.size > len(data):
        return True
    _, n, _ = HEAD.unpack_from(data, off)
    return n <= MAX_RECORD and off + HEAD.size + n > len(data)


def read(path: str, valid: Callable[[dict], bool] = lambda r: True) -> Read:
    """parse() of path's bytes (nothing if it does not exist)."""
    try:
        with open(path, "rb") as f:
            return parse(f.read(), valid)
    except FileNotFoundError:
        return Read()


def load(path: str, valid: Callable[[dict], bool] = lambda r: True) -> list[dict]:
    """Every record of path that checks out (a reader that repairs nothing: see recover)."""
    return read(path, valid).records


def recover(path: str, valid: Callable[[dict], bool], say: Callable[[str], None]) -> tuple[list[dict], int]:
    """The good records of path, for the process that owns it and is about to append to it. Bad stretches other
    than a torn last frame are moved aside to path.bad (appended, each after a line naming its offset and length)
    and path is rewritten with the good records only, so nothing is lost, nothing is appended after damage, and the
    next start reads a clean file; say() gets one line per stretch. A torn last frame is only cut off. Returns the
    records and how many bytes were dropped (for next_after)."""
    r = read(path, valid)
    if not r.bad:
        return r.records, 0
    with open(path, "rb") as f:
        data = f.read()
    for i, (off, n, why) in enumerate(r.bad):
        if r.torn_tail and i == len(r.bad) - 1:
            say(f"{path}: an unfinished last record of {n} bytes at offset {off} (a crash while writing) dropped")
            continue
        with open(f"{path}.bad", "ab") as bad:
            bad.write(f"\n--- {path} offset {off} length {n}: {why}\n".encode() + data[off:off + n])
        say(f"{path}: {n} bytes at offset {off} ({why}) moved aside to {path}.bad; the records around them kept")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(b"".join(frame(rec) for rec in r.records))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    return r.records, sum(n for _, n, _ in r.bad)
