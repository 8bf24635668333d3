"""Streams out of the manager, read by cursor calls (the wire has no push, and one frame is at most 8 MiB): a
producer writes into a stream from a thread of its own, a client reads it chunk by chunk with a session id. Used
by export (a container's root filesystem as a tar).

Back-pressure: at most QUEUED chunks wait; a producer nobody reads for IDLE seconds gives up (the client went
away) and its session is dropped. A manager restart loses every session: the client's next read gets not_found.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from shimproto.errors import NotFound, ShimdError

log = logging.getLogger("shimd.manager")
CHUNK = 1 << 20
QUEUED = 8
IDLE = 60.0
READ_MAX = 4 << 20  # per reply: well under the wire's 8 MiB
EOF = b""


class Abandoned(Exception):
    """Nobody read the stream for IDLE seconds."""


class _Chunks:
    """A write-only stream cut into CHUNK-sized items of a bounded queue."""

    def __init__(self, q: queue.Queue) -> None:
        self.q, self.buf = q, bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        while len(self.buf) >= CHUNK:
            self._put(bytes(self.buf[:CHUNK]))
            del self.buf[:CHUNK]
        return len(data)

    def flush(self) -> None:
        pass

    def _put(self, item: object) -> None:
        try:
            self.q.put(item, timeout=IDLE)
        except queue.Full:
            raise Abandoned from None

    def close(self) -> None:
        if self.buf:
            self._put(bytes(self.buf))
        self._put(EOF)


class Stream:
    def __init__(self, what: str, produce: Callable[[BinaryIO], None]) -> None:
        self.what = what
        self.q: queue.Queue = queue.Queue(maxsize=QUEUED)
        self.last_read = time.monotonic()
        self.done = False
        threading.Thread(target=self._run, args=(produce,), name=f"stream {what}", daemon=True).start()

    def _run(self, produce: Callable[[BinaryIO], None]) -> None:
        out = _Chunks(self.q)
        try:
            produce(out)  # type: ignore[arg-type]
            out.close()
        except Abandoned:
            log.warning("%s: nobody read it for %.0f s; given up", self.what, IDLE)
        except BaseException as e:  # handed to the reader, who raises it as its reply
            if not isinstance(e, ShimdError):
                log.exception("%s failed", self.what)
            try:
                out._put(e)
            except Abandoned:
                pass
        finally:
            self.done = True

    def read(self, wait: float) -> tuple[bytes, bool]:
        """Up to READ_MAX bytes (waiting up to `wait` seconds for the first), and whether the stream ended."""
        self.last_read = time.monotonic()
        out = bytearray()
        try:
            item = self.q.get(timeout=wait)
            while True:
                if isinstance(item, BaseException):
                    raise item
                if item == EOF:
                    return bytes(out), True
                out += item
                if len(out) >= READ_MAX - CHUNK:
                    break
                item = self.q.get_nowait()
        except queue.Empty:
            pass
        return bytes(out), False


class Streams:
    def __init__(self) -> None:
        self.open: dict[str, Stream] = {}

    def start(self, what: str, produce: Callable[[BinaryIO], None]) -> str:
        now = time.monotonic()
        for sid, s in list(self.open.items()):  # readers that went away
            if s.done and now - s.last_read > IDLE:
                self.open.pop(sid)
        sid = os.urandom(12).hex()
        self.open[sid] = Stream(what, produce)
        return sid

    def read(self, sid: str, wait: float) -> tuple[bytes, bool]:
        s = self.open.get(sid)
        if s is None:
            raise NotFound(f"no such stream {sid[:40]!r} (it ended, was abandoned, or the manager restarted)")
        try:
            data, eof = s.read(wait)
        except BaseException:
            self.open.pop(sid, None)
            raise
        if eof:
            self.open.pop(sid, None)
        return data, eof
