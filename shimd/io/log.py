"""The container log in the Kubernetes CRI format, written by the shim itself.

Each record is `<RFC3339Nano> <stdout|stderr> <F|P> <text>\n`: F ends a line, P is a fragment whose line goes on in
the next record of the same stream. A chunk of output (one read of a pipe) becomes records stamped with one time and
written with one writev(2), to a file opened O_APPEND, so a reader that stops at the last newline never sees half a
record. A log cursor is a byte offset into the file (with the file's generation: see LogWriter); a reader on this
host may read the file itself from where `locate` says a cursor points.

Readers may filter by time (since/until, inclusive, unix nanoseconds from each record's own timestamp), ask for
each record's time, and start at the last N lines (tail) found by reading the files backwards from the end.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Iterator

from shimproto.cri import PLAIN, ReadOpts, format_pieces, parse_page, parse_ts
from shimproto.errors import InvalidArgument
from shimproto.plant import planted

log = logging.getLogger("shimd.log")


def check_log_dir(path: str) -> None:
    """A log at a client's path (a CRI log_path): its directory is the client's to make, never made here."""
    if path and not os.path.isdir(os.path.dirname(path)):
        raise InvalidArgument(f"invalid log_path {path}: directory {os.path.dirname(path)} does not exist")


def lines_backward(path: str, size: int, block: int = 1 << 16) -> Iterator[tuple[int, bytes]]:
    """(offset, record line) of each complete record in path's first size bytes, last first."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        pos, tail = size, b""
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            buf = f.read(pos - start) + tail
            data = buf[: buf.rfind(b"\n") + 1]  # a torn record at the very end is not a record
            lines = data.split(b"\n")[:-1]
            tail = b""
            if start > 0 and lines:  # the first line may begin in the block before: carry it back
                tail = lines.pop(0) + b"\n"
            off = start + len(data)
            for line in reversed(lines):
                off -= len(line) + 1
                yield off, line
            pos = start


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
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

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
        pieces = format_pieces(stream, data, time.time_ns())
        size = sum(map(len, pieces))
        if planted("repeat-log-line") and self.written < 4096 <= self.written + size:
            pieces, size = [b"".join(pieces) * 2], size * 2
        if not self.max_size or self.size + size <= self.max_size:
            self._appendv(pieces, size, len(data))
        else:
            for piece in self._pieces(b"".join(pieces)):
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
        self._appendv([rec], len(rec), accounted)

    def _appendv(self, pieces: list[bytes | memoryview], size: int, accounted: int) -> None:
        """Write size bytes of whole records, given in pieces, with one writev(2) (a short write goes on). When the
        disk is full the records are taken back and accounted bytes of output counted as dropped."""
        try:
            done = os.writev(self.fd, pieces)
            if done < size:
                view = memoryview(b"".join(pieces))[done:]
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
        self.size += size
        self.written += size

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

    def resume(self) -> None:
        """Open the log again after close (a restarted container appends to it): generations and cursors go on."""
        if self.closed:
            self.fd = self._open()
            self.size = os.fstat(self.fd).st_size
            self.closed = False
            self._notify()

    def _file(self, gen: int) -> tuple[str, int]:
        """(path, size) of a kept generation."""
        idx = self.kept.index(gen)
        if idx == 0:
            return self.path, self.size
        path = f"{self.path}.{idx}"
        try:
            return path, os.stat(path).st_size
        except FileNotFoundError:
            return path, 0

    def read(self, cur: int, max_bytes: int, opts: ReadOpts = PLAIN) -> tuple[list[list], int, bool]:
        """Records from cursor cur across generations: (records, next cursor, past opts.until)."""
        gen, off = cur >> GEN_SHIFT, cur & OFFSET_MASK
        if gen > self.gen:
            gen, off = self.gen, self.size
        while True:
            if gen not in self.kept:  # rotated away or moved away: go on with the next one still here
                gen, off = min(g for g in self.kept if g > gen), 0
            path, size = self._file(gen)
            if opts.since and off == 0 and gen != self.gen and self._ends_before(path, size, opts.since):
                records, new_off, past = [], size, False  # a whole rotated file before since: not read at all
            else:
                records, new_off, past = read_log(path, off, max_bytes, opts)
            if records or past or gen == self.gen:
                return records, cursor(gen, new_off), past
            gen, off = self.kept[self.kept.index(gen) - 1], 0

    @staticmethod
    def _ends_before(path: str, size: int, since: int) -> bool:
        for _, line in lines_backward(path, size):
            return parse_ts(line.split(b" ", 1)[0]) < since
        return True

    def tail_cursor(self, n: int) -> int:
        """The cursor of the first of the last n lines on disk now (a trailing unfinished line counts as one);
        the oldest kept data when there are fewer."""
        if n <= 0:
            return self.end
        lines, seen = 0, False
        for gen in self.kept:
            path, size = self._file(gen)
            after = size  # where the line that follows the record being looked at starts
            for off, line in lines_backward(path, size):
                if line.split(b" ", 3)[2:3] == [b"F"]:
                    if lines == n:
                        return cursor(gen, after)
                    lines += 1
                elif not seen:
                    lines += 1
                seen = True
                after = off
        return cursor(self.kept[-1], 0)

    def locate(self, cur: int) -> list | None:
        """[path, st_dev, st_ino, offset]: where cursor cur points, for a reader on this host that reads on in the
        file itself (it checks the file's identity once it has it open: a rotation may have renamed it meanwhile);
        cur + n is then the cursor n bytes further in that file. None when cur's generation is not kept."""
        gen = cur >> GEN_SHIFT
        if gen not in self.kept:
            return None
        path, _ = self._file(gen)
        try:
            st = os.fstat(self.fd) if gen == self.gen and not self.closed else os.stat(path)
        except OSError:
            return None
        return [path, st.st_dev, st.st_ino, cur & OFFSET_MASK]

    def at_end(self, cur: int) -> bool:
        return cur >= self.end


def read_log(path: str, offset: int, max_bytes: int, opts: ReadOpts = PLAIN) -> tuple[list[list], int, bool]:
    """Records from byte offset in one file, at most about max_bytes of it: (records, new offset, past until)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            buf = f.read(max_bytes)
            records, used, past = parse_page(buf, opts)
            if used == 0 and not past and len(buf) == max_bytes:  # one record longer than max_bytes: take it whole
                f.seek(offset)
                records, used, past = parse_page(f.readline(), opts)
    except FileNotFoundError:
        return [], offset, False
    return records, offset + used, past
