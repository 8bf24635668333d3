"""One process's stdio as the shim holds it.

Without a terminal: stdout and stderr are FIFOs whose read side the shim drains into a log (or discards), stdin is
a FIFO the shim writes to (or /dev/null). With a terminal: runc passes the pty master over the console socket; the
shim reads output from it and writes input to it. Output is drained by the event loop as it arrives, so a process
is never slowed by a stopped manager or a slow reader: readers read the log file, at their own pace.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections import deque

from .. import sys as _sys
from .console import ConsoleSocket
from .fifo import CHUNK, OutputFifo
from .log import LogWriter

STDIN_BUFFER = 1 << 20  # bytes queued for a process that does not read its stdin before writers wait
COPY_ROUNDS = 16  # chunks copied from one pipe per wake-up


class ProcessIO:
    def __init__(self, dir: str, name: str, log: LogWriter | None, terminal: bool, stdin: bool) -> None:
        self.dir = dir
        self.name = name
        self.log = log
        self.terminal = terminal
        self.want_stdin = stdin
        self.console: ConsoleSocket | None = None
        self.master = -1
        self._outs: list[OutputFifo] = []
        self._stdin_fd = -1  # our O_RDWR handle on the stdin FIFO
        self._stdin_child = -1  # the O_RDONLY handle for the runtime
        self._pending: deque[bytes] = deque()
        self._pending_size = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._readers: list[int] = []
        self._close_after_flush = False
        self.closed = False

    # --- set-up, before the runtime call -------------------------------------------------------------------

    def prepare(self) -> tuple[int | None, int | None, int | None, str | None]:
        """Create what the runtime needs: (stdin, stdout, stderr, console socket path); None fds mean /dev/null."""
        if self.terminal:
            self.console = ConsoleSocket(os.path.join(self.dir, f"{self.name}.console"))
            return None, None, None, self.console.path
        stdin = None
        if self.want_stdin:
            path = os.path.join(self.dir, f"{self.name}.stdin")
            _sys.mkfifo(path)
            self._stdin_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self._stdin_child = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            stdin = self._stdin_child
        if self.log is None:  # output nobody asked for: /dev/null, as docker does for detached execs
            return stdin, None, None, None
        self._outs = [OutputFifo(os.path.join(self.dir, f"{self.name}.{s}"), s) for s in ("stdout", "stderr")]
        return stdin, self._outs[0].take_write_fd(), self._outs[1].take_write_fd(), None

    async def started(self) -> None:
        """After the runtime call returned: take the pty master, drop the runtime's handles, start copying."""
        loop = asyncio.get_running_loop()
        if self.console is not None:
            try:
                self.master = await self.console.receive()
            finally:
                self.console.close()
                self.console = None
            loop.add_reader(self.master, self._copy_master)
            self._readers.append(self.master)
        for f in self._outs:
            f.release_write_fd()
            loop.add_reader(f.read_fd, self._copy_fifo, f)
            self._readers.append(f.read_fd)
        if self._stdin_child >= 0:
            os.close(self._stdin_child)
            self._stdin_child = -1

    # --- output --------------------------------------------------------------------------------------------

    def _copy_fifo(self, f: OutputFifo) -> None:
        """Copy what the pipe holds, a chunk at a time (each its own records and write: a large buffer costs page
        faults), and at most COPY_ROUNDS chunks before the loop serves others."""
        for _ in range(COPY_ROUNDS):
            data = f.read()
            if data and self.log is not None:
                self.log.write(f.stream, data)
            if len(data) < CHUNK:
                return

    def _copy_master(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: the last slave handle closed
                raise
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self._readers.remove(self.master)
            return
        if self.log is not None:
            self.log.write("stdout", data)

    def drain(self) -> None:
        """Copy whatever is still buffered in the pipes or the pty (the process has exited)."""
        for f in self._outs:
            while data := f.read():
                if self.log is not None:
                    self.log.write(f.stream, data)
        if self.master >= 0:
            for _ in range(64):
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    break
                if not data:
                    break
                if self.log is not None:
                    self.log.write("stdout", data)

    # --- input ---------------------------------------------------------------------------------------------

    def _stdin_target(self) -> int:
        return self.master if self.terminal else self._stdin_fd

    async def write_stdin(self, data: bytes) -> None:
        fd = self._stdin_target()
        if fd < 0:
            raise OSError(errno.EPIPE, f"stdin of {self.name} is closed or was not requested")
        while self._pending_size > STDIN_BUFFER:
            await self._drained.wait()
        self._pending.append(data)
        self._pending_size += len(data)
        self._flush_stdin()

    def _flush_stdin(self) -> None:
        fd = self._stdin_target()
        loop = asyncio.get_running_loop()
        while self._pending and fd >= 0:
            chunk = self._pending[0]
            try:
                n = os.write(fd, chunk)
            except BlockingIOError:
                break
            except OSError:  # the reader went away: what it did not read is gone with it
                self._pending.clear()
                self._pending_size = 0
                break
            self._pending_size -= n
            if n < len(chunk):
                self._pending[0] = chunk[n:]
            else:
                self._pending.popleft()
        if self._pending:
            self._drained.clear()
            loop.add_writer(fd, self._flush_stdin)
        else:
            if fd >= 0:
                loop.remove_writer(fd)
            self._drained.set()
            if self._close_after_flush:
                self._do_close_stdin()

    def close_stdin(self) -> None:
        """EOF for the process once what was written has been delivered (^D on a terminal)."""
        self._close_after_flush = True
        if not self._pending:
            self._do_close_stdin()

    def _do_close_stdin(self) -> None:
        self._close_after_flush = False
        if self.terminal and self.master >= 0:
            try:
                os.write(self.master, b"\x04")
            except OSError:
                pass
        elif self._stdin_fd >= 0:
            asyncio.get_running_loop().remove_writer(self._stdin_fd)
            os.close(self._stdin_fd)
            self._stdin_fd = -1

    def resize(self, rows: int, cols: int) -> None:
        if self.master < 0:
            raise OSError(errno.ENOTTY, f"{self.name} has no terminal")
        _sys.set_winsize(self.master, rows, cols)

    # --- teardown ------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = asyncio.get_running_loop()
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers = []
        for f in self._outs:
            f.close()
        self._outs = []
        for fd in (self._stdin_fd, self._stdin_child, self.master):
            if fd >= 0:
                loop.remove_writer(fd)
                os.close(fd)
        self._stdin_fd = self._stdin_child = self.master = -1
        if self.console is not None:
            self.console.close()
            self.console = None
        for name in ("stdin", "stdout", "stderr"):
            try:
                os.unlink(os.path.join(self.dir, f"{self.name}.{name}"))
            except FileNotFoundError:
                pass
