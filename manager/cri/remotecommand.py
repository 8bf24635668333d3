"""Exec and attach over an upgraded connection: kubelet's remotecommand server protocols, channel.k8s.io to v4.

The client opens an error stream, then stdin, stdout, stderr (not with a tty) and, from v3 on with a tty, resize,
each named by its `streamtype` header. We wait for exactly the streams the request asked for, run the backend,
then report how it ended on the error stream: v4 sends a JSON metav1.Status (Success, or Failure with reason
NonZeroExitCode and an ExitCode cause), older protocols send the failure's message as text and nothing on
success. Then every stream is closed (FIN) and the client hangs up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from . import spdy
from .spdyconn import Connection, Stream, StreamClosed
from .streamapi import (
    AttachRequest,
    Backend,
    ClientGone,
    ExecRequest,
    StreamIO,
    StreamReader,
    StreamsMissing,
    StreamWriter,
    TerminalSize,
)

log = logging.getLogger(__name__)

V4, V3, V2, V1 = "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"
PROTOCOLS = (V4, V3, V2, V1)  # best first
STREAM_CREATION_TIMEOUT = 30.0  # kubelet's DefaultStreamCreationTimeout
HANGUP_GRACE = 10.0  # how long we let the client read the status and hang up itself


def expected_streams(protocol: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> set[str]:
    want = {"error"}
    want |= {"stdin"} if stdin else set()
    want |= {"stdout"} if stdout else set()
    want |= {"stderr"} if stderr and not tty else set()
    want |= {"resize"} if tty and protocol in (V3, V4) else set()
    return want


def collect(conn: Connection, want: set[str], timeout: float = STREAM_CREATION_TIMEOUT) -> dict[str, Stream]:
    """The streams of `want`, by type, as the client opens them; StreamsMissing on timeout or hang-up.

    Others (a stderr the request did not ask for, a second stdout) are reset: kubelet ignores them too."""
    got: dict[str, Stream] = {}
    deadline = time.monotonic() + timeout
    while set(got) != want:
        left = deadline - time.monotonic()
        s = conn.accept(timeout=max(left, 0)) if left > 0 else None
        if s is None:
            for t in got.values():
                t.reset()
            why = "connection closed" if conn.closed.is_set() else f"timed out after {timeout:g}s"
            raise StreamsMissing(f"waiting for streams {sorted(want - set(got))}: {why}")
        kind = s.header("streamtype")
        if kind not in want or kind in got:  # one the request did not ask for: refused, the others go on
            log.info("%s: refusing a stream of type %r (expecting %s)", conn.name, kind, sorted(want))
            s.reset(spdy.REFUSED_STREAM)
            continue
        got[kind] = s
    return got


def _refuse_strays(conn: Connection) -> None:
    """Streams opened after the expected ones (say stderr, when the request did not ask for it) are reset, so
    the client does not wait on them for ever."""
    while (s := conn.accept()) is not None:
        s.reset(spdy.REFUSED_STREAM)


def _read_resizes(stream: Stream, io: StreamIO) -> None:
    """JSON objects {"Width":..,"Height":..}, one after another (Go's json.Encoder ends each with a newline)."""
    dec, buf = json.JSONDecoder(), ""
    while True:
        data = stream.read()
        if not data:
            return
        buf += data.decode("utf-8", "replace")
        while True:
            buf = buf.lstrip()
            try:
                obj, end = dec.raw_decode(buf)
            except ValueError:
                break  # incomplete: wait for more
            buf = buf[end:]
            if isinstance(obj, dict):
                io.resizes.put(TerminalSize(int(obj.get("Width", 0)), int(obj.get("Height", 0))))
        if len(buf) > 4096:
            log.warning("resize stream %d: dropping %d bytes that are not JSON", stream.id, len(buf))
            buf = ""


def status_message(protocol: str, code: int | None, failure: str | None) -> bytes:
    """What the error stream carries: code is the exit code (None for attach); failure a backend error's text."""
    if protocol == V4:
        if failure is not None:
            status = {"metadata": {}, "status": "Failure", "message": failure, "reason": "InternalError",
                      "details": {"causes": [{"message": failure}]}, "code": 500}
        elif code:
            status = {"metadata": {}, "status": "Failure",
                      "message": f"command terminated with non-zero exit code: exit status {code}",
                      "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        else:
            status = {"metadata": {}, "status": "Success"}
        return json.dumps(status).encode()
    if failure is not None:
        return failure.encode()
    if code:
        return f"command terminated with non-zero exit code: exit status {code}".encode()
    return b""


def serve(conn: Connection, protocol: str, req: ExecRequest | AttachRequest, backend: Backend,
          timeout: float = STREAM_CREATION_TIMEOUT) -> None:
    """One exec or attach, from the streams' creation to the client hanging up. Raises StreamsMissing."""
    what = f"{'exec' if isinstance(req, ExecRequest) else 'attach'} in container {req.container_id}"
    streams = collect(conn, expected_streams(protocol, req.tty, req.stdin, req.stdout, req.stderr), timeout)
    io = StreamIO(req.tty,
                  StreamReader(streams["stdin"]) if "stdin" in streams else None,
                  StreamWriter(streams["stdout"]) if "stdout" in streams else None,
                  StreamWriter(streams["stderr"]) if "stderr" in streams else None,
                  conn.closed)
    threading.Thread(target=_refuse_strays, args=(conn,), name=f"{conn.name}-strays", daemon=True).start()
    if "resize" in streams:
        threading.Thread(target=_read_resizes, args=(streams["resize"], io), name=f"{conn.name}-resize",
                         daemon=True).start()
    code, failure = _run(what, lambda: backend.exec(req, io) if isinstance(req, ExecRequest)
                         else backend.attach(req, io))
    if not conn.closed.is_set():
        message = status_message(protocol, code, failure)
        try:
            if message:
                streams["error"].write(message)
        except StreamClosed:
            pass
        for s in streams.values():
            s.close()
        conn.wait_closed(HANGUP_GRACE)


def _run(what: str, call: Callable[[], int | None]) -> tuple[int | None, str | None]:
    try:
        code = call()
    except ClientGone:
        return None, None
    except Exception as e:  # a backend failure is the client's error message, never the server's end
        log.warning("%s: %s", what, e, exc_info=True)
        return None, f"error executing {what}: {e}"
    if code is None:
        return None, None
    if not 0 <= code <= 255:  # the client parses a uint8; 128 + signal fits, anything else is just "failed"
        code = 255
    return code, None
