"""The container log in the Kubernetes CRI format, written by the shim itself.

Each record is `<RFC3339Nano> <stdout|stderr> <F|P> <text>\n`: F ends a line, P is a fragment whose line goes on in
the next record of the same stream. Records are written with one write(2) each, to a file opened O_APPEND, so a
reader that stops at the last newline never sees half a record. A log cursor is a byte offset into the file.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time

from shimproto.model import rfc3339

log = logging.getLogger("shimd.log")


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
    numbered file. `kept` lists the generations still on disk, newest first: kept[0] is in path, kept[i] in
    path.i. A generation whose file left the numbering (rotated past max_files, or moved away by an external tool
    before `reopen`) is gone, and a reader in it skips to the next generation that is kept.
    """

    def __init__(self, path: str, max_size: int = 0, max_files: int = 5) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max(2, max_files)
        self.gen = 0
        self.kept = [0]
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        self.closed = False
        self.written = 0  # bytes of records written by this writer, all generations
        self.dropped = 0  # bytes of container output lost because the log could not be written (disk full)
        self._changed = asyncio.Event()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    @property
    def end(self) -> int:
        """The cursor just past the last record written."""
        return cursor(self.gen, self.size)

    def write(self, stream: str, data: bytes) -> None:
        """Append data as records, rotating between records so no file passes max_size (a single record larger
        than max_size gets a file of its own). When the disk is full the data is dropped and counted, never waited
        for: the container must not block on its log."""
        if not data or self.closed:
            return
        rec = format_records(stream, data, time.time_ns())
        if not self.max_size or self.size + len(rec) <= self.max_size:
            self._append(rec, len(data))
        else:
            for piece in self._pieces(rec):
                if self.size and self.size + len(piece) > self.max_size:
                    self._rotate()
                self._append(piece, len(piece))
        self._notify()

    def _pieces(self, rec: bytes) -> list[bytes]:
        """rec cut at record boundaries: the first piece fills what is left of the current file, the next ones a
        whole file each."""
        out, start, room = [], 0, self.max_size - self.size
        while start < len(rec):
            if len(rec) - start <= room:
                out.append(rec[start:])
                break
            cut = rec.rfind(b"\n", start, start + room) if room > 0 else -1
            if cut >= start:
                end = cut + 1
            elif room < self.max_size:  # not one record fits in what is left: the next piece opens a new file
                room = self.max_size
                continue
            else:  # a record longer than a whole file gets a file of its own
                end = rec.find(b"\n", start) + 1 or len(rec)
            out.append(rec[start:end])
            start, room = end, self.max_size
        return out

    def _append(self, rec: bytes, accounted: int) -> None:
        try:
            view = memoryview(rec)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
                raise
            os.ftruncate(self.fd, self.size)  # take back a torn record: readers never see half of one
            if not self.dropped:
                log.warning("log %s: %s; dropping output until there is space", self.path, e.strerror)
            self.dropped += accounted
            return
        self.size += len(rec)
        self.written += len(rec)

    def _rotate(self) -> None:
        """Shift path.N -> path.N+1 (dropping the oldest), path -> path.1, and start a new path. If the new file
        cannot be made (disk full), undo the last rename and keep appending to the current file."""
        try:
            oldest = f"{self.path}.{self.max_files - 1}"
            if os.path.exists(oldest):
                os.unlink(oldest)
            for n in range(self.max_files - 2, 0, -1):
                if os.path.exists(f"{self.path}.{n}"):
                    os.rename(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.rename(self.path, f"{self.path}.1")
        except OSError as e:
            log.warning("log %s: cannot rotate: %s", self.path, e)
            return
        try:
            fd = self._open()
        except OSError as e:
            os.rename(f"{self.path}.1", self.path)
            log.warning("log %s: cannot rotate: %s", self.path, e)
            return
        os.close(self.fd)
        self.fd = fd
        self.gen += 1
        self.kept = [self.gen, *self.kept][: self.max_files]
        self.size = 0

    def reopen(self) -> None:
        """Reopen path (after an external tool moved the file away). If it is a new file, a new generation starts
        and the moved one leaves our numbering: the files path.1 ... keep their generations."""
        if self.closed:
            return
        old = os.fstat(self.fd)
        fd = self._open()
        st = os.fstat(fd)
        os.close(self.fd)
        self.fd = fd
        if (st.st_dev, st.st_ino) != (old.st_dev, old.st_ino):
            self.gen += 1
            self.kept = [self.gen, *self.kept[1:]]
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

    def read(self, cur: int, max_bytes: int) -> tuple[list[list], int]:
        """Records from cursor cur across generations: (records, next cursor)."""
        gen, off = cur >> GEN_SHIFT, cur & OFFSET_MASK
        if gen > self.gen:
            gen, off = self.gen, self.size
        while True:
            if gen not in self.kept:  # rotated away or moved away: go on with the next one still here
                gen, off = min(g for g in self.kept if g > gen), 0
            idx = self.kept.index(gen)
            path = self.path if idx == 0 else f"{self.path}.{idx}"
            records, new_off = read_log(path, off, max_bytes)
            if records or gen == self.gen:
                return records, cursor(gen, new_off)
            gen, off = self.kept[idx - 1], 0

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
