"""Request/reply over ZeroMQ: the server dispatcher and the clients (async for daemons, blocking for the CLI).

The server is the one place where handler errors meet wire codes: a ShimdError goes out with its code, anything
else is logged with its traceback and goes out as INTERNAL. Bad frames get an error reply and never stop the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from .errors import DeadlineExceeded, Internal, InvalidArgument, ManagerNotRunning, ShimdError, Unavailable, from_wire
from .wire import MAX_MESSAGE, BadRequest, Params, decode, decode_request, encode, encode_request

Handler = Callable[[Params], Awaitable[object]]

FAST_FAIL = 1.0  # seconds with no manager alive before a client that never connected gives up
RESTART_GRACE = 5.0  # the same for a client whose manager went away: time for a supervisor to start another

IPC_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL


def ipc_endpoint(path: str) -> str:
    if len(path.encode()) > IPC_PATH_MAX:
        raise InvalidArgument(f"socket path too long ({len(path)} > {IPC_PATH_MAX} bytes): {path}")
    return "ipc://" + path


class Server:
    """A ROUTER socket bound at a unix path that runs one task per request."""

    def __init__(self, ctx: zmq.asyncio.Context, path: str, handlers: dict[str, Handler],
                 log: logging.Logger | logging.LoggerAdapter, mode: int = 0o600,
                 translate: Callable[[Exception], ShimdError | None] | None = None) -> None:
        self.path = path
        self.handlers = handlers
        self.translate = translate
        self.log = log
        self._tasks: set[asyncio.Task] = set()
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        endpoint = ipc_endpoint(path)
        try:
            os.unlink(path)  # a stale socket from a previous instance
        except FileNotFoundError:
            pass
        # umask makes the socket private from the moment it exists; chmod then sets the intended mode.
        old = os.umask(0o177)
        try:
            self.sock.bind(endpoint)
        finally:
            os.umask(old)
        os.chmod(path, mode)

    async def serve(self) -> None:
        while True:
            frames = await self.sock.recv_multipart(copy=True)
            if len(frames) != 2:  # a ROUTER always prepends the identity; anything else is a bad peer
                if frames:
                    await self._send(frames[0], {"id": None, "error": InvalidArgument(
                        f"malformed request: expected 1 frame, got {len(frames) - 1}").to_wire()})
                continue
            task = asyncio.create_task(self._handle(frames[0], frames[1]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, ident: bytes, payload: bytes) -> None:
        rid: object = None
        method = "?"
        try:
            rid, method, raw = decode_request(payload)
            handler = self.handlers.get(method)
            if handler is None:
                raise InvalidArgument(f"unknown method {method!r}")
            result = await handler(Params(method, raw))
            reply: dict = {"id": rid, "result": result}
        except BadRequest as e:
            reply = {"id": e.rid, "error": e.error.to_wire()}
        except ShimdError as e:
            reply = {"id": rid, "error": e.to_wire()}
        except asyncio.CancelledError:
            raise
        except Exception as e:
            typed = self.translate(e) if self.translate else None
            if typed is None and isinstance(e, TimeoutError):
                typed = DeadlineExceeded(f"{method}: {e or 'timed out'}")
            if typed is None:
                self.log.exception("%s failed", method)
                typed = Internal(f"{method}: internal error: {type(e).__name__}: {e}")
            reply = {"id": rid, "error": typed.to_wire()}
        await self._send(ident, reply)

    async def _send(self, ident: bytes, reply: dict) -> None:
        try:
            data = encode(reply)
        except Exception as e:  # an id or result msgpack cannot carry
            data = encode({"id": None, "error": Internal(f"unencodable reply: {e}").to_wire()})
        if len(data) > MAX_MESSAGE:  # e.g. an error message that quotes a huge input: cut the message, keep the code
            err = reply.get("error") or Internal("reply exceeds the message size limit").to_wire()
            data = encode({"id": reply.get("id"), "error": {"code": err["code"], "message": err["message"][:4096]}})
        await self.sock.send_multipart([ident, data])

    def close(self, linger_ms: int = 0) -> None:
        """Stop serving; replies already queued get linger_ms to reach their peers."""
        for t in list(self._tasks):
            t.cancel()
        self.sock.close(linger_ms)


class AsyncClient:
    """Many concurrent calls over one DEALER socket, matched to their replies by id."""

    def __init__(self, ctx: zmq.asyncio.Context, path: str, name: str, timeout: float = 10.0) -> None:
        self.name = name
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self.sock.connect(ipc_endpoint(path))
        self._reader: asyncio.Task | None = None

    async def call(self, method: str, params: dict | None = None, timeout: float | None = -1.0) -> object:
        if timeout is not None and timeout < 0:
            timeout = self.timeout
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        rid = next(self._ids)
        data = encode_request(rid, method, params)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut

        async def exchange() -> dict:
            await self.sock.send(data)
            return await fut

        try:
            reply = await asyncio.wait_for(exchange(), timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"{method}: no answer from {self.name} within {timeout:g}s") from None
        finally:
            self._pending.pop(rid, None)
        if "error" in reply:
            raise from_wire(reply["error"])
        return reply.get("result")

    async def _read(self) -> None:
        while True:
            frame = await self.sock.recv()
            try:
                msg = decode(frame)
            except ShimdError:
                continue
            if isinstance(msg, dict):
                fut = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Unavailable(f"connection to {self.name} closed"))
        self.sock.close(0)


class Client:
    """Blocking client for the CLI: one call at a time, no event loop (keeps the CLI's start-up cheap).

    A socket monitor tells when the connection drops. Every call is then sent again once the manager is back: a
    query or a long-poll as it was, a call that changes something with the same key (chosen here, one per call),
    so the manager (and the shim behind it) recognise the repeat and answer with the first call's outcome instead
    of acting twice. With no manager at all (the pid file beside the socket names no live one) a call fails with
    ManagerNotRunning within about a second, or five once it had a connection (a manager may be restarting).
    """

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._down = False  # the monitor's last word was "disconnected"
        self._seen = False  # connected at least once
        self.sock.connect(ipc_endpoint(path))

    def call(self, method: str, params: dict | None = None, timeout: float | None = None,
             idempotent: bool = False) -> object:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if not idempotent and not (params or {}).get("key"):
            params = {**(params or {}), "key": secrets.token_hex(8)}
        rid = next(self._ids)
        data = encode_request(rid, method, params)
        self._drain_monitor()
        while True:
            # After a disconnect, wait for the new connection: a message sent meanwhile can land in the pipe of
            # the dead one (ZeroMQ drops that pipe a moment after it reports the disconnect) and be lost silently.
            self._wait_writable(deadline)
            self.sock.send(data)
            msg = self._reply(rid, method, timeout, deadline)
            if msg is not None:
                break
        if "error" in msg:
            raise from_wire(msg["error"])
        return msg.get("result")

    def _wait_writable(self, deadline: float) -> None:
        """Wait until the message can go to a live connection. While none comes, give up once no manager has
        been alive for FAST_FAIL seconds (never connected: nothing to wait for) or RESTART_GRACE seconds (the
        manager went away: one may be restarting)."""
        none_since = 0.0
        while True:
            if not self._down and self.sock.poll(min(200, self._left(deadline)), zmq.POLLOUT):
                self._seen = True
                return
            if self._down:
                self.monitor.poll(min(200, self._left(deadline)))
                self._drain_monitor()
            now = time.monotonic()
            if manager_alive(self.path):
                none_since = 0.0
            elif not none_since:
                none_since = now
            elif now - none_since >= (RESTART_GRACE if self._seen else FAST_FAIL):
                raise ManagerNotRunning(f"cannot connect to the shimd manager at {self.path}: is shimd-manager "
                                        f"running?")
            if self._left(deadline) == 0:
                raise Unavailable(f"cannot reach the shimd manager at {self.path} (is shimd-manager running?)")

    def _reply(self, rid: int, method: str, timeout: float, deadline: float) -> dict | None:
        """The reply to rid, or None when the connection dropped first."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(self._left(deadline)))
            if not ready:
                raise DeadlineExceeded(f"{method}: the manager at {self.path} did not answer within {timeout:g}s")
            if self.sock in ready:
                msg = decode(self.sock.recv())
                if isinstance(msg, dict) and msg.get("id") == rid:
                    return msg
            if self.monitor in ready and self._drain_monitor():
                return None

    def _drain_monitor(self) -> bool:
        """Read the monitor's events; True if the connection dropped since the last look."""
        dropped = False
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                dropped, self._down = True, True
            elif event == zmq.EVENT_CONNECTED:
                self._down, self._seen = False, True
        return dropped

    @staticmethod
    def _left(deadline: float) -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)
        self.ctx.term()


def manager_alive(socket_path: str) -> bool:
    """Does the pid file beside the socket name a live manager (one that is starting counts)?"""
    try:
        with open(os.path.join(os.path.dirname(socket_path), "shimd.pid")) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid > 0 and b"manager" in f.read()
    except (OSError, ValueError):
        return False
