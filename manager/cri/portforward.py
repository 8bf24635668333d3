"""Port forwarding over an upgraded connection: kubelet's portforward.k8s.io protocol.

For each local connection the client opens two streams with the same `requestid` and `port` headers: an error
stream (which it half-closes at once) and a data stream. Once both are here we ask the backend for a socket to the
port in the pod and copy bytes both ways: the client's FIN becomes a write shutdown of the socket, the socket's
EOF becomes our FIN on the data stream. A failure is written as text on the error stream, as kubelet does
("error forwarding port P to pod ID: ..."), and both streams are closed. A pair not complete after
STREAM_CREATION_TIMEOUT is dropped with a message. One connection carries any number of pairs, one after another
or at once, until the client hangs up.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from . import spdy
from .spdyconn import RESET, Connection, Stream, StreamClosed
from .streamapi import Backend, PortForwardRequest

log = logging.getLogger(__name__)

PROTOCOL = "portforward.k8s.io"
STREAM_CREATION_TIMEOUT = 30.0
CHUNK = 32 * 1024


class _Pair:
    def __init__(self) -> None:
        self.error: Stream | None = None
        self.data: Stream | None = None
        self.born = time.monotonic()


def _request_id(s: Stream) -> str:
    """The pair's key; clients before requestid headers paired an error stream with the data stream after it."""
    rid = s.header("requestid")
    if rid:
        return rid
    return str(s.id if s.header("streamtype") == "error" else s.id - 2)


def serve(conn: Connection, req: PortForwardRequest, backend: Backend,
          timeout: float = STREAM_CREATION_TIMEOUT) -> None:
    """Pair streams and forward each pair on a thread of its own until the client hangs up."""
    pending: dict[str, _Pair] = {}
    workers: list[threading.Thread] = []
    while True:
        s = conn.accept(timeout=1.0)
        if s is None and conn.closed.is_set():
            break
        now = time.monotonic()
        for rid, p in list(pending.items()):
            if now - p.born > timeout:
                del pending[rid]
                _fail(p, f"timed out waiting for the streams of request {rid}")
        if s is None:
            continue
        kind = s.header("streamtype")
        if kind not in ("error", "data"):
            s.reset(spdy.PROTOCOL_ERROR)
            continue
        rid = _request_id(s)
        p = pending.setdefault(rid, _Pair())
        if getattr(p, kind) is not None:
            s.reset(spdy.PROTOCOL_ERROR)
            continue
        setattr(p, kind, s)
        if p.error is not None and p.data is not None:
            del pending[rid]
            t = threading.Thread(target=_forward, args=(conn, req, backend, p.error, p.data),
                                 name=f"{conn.name}-pf-{rid}", daemon=True)
            t.start()
            workers = [w for w in workers if w.is_alive()] + [t]
    for w in workers:
        w.join(5)


def _fail(p: _Pair, message: str) -> None:
    if p.error is not None:
        try:
            p.error.write(message.encode())
        except StreamClosed:
            pass
        p.error.close()
    if p.data is not None:
        p.data.reset()


def _forward(conn: Connection, req: PortForwardRequest, backend: Backend, error: Stream, data: Stream) -> None:
    port_text = data.header("port")
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    where = f"port {port_text or '(none)'} to pod {req.pod_sandbox_id}"
    try:
        if not 0 < port < 65536:
            raise ValueError(f"invalid port header {port_text!r}")
        if req.ports and port not in req.ports:
            raise ValueError(f"port {port} is not one of the request's {req.ports}")
        sock = backend.port_forward(req.pod_sandbox_id, port)
    except Exception as e:  # the backend's refusal is the client's message, never the server's end
        log.info("forward %s: %s", where, e)
        _send_error(error, f"error forwarding {where}: {e}")
        data.close()
        return
    up = threading.Thread(target=_client_to_pod, args=(conn, data, sock), name=f"{conn.name}-pf-up", daemon=True)
    up.start()
    try:
        while True:
            chunk = sock.recv(CHUNK)
            if not chunk:
                break
            data.write(chunk)
    except StreamClosed:
        pass
    except OSError as e:
        if not conn.closed.is_set():
            _send_error(error, f"error forwarding {where}: {e}")
    finally:
        data.close()
        error.close()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        up.join(5)
        sock.close()


def _client_to_pod(conn: Connection, data: Stream, sock: socket.socket) -> None:
    try:
        while True:
            chunk = data.read(CHUNK)
            if not chunk:
                break
            sock.sendall(chunk)
        # The client finished sending (FIN) or went away: pass the end on; if it went away, end both ways.
        sock.shutdown(socket.SHUT_RDWR if conn.closed.is_set() or data.state == RESET else socket.SHUT_WR)
    except OSError:
        pass


def _send_error(error: Stream, message: str) -> None:
    try:
        error.write(message.encode())
    except StreamClosed:
        pass
    error.close()
