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


GEN_SHIFT = 40  # a cursor is generation << 40 | byte offset in that generation's file
OFFSET_MASK = (1 << GEN_SHIFT) - 1


def cursor(gen: int, offset: int) -> int:
    return (gen << GEN_SHIFT) | offset


class LogWriter:
    """Appends CRI records to path; past max_size it rotates to path.1, path.2 ... keeping max_files files in all.

    Rotation renames, it never truncates: a reader holding a cursor into an older generation finds it in its
    numbered file. Generation g lives in path while g is current, then in path.(current - g).
    """

    def __init__(self, path: str, max_size: int = 0, max_files: int = 5) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max(2, max_files)
        self.gen = 0
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        self.closed = False
        self.written = 0  # bytes of records written by this writer, all generations
        self._changed = asyncio.Event()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    @property
    def end(self) -> int:
        """The cursor just past the last record written."""
        return cursor(self.gen, self.size)

    def write(self, stream: str, data: bytes) -> None:
        if not data or self.closed:
            return
        rec = format_records(stream, data, time.time_ns())
        if self.max_size and self.size and self.size + len(rec) > self.max_size:
            self._rotate()
        view = memoryview(rec)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(rec)
        self.written += len(rec)
        self._notify()

    def _rotate(self) -> None:
        os.close(self.fd)
        oldest = f"{self.path}.{self.max_files - 1}"
        if os.path.exists(oldest):
            os.unlink(oldest)
        for n in range(self.max_files - 2, 0, -1):
            if os.path.exists(f"{self.path}.{n}"):
                os.rename(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        os.rename(self.path, f"{self.path}.1")
        self.fd = self._open()
        self.gen += 1
        self.size = 0

    def reopen(self) -> None:
        """Reopen path (after an external tool moved the file away): a new generation starts if it is new."""
        if self.closed:
            return
        old = os.fstat(self.fd)
        os.close(self.fd)
        self.fd = self._open()
        st = os.fstat(self.fd)
        if (st.st_dev, st.st_ino) != (old.st_dev, old.st_ino):
            self.gen += 1
        self.size = st.st_size
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

    def file_of(self, gen: int) -> str:
        return self.path if gen == self.gen else f"{self.path}.{self.gen - gen}"

    def read(self, cur: int, max_bytes: int) -> tuple[list[list], int]:
        """Records from cursor cur across generations: (records, next cursor). A generation whose file was
        rotated away is skipped to the oldest one still kept."""
        gen, off = cur >> GEN_SHIFT, cur & OFFSET_MASK
        if gen > self.gen:
            gen, off = self.gen, self.size
        while True:
            path = self.file_of(gen)
            if gen < self.gen and not os.path.exists(path):
                gen, off = max(gen + 1, self.gen - (self.max_files - 1)), 0
                continue
            records, new_off = read_log(path, off, max_bytes)
            if records or gen == self.gen:
                return records, cursor(gen, new_off)
            gen, off = gen + 1, 0

    def at_end(self, cur: int) -> bool:
        return cur >= self.end


def read_log(path: str, offset: int, max_bytes: int) -> tuple[list[list], int]:
    """Records from byte offset in one file, at most about max_bytes of it: (records, new offset)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            buf = f.read(max_bytes)
            records, used = parse_records(buf)
            if used == 0 and len(buf) == max_bytes:  # one record longer than max_bytes: take it whole
                f.seek(offset)
                records, used = parse_records(f.readline())
    except FileNotFoundError:
        return [], offset
    return records, offset + used
