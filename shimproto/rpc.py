"""Request/reply over ZeroMQ: the server dispatcher and the clients (async for daemons, blocking for the CLI).

The server is the one place where handler errors meet wire codes: a ShimdError goes out with its code, anything
else is logged with its traceback and goes out as INTERNAL. Bad frames get an error reply and never stop the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import zmq
import zmq.asyncio

from .client import Client, ipc_endpoint, manager_alive  # noqa: F401  (Client is imported from here by callers)
from .errors import DeadlineExceeded, Internal, InvalidArgument, ShimdError, Unavailable, from_wire
from .wire import MAX_MESSAGE, BadRequest, Params, decode, decode_request, encode, encode_request

Handler = Callable[[Params], Awaitable[object]]


class HandlerTable(Protocol):
    """What the server looks a method up in: a dict, or a table that loads handlers on first use."""

    def get(self, method: str, /) -> Handler | None: ...


# Long polls (a call that may wait up to a minute for something to happen) are what a client can pile up: each
# holds a task and its state. Past these caps one is answered unavailable at once. Other calls are short, and
# are never refused: a manager's own delete must get through however many waits its clients forwarded.
# The manager's server takes at most MAX_PENDING from one client and MAX_PENDING_ALL / 2 in all, so what it
# forwards to one shim always leaves the shim (which takes MAX_PENDING_ALL, from the manager's one connection too)
# room for the manager's own waits.
LONG_POLLS = frozenset({"wait", "logs", "events"})
MAX_PENDING = 1024  # long polls in flight on one connection (the manager's server)
MAX_PENDING_ALL = 16384  # on all connections together (a shim's server: per connection too)

class Server:
    """A ROUTER socket bound at a unix path that runs one task per request."""

    def __init__(self, ctx: zmq.asyncio.Context, path: str, handlers: HandlerTable,
                 log: logging.Logger | logging.LoggerAdapter, mode: int = 0o600,
                 translate: Callable[[Exception], ShimdError | None] | None = None,
                 polls: tuple[int, int] = (MAX_PENDING_ALL, MAX_PENDING_ALL)) -> None:
        self.path = path
        self.handlers = handlers
        self.translate = translate
        self.log = log
        self._tasks: set[asyncio.Task] = set()
        self._pending: dict[bytes, int] = {}  # long polls in flight per connection (the ROUTER's peer identity)
        self._polls = 0  # long polls in flight on all connections
        self.max_peer, self.max_all = polls  # caps on them: per connection, in all
        self._sending: set[asyncio.Task] = set()  # tasks whose reply is not yet handed to zmq
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # a ROUTER drops replies to a peer past its send high-water mark (1000 by default) without a word: the
        # long-poll caps bound what can be in flight, so no reply is ever dropped
        self.sock.setsockopt(zmq.SNDHWM, 0)
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
            ident = frames[0]
            try:
                request: tuple | BaseException = decode_request(frames[1])
            except (BadRequest, ShimdError) as e:
                request = e
            poll = not isinstance(request, BaseException) and request[1] in LONG_POLLS
            if poll and (self._pending.get(ident, 0) >= self.max_peer or self._polls >= self.max_all):
                await self._refuse(ident, request[0])  # type: ignore[index]
                continue
            if poll:
                self._pending[ident] = self._pending.get(ident, 0) + 1
                self._polls += 1
            task = asyncio.create_task(self._handle(ident, request))
            self._tasks.add(task)
            task.add_done_callback(lambda t, ident=ident, poll=poll: self._done(t, ident, poll))

    def _done(self, task: asyncio.Task, ident: bytes, poll: bool) -> None:
        self._tasks.discard(task)
        if not poll:
            return
        self._polls -= 1
        left = self._pending.get(ident, 1) - 1
        if left > 0:
            self._pending[ident] = left
        else:
            self._pending.pop(ident, None)

    async def _refuse(self, ident: bytes, rid: object) -> None:
        """Answer a long poll past the caps with unavailable."""
        mine = self._pending.get(ident, 0)
        why = (f"{mine} long polls in flight on this connection (at most {self.max_peer})" if mine >= self.max_peer
               else f"{self._polls} long polls in flight (at most {self.max_all})")
        await self._send(ident, {"id": rid, "error": Unavailable(f"too many calls: {why}; try again").to_wire()})

    async def _handle(self, ident: bytes, request: tuple | BaseException) -> None:
        rid: object = None
        method = "?"
        try:
            if isinstance(request, BaseException):
                raise request
            rid, method, raw = request
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
        task = asyncio.current_task()
        if task is not None:
            self._sending.add(task)
        try:
            await self.sock.send_multipart([ident, data])
        finally:
            self._sending.discard(task)  # type: ignore[arg-type]

    async def drain(self, timeout: float) -> None:
        """Wait (at most timeout) until every reply being sent is handed to zmq, whose linger then delivers it.
        A reply usually is by the time its handler returns (zmq takes it at once unless its queue is full)."""
        await asyncio.sleep(0)
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)

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
        self.sock.setsockopt(zmq.RCVHWM, 0)  # replies to many calls at once (the server caps them) all arrive
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
