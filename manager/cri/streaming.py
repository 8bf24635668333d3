"""The CRI streaming server: the URLs Exec, Attach and PortForward return, and the HTTP server behind them.

The CRI server calls `exec_url`, `attach_url` or `portforward_url` with a validated request and returns the URL.
The client (kubelet, crictl, critest) then POSTs (or GETs) that URL asking to upgrade to SPDY/3.1, as
k8s.io/kubelet/pkg/cri/streaming's server expects: each URL carries a one-time token that expires after
`token_ttl` seconds; using it consumes it, whatever happens next. We negotiate the stream protocol
(X-Stream-Protocol-Version; ours in `remotecommand.PROTOCOLS` and `portforward.PROTOCOL`, best first), answer
101 Switching Protocols, and hand the connection to `remotecommand.serve` or `portforward.serve`, which call the
backend. Each connection has its own thread; whatever one client does, the server goes on serving the others.

Failures before the upgrade are typed errors mapped to HTTP statuses in HTTP_STATUS (unknown or used or expired
token: 404; not an upgrade: 400; no common protocol: 403).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shimproto.errors import ShimdError

from . import portforward, remotecommand
from .spdyconn import Connection
from .streamapi import (
    AttachRequest,
    Backend,
    ClientGone,
    ExecRequest,
    InvalidRequest,
    NoCommonProtocol,
    PortForwardRequest,
    StreamingError,
    StreamIO,
    StreamsMissing,
    TerminalSize,
    TokenExpired,
    TokenUnknown,
    TooManyRequests,
    UpgradeRequired,
)

__all__ = [
    "StreamingServer", "TokenCache", "ExecRequest", "AttachRequest", "PortForwardRequest", "Backend", "StreamIO",
    "TerminalSize", "StreamingError", "TokenUnknown", "TokenExpired", "InvalidRequest", "TooManyRequests",
    "UpgradeRequired", "NoCommonProtocol", "StreamsMissing", "ClientGone",
]

log = logging.getLogger(__name__)

Request = ExecRequest | AttachRequest | PortForwardRequest
KINDS: dict[type, str] = {ExecRequest: "exec", AttachRequest: "attach", PortForwardRequest: "portforward"}
HTTP_STATUS: dict[type[StreamingError], tuple[int, str]] = {
    TokenUnknown: (404, "NotFound"), UpgradeRequired: (400, "BadRequest"), NoCommonProtocol: (403, "Forbidden"),
}
TOKEN_TTL = 60.0  # kubelet's request cache keeps a token for a minute (cacheTTL)
MAX_PENDING = 1000  # kubelet's maxInFlight


class TokenCache:
    """Requests waiting for their client, by one-time token. Thread-safe; `clock` is injectable for tests."""

    def __init__(self, ttl: float = TOKEN_TTL, limit: int = MAX_PENDING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, Request]] = {}

    def insert(self, req: Request) -> str:
        now = self._clock()
        with self._lock:
            for tok, (deadline, _) in list(self._items.items()):
                if deadline <= now:
                    del self._items[tok]
            if len(self._items) >= self.limit:
                raise TooManyRequests(f"{len(self._items)} streaming requests pending; try again later")
            token = secrets.token_urlsafe(16)
            self._items[token] = (now + self.ttl, req)
        return token

    def consume(self, kind: str, token: str) -> Request:
        """The request of token (which is gone afterwards); TokenUnknown, or TokenExpired, otherwise."""
        with self._lock:
            item = self._items.pop(token, None)
        if item is None:
            raise TokenUnknown(f"{kind}: token unknown or already used")
        deadline, req = item
        if deadline <= self._clock():
            raise TokenExpired(f"{kind}: token expired")
        if KINDS[type(req)] != kind:
            raise TokenUnknown(f"{kind}: token was issued for {KINDS[type(req)]}")
        return req


def negotiate(offered: list[str], ours: tuple[str, ...]) -> str:
    """Our best protocol among those the client offered (X-Stream-Protocol-Version, comma-separated, repeatable)."""
    theirs = [p.strip() for h in offered for p in h.split(",") if p.strip()]
    if not theirs:
        raise UpgradeRequired("unable to upgrade: X-Stream-Protocol-Version is required")
    for p in ours:
        if p in theirs:
            return p
    raise NoCommonProtocol(f"unable to upgrade: unable to negotiate protocol: client supports {theirs}, "
                           f"server accepts {list(ours)}")


class StreamingServer:
    """`StreamingServer(host, port, backend)`; `start()`, then hand out URLs; `stop()` ends it and every session."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, backend: Backend | None = None, *,
                 token_ttl: float = TOKEN_TTL, max_pending: int = MAX_PENDING,
                 stream_timeout: float = remotecommand.STREAM_CREATION_TIMEOUT) -> None:
        if backend is None:
            raise InvalidRequest("streaming server: a backend is required")
        self.backend = backend
        self.tokens = TokenCache(token_ttl, max_pending)
        self.stream_timeout = stream_timeout
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> StreamingServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="cri-streaming", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every upgraded connection, release the port. Idempotent."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
        self._httpd.server_close()

    def __enter__(self) -> StreamingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _url(self, req: Request) -> str:
        req.validate()
        return f"{self.base_url}/{KINDS[type(req)]}/{self.tokens.insert(req)}"

    def exec_url(self, req: ExecRequest) -> str:
        return self._url(req)

    def attach_url(self, req: AttachRequest) -> str:
        return self._url(req)

    def portforward_url(self, req: PortForwardRequest) -> str:
        return self._url(req)

    def _track(self, conn: Connection, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: StreamingServer

    def handle_error(self, request: object, client_address: object) -> None:
        log.warning("streaming: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:
        log.debug("streaming: %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        self.close_connection = True  # one request per connection: an upgrade, or an error
        owner = self.server.owner
        try:
            kind, protocol, req = self._handshake(owner)
        except StreamingError as e:
            self._refuse(e)
            return
        self.send_response(101)
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "SPDY/3.1")
        self.send_header("X-Stream-Protocol-Version", protocol)
        self.end_headers()
        self.wfile.flush()
        conn = Connection(self.connection, self.rfile, name=f"{kind}-{self.client_address[1]}")
        owner._track(conn, True)
        conn.start()
        try:
            if isinstance(req, PortForwardRequest):
                portforward.serve(conn, req, owner.backend, owner.stream_timeout)
            else:
                remotecommand.serve(conn, protocol, req, owner.backend, owner.stream_timeout)
        except ShimdError as e:
            log.info("streaming %s: %s", kind, e.message)
        finally:
            conn.close()
            owner._track(conn, False)

    def _handshake(self, owner: StreamingServer) -> tuple[str, str, Request]:
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] not in KINDS.values():
            raise TokenUnknown(f"no such streaming endpoint {self.path.split('?', 1)[0]!r}")
        kind, token = parts
        req = owner.tokens.consume(kind, token)
        connection = (self.headers.get("Connection") or "").lower()
        upgrade = (self.headers.get("Upgrade") or "").lower()
        if "upgrade" not in connection or "spdy/3.1" not in upgrade:
            raise UpgradeRequired("unable to upgrade: missing upgrade headers in request (SPDY/3.1 is required)")
        ours = (portforward.PROTOCOL,) if kind == "portforward" else remotecommand.PROTOCOLS
        return kind, negotiate(self.headers.get_all("X-Stream-Protocol-Version") or [], ours), req

    def _refuse(self, e: StreamingError) -> None:
        # The body is a metav1.Status: client-go decodes it and shows its message (plain text it would try to
        # read as YAML, and "kind: text" is valid YAML that yields an empty error).
        status, reason = next((s for cls, s in HTTP_STATUS.items() if isinstance(e, cls)), (500, "InternalError"))
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": e.message, "reason": reason, "code": status}).encode()
        log.info("streaming: %s %s: %d %s", self.command, self.path.split("?", 1)[0], status, e.message)
        self.send_response(status)
        if isinstance(e, NoCommonProtocol):
            for p in remotecommand.PROTOCOLS if "/portforward/" not in self.path else (portforward.PROTOCOL,):
                self.send_header("X-Accepted-Stream-Protocol-Versions", p)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
