"""Following a process: its exit code, its output (a log cursor paged until eof) and our stdin sent to it.

Used by the verbs that stay with a process (run, start -a, exec, attach, logs, wait). Output pages are long-polls on
the main connection; between them we read the log file ourselves when a page names it and we can open it (the
pages then only find the way: rotation, new output, the end). Stdin and terminal resizes go on connections of their
own, from a thread, because the main one is mid-call. Detach keys are spotted in our stdin: seeing them stops both
directions, the process runs on.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import BinaryIO

from shimproto.cri import parse_page
from shimproto.errors import ShimdError
from shimproto.model import rfc3339

from . import term
from .cli import POLL, Cli

DETACH_POLL = 0.5  # seconds a page may wait while detach keys are watched: how late a detach is noticed


def wait_exit(cli: Cli, id: str, exec_id: str = "", run: int = 0) -> int:
    """The exit code of the process (with run: of that run of the container, though its policy restarted it)."""
    while True:
        res = cli.call("wait", {"id": id, "exec_id": exec_id, "timeout": POLL, "run": run}, timeout=POLL + 15)
        if res["exited"]:  # type: ignore[index]
            return int(res["exit_code"])  # type: ignore[index]


class Printer:
    """Writes log records to our stdout/stderr, with -t each line prefixed by its RFC 3339 time and a space."""

    def __init__(self, timestamps: bool = False) -> None:
        self.timestamps = timestamps
        self.outs: dict[str, BinaryIO] = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
        self.line_start = {"stdout": True, "stderr": True}  # a partial record continues the line it began

    def write(self, records: list) -> None:
        for rec in records:
            stream, data = rec[0], rec[1]
            out = self.outs.get(stream, sys.stdout.buffer)
            if self.timestamps and len(rec) > 2 and data:
                data = self._stamp(stream, data, rfc3339(int(rec[2])).encode() + b" ")
            out.write(data)
            out.flush()

    def _stamp(self, stream: str, data: bytes, stamp: bytes) -> bytes:
        """stamp before every line that begins in data (one bytes.replace, not a loop over lines)."""
        body = data.replace(b"\n", b"\n" + stamp)
        ended = data.endswith(b"\n")
        if ended:
            body = body[: -len(stamp)]
        if self.line_start.get(stream, True):
            body = stamp + body
        self.line_start[stream] = ended
        return body


def print_logs(cli: Cli, id: str, follow: bool, exec_id: str = "", cursor: int = 0, window: dict | None = None,
               printer: Printer | None = None, stop: threading.Event | None = None) -> bool:
    """Page the output from cursor until eof (True) or until stop is set (False). `window` holds the logs
    params tail (sent with the first page only), since and until (sent with every page).

    Without timestamps or a time window, we read on in the log file ourselves after each page when the reply
    names it and we can open it: the shim and the manager then only say where to go on and when it is over (a page
    through them costs three processes' time; the file costs ours only), so we ask for small pages for as long as
    the file can be read here."""
    printer = printer or Printer()
    extra = {"timestamps": True} if printer.timestamps else {}
    poll = DETACH_POLL if stop is not None else POLL
    params = dict(window or {})
    local = None if printer.timestamps or params.get("since") or params.get("until") else LocalLog()
    end = None if follow else pin(cli, id, exec_id)  # what there is now: a log growing faster than we read ends
    try:
        while stop is None or not stop.is_set():
            size = {"max_bytes": SMALL_PAGE} if local is not None and local.usable else {}
            res = cli.call("logs", {"id": id, "exec_id": exec_id, "cursor": cursor, "follow": follow,
                                    "timeout": poll, **size, **extra, **params}, timeout=poll + 15)
            params = {k: v for k, v in params.items() if k != "tail"}
            printer.write(res["records"])  # type: ignore[index]
            cursor = res["cursor"]  # type: ignore[index]
            if res["eof"] or end is not None and cursor >= end:  # type: ignore[index]
                return True
            if local is not None and res.get("file"):  # type: ignore[union-attr]
                cursor = local.read_on(res["file"], cursor, printer, follow, stop)  # type: ignore[index]
                if end is not None and cursor >= end:
                    return True
        return False
    finally:
        if local is not None:
            local.close()


CHUNK = 1 << 20  # bytes read from the log file at a time (parsed ~15 % faster than 4 MiB: caches)
SMALL_PAGE = 4096  # bytes of log a page may cover while we read the file ourselves (the manager's minimum)
MISSES = 3  # files opened in a row that were not the one named, before we keep to (full) pages


class LocalLog:
    """The log file read by ourselves from where the shim said a cursor points (path, identity, offset; the cursor
    then moves on by the bytes read): whole records to its current end, parsed as the shim would (parse_cri). A
    file that cannot be opened, or is not the one named (a rotation renamed it meanwhile), is left to the pages."""

    def __init__(self) -> None:
        self.f: BinaryIO | None = None
        self.ident: tuple[int, int] | None = None
        self.usable = True  # until a file named cannot be opened here (another host, no permission) or is not named
        self.misses = 0  # files opened in a row that were not the one named

    def read_on(self, where: list, cursor: int, printer: Printer, follow: bool, stop: threading.Event | None) -> int:
        """Print the records from cursor on in the file `where` names, to its end now or, following, for as long
        as it grows; the cursor after them (rotation, new output and the end are then the shim's to tell)."""
        if not (isinstance(where, list) and len(where) == 4 and isinstance(where[0], str)
                and all(isinstance(x, int) for x in where[1:])):
            self.usable = False  # a shim of another version says it otherwise: the pages will do
            return cursor
        path, dev, ino, off = where
        if self.ident != (dev, ino):
            self.close()
            try:
                f = open(path, "rb", buffering=0)
                st = os.fstat(f.fileno())
            except OSError:  # not readable here (another host, no permission): the pages will do
                self.usable = False
                return cursor
            if (st.st_dev, st.st_ino) != (dev, ino):  # renamed by a rotation meanwhile, or another file by that
                f.close()  # path here (another mount namespace): after a few such, pages only
                self.misses += 1
                self.usable = self.misses < MISSES
                return cursor
            self.f, self.ident, self.misses = f, (dev, ino), 0  # type: ignore[assignment]
        assert self.f is not None
        size, now = CHUNK, os.fstat(self.f.fileno()).st_size
        while (stop is None or not stop.is_set()) and (follow or off < now):
            self.f.seek(off)  # never past what was used: a torn record is read again whole (or left to the pages)
            data = self.f.read(size)
            records, used = parse_cri(data)
            if not used:
                if len(data) < size:  # the end for now
                    break
                size *= 2  # one record longer than a chunk
                continue
            printer.write(records)
            off, cursor, size = off + used, cursor + used, CHUNK
        return cursor

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        self.f, self.ident = None, None


def parse_cri(buf: bytes) -> tuple[list[list], int]:
    """The complete CRI records of buf as [stream, text] (consecutive records of one stream merged) and the bytes
    they took: the shim's own parser (shimproto/cri.py), without filters."""
    records, used, _ = parse_page(buf)
    return records, used


def pin(cli: Cli, id: str, exec_id: str = "") -> int:
    """The cursor of "now" in the process's output: what it prints after this is ours."""
    return cli.call("logs", {"id": id, "exec_id": exec_id, "cursor": -1})["cursor"]  # type: ignore[index]


def attach(cli: Cli, id: str, exec_id: str, cursor: int, stdin: bool, tty: bool,
           detach_keys: bytes = b"", run: int = 0) -> int | None:
    """Stream the process's output from cursor until it exits, feeding it our stdin; its exit code (of that run
    of the container, when run is known), or None when our stdin carried the detach keys (the process runs on)."""
    detached = threading.Event() if detach_keys and stdin else None
    if stdin:
        pump = StdinPump(cli, id, exec_id, detach_keys, detached)
        threading.Thread(target=pump.run, daemon=True).start()
    with _terminal(cli, id, exec_id) if tty and stdin else nullcontext():
        if not print_logs(cli, id, True, exec_id, cursor, stop=detached):
            return None
    return wait_exit(cli, id, exec_id, run)


class StdinPump:
    """Copies our stdin to the process until EOF (then closes its stdin) or until the detach keys."""

    def __init__(self, cli: Cli, id: str, exec_id: str, keys: bytes, detached: threading.Event | None) -> None:
        self.cli, self.id, self.exec_id = cli, id, exec_id
        self.keys, self.detached = keys, detached
        self.held = b""  # a prefix of the detach keys, kept back until we know whether the rest follows

    def run(self) -> None:
        try:
            c = self.cli.connect()
            fd = sys.stdin.fileno()
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                data, detach = self.scan(data)
                if data:
                    self.cli.call("write_stdin", {"id": self.id, "exec_id": self.exec_id, "data": data},
                                  timeout=60, via=c)
                if detach:
                    assert self.detached is not None
                    self.detached.set()
                    return
            if self.held:
                self.cli.call("write_stdin", {"id": self.id, "exec_id": self.exec_id, "data": self.held},
                              timeout=60, via=c)
            self.cli.call("close_stdin", {"id": self.id, "exec_id": self.exec_id}, via=c)
        except (ShimdError, OSError):
            pass  # the process is gone or never took stdin: output and exit code still arrive on the main path

    def scan(self, data: bytes) -> tuple[bytes, bool]:
        """(what to send now, whether the detach keys were seen): the keys themselves are never sent."""
        if not self.keys:
            return data, False
        buf = self.held + data
        at = buf.find(self.keys)
        if at >= 0:
            self.held = b""
            return buf[:at], True
        for n in range(min(len(self.keys) - 1, len(buf)), 0, -1):  # the longest tail that may begin the keys
            if self.keys.startswith(buf[-n:]):
                self.held = buf[-n:]
                return buf[:-n], False
        self.held = b""
        return buf, False


def _terminal(cli: Cli, id: str, exec_id: str) -> AbstractContextManager[None]:
    """Our terminal in raw mode, its size sent now and on every change (on a connection of its own)."""
    control = cli.connect()

    def resize(rows: int, cols: int) -> None:
        cli.call("resize", {"id": id, "exec_id": exec_id, "rows": rows, "cols": cols}, via=control)

    return term.raw(resize)

