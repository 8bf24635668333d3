"""What the CRI streaming server and its backend share: the requests, the backend's seam, the IO it is given, errors.

`manager.cri.streaming` re-exports every name here; the CRI server imports from there.
"""

from __future__ import annotations

import queue
import socket
import threading
from dataclasses import dataclass, field
from typing import Protocol

from shimproto.errors import InvalidArgument, NotFound, ShimdError, Unavailable

from .spdyconn import Stream, StreamClosed


# -- errors: each maps to one HTTP status in streaming.HTTP_STATUS ---------------------------------------------
class StreamingError(ShimdError):
    """Base of the streaming server's errors."""


class TokenUnknown(NotFound, StreamingError):
    """No pending request has this token (never issued, already used, or expired): HTTP 404."""


class TokenExpired(TokenUnknown):
    """The token was issued but not used within its lifetime: HTTP 404, as an unknown one."""


class InvalidRequest(InvalidArgument, StreamingError):
    """An Exec/Attach/PortForward request the server will not hand a URL for (the CRI call's InvalidArgument)."""


class TooManyRequests(Unavailable, StreamingError):
    """Too many URLs handed out and not yet used (the CRI call's ResourceExhausted/Unavailable)."""


class UpgradeRequired(InvalidArgument, StreamingError):
    """The request is not an upgrade to SPDY/3.1, or names no stream protocol: HTTP 400."""


class NoCommonProtocol(InvalidArgument, StreamingError):
    """The client offers no stream protocol we speak: HTTP 403 with the ones we accept."""


class StreamsMissing(StreamingError):
    """The client did not open the streams its request asked for in time (or opened ones it may not)."""


class ClientGone(StreamClosed, StreamingError):
    """The client hung up: writing its output is pointless (the backend should stop)."""


# -- requests ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: list[str]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True

    def validate(self) -> None:
        _check_io("exec", self.container_id, self.tty, self.stdin, self.stdout, self.stderr)
        if not self.cmd:
            raise InvalidRequest(f"exec in container {self.container_id}: cmd is empty")


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True

    def validate(self) -> None:
        _check_io("attach", self.container_id, self.tty, self.stdin, self.stdout, self.stderr)


@dataclass(frozen=True)
class PortForwardRequest:
    pod_sandbox_id: str
    ports: list[int] = field(default_factory=list)  # empty: any port the client names

    def validate(self) -> None:
        if not self.pod_sandbox_id:
            raise InvalidRequest("port-forward: pod_sandbox_id is empty")
        bad = [p for p in self.ports if not 0 < p < 65536]
        if bad:
            raise InvalidRequest(f"port-forward to pod {self.pod_sandbox_id}: ports {bad} out of range")


def _check_io(verb: str, cid: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    # kubelet's validateExecRequest/validateAttachRequest: a terminal has one output stream.
    if not cid:
        raise InvalidRequest(f"{verb}: container_id is empty")
    if tty and stderr:
        raise InvalidRequest(f"{verb} in container {cid}: tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise InvalidRequest(f"{verb} in container {cid}: one of stdin, stdout, or stderr must be set")


# -- the backend's IO ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


class StreamReader:
    """The client's stdin: `read(n)` blocks for data, b"" at its end (the client closed stdin or went away)."""

    def __init__(self, stream: Stream) -> None:
        self._s = stream

    def read(self, n: int = 65536) -> bytes:
        return self._s.read(n)


class StreamWriter:
    """The client's stdout or stderr: `write(data)` sends it all; ClientGone once the client cannot take it."""

    def __init__(self, stream: Stream) -> None:
        self._s = stream

    def write(self, data: bytes) -> int:
        try:
            self._s.write(bytes(data))
        except StreamClosed as e:
            raise ClientGone(f"write to the client's {self._s.header('streamtype')}: {e.message}") from None
        return len(data)

    def flush(self) -> None:  # file-like enough for shutil.copyfileobj and print(file=...)
        pass


class StreamIO:
    """Everything a backend gets for one exec or attach.

    stdin: a StreamReader, or None when not requested. stdout/stderr: StreamWriters, or None when not requested
    (with a tty there is no stderr). resizes: TerminalSize values in arrival order (tty only; `next_resize`
    waits for one). gone: set when the client hangs up; a backend should then end the exec (or stop attaching)."""

    def __init__(self, tty: bool, stdin: StreamReader | None, stdout: StreamWriter | None,
                 stderr: StreamWriter | None, gone: threading.Event) -> None:
        self.tty = tty
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.gone = gone
        self.resizes: queue.Queue[TerminalSize] = queue.Queue()

    def next_resize(self, timeout: float | None = None) -> TerminalSize | None:
        """The next terminal size, or None after timeout or once the client is gone."""
        try:
            return self.resizes.get(timeout=timeout)
        except queue.Empty:
            return None


class Backend(Protocol):
    """What the streaming server needs of the runtime; each call runs on the connection's own thread."""

    def exec(self, req: ExecRequest, io: StreamIO) -> int:
        """Run req.cmd in the container; block until it exits; return its exit code (128 + signal if killed)."""
        ...

    def attach(self, req: AttachRequest, io: StreamIO) -> None:
        """Attach to the container's stdio; block until the container exits or io.gone is set."""
        ...

    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket:
        """A socket connected to port inside the pod's network namespace; raise to refuse (the text is sent)."""
        ...
