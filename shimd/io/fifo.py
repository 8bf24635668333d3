"""Stdio FIFOs held by the shim.

The shim keeps an O_RDWR handle on every FIFO: it is the reader of stdout/stderr, and because it also counts as a
writer the read side never sees EOF while the container's processes come and go; and the container never gets
SIGPIPE because a reader always exists. runc gets a plain O_WRONLY handle, which it hands to the container.
"""

from __future__ import annotations

import os

from .. import sys as _sys

CHUNK = 1 << 16  # bytes per read, the pipe's capacity: larger reads (from a larger pipe) were no faster


class OutputFifo:
    def __init__(self, path: str, stream: str) -> None:
        self.path = path
        self.stream = stream
        _sys.mkfifo(path)
        self.read_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._write_fd: int | None = os.open(path, os.O_WRONLY | os.O_CLOEXEC)

    def take_write_fd(self) -> int:
        """The handle for the runtime; close it with release_write_fd once the container holds its own."""
        assert self._write_fd is not None
        return self._write_fd

    def release_write_fd(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    def read(self, bufsize: int = CHUNK) -> bytes:
        """At most bufsize bytes now, b"" when there are none (never blocks)."""
        try:
            return os.read(self.read_fd, bufsize)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        self.release_write_fd()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
