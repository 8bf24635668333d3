"""The container log in the Kubernetes CRI format, written by the shim itself.

Each record is `<RFC3339Nano> <stdout|stderr> <F|P> <text>\n`: F ends a line, P is a fragment whose line goes on in
the next record of the same stream. Records are written with one write(2) each, to a file opened O_APPEND, so a
reader that stops at the last newline never sees half a record. A log cursor is a byte offset into the file.
"""

from __future__ import annotations

import asyncio
import os
import time

from shimproto.model import rfc3339


def format_records(stream: str, data: bytes, now_ns: int) -> bytes:
    ts = rfc3339(now_ns).encode()
    head_f = ts + b" " + stream.encode() + b" F "
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when data ended with a newline
    out = [head_f + line + b"\n" for line in lines]
    if tail:
        out.append(ts + b" " + stream.encode() + b" P " + tail + b"\n")
    return b"".join(out)


def parse_records(buf: bytes) -> tuple[list[list], int]:
    """Parse complete records from buf: ([[stream, text_bytes_with_newline_if_F], ...], bytes consumed)."""
    end = buf.rfind(b"\n")
    if end < 0:
        return [], 0
    out: list[list] = []
    for line in buf[: end + 1].split(b"\n")[:-1]:
        parts = line.split(b" ", 3)
        if len(parts) < 4:
            parts += [b""] * (4 - len(parts))
        _, stream, tag, text = parts
        if tag == b"F":
            text += b"\n"
        s = stream.decode(errors="replace")
        if out and out[-1][0] == s:
            out[-1][1] += text
        else:
            out.append([s, text])
    return out, end + 1


class LogWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.closed = False
        self._changed = asyncio.Event()

    def write(self, stream: str, data: bytes) -> None:
        if not data or self.closed:
            return
        rec = memoryview(format_records(stream, data, time.time_ns()))
        while rec:
            rec = rec[os.write(self.fd, rec):]
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        """Return when the log grows or closes, or after timeout seconds."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        if not self.closed:
            os.fsync(self.fd)
            os.close(self.fd)
            self.closed = True
            self._notify()


def read_log(path: str, cursor: int, max_bytes: int) -> tuple[list[list], int]:
    """Records from byte offset cursor, at most about max_bytes of file: (records, new cursor)."""
    try:
        with open(path, "rb") as f:
            f.seek(cursor)
            buf = f.read(max_bytes)
    except FileNotFoundError:
        return [], cursor
    records, used = parse_records(buf)
    if used == 0 and len(buf) == max_bytes:  # one record longer than max_bytes: take it whole
        with open(path, "rb") as f:
            f.seek(cursor)
            line = f.readline()
        records, used = parse_records(line)
    return records, cursor + used
