"""The blocking client of the CLI (and of tests): one call at a time, no event loop.

Kept apart from rpc.py (the asyncio server and client of the daemons) so that `shimctl` never imports asyncio:
it imports zmq and msgpack only, and reads the socket monitor's events itself (zmq.utils.monitor imports
zmq.asyncio).
"""

from __future__ import annotations

import itertools
import os
import struct
import time

import zmq

from .errors import DeadlineExceeded, InvalidArgument, ManagerNotRunning, Unavailable, from_wire
from .wire import decode, encode_request

FAST_FAIL = 1.0  # seconds with no manager alive before a client that never connected gives up
RESTART_GRACE = 5.0  # the same for a client whose manager went away: time for a supervisor to start another

IPC_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL


def ipc_endpoint(path: str) -> str:
    if len(path.encode()) > IPC_PATH_MAX:
        raise InvalidArgument(f"socket path too long ({len(path)} > {IPC_PATH_MAX} bytes): {path}")
    return "ipc://" + path


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
            params = {**(params or {}), "key": os.urandom(8).hex()}
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
            event = monitor_event(self.monitor.recv_multipart())
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


def monitor_event(frames: list[bytes]) -> int:
    """The event number of a socket monitor message (first frame: 16-bit event, 32-bit value)."""
    return struct.unpack("=hi", frames[0][:6])[0]


def manager_alive(socket_path: str) -> bool:
    """Does the pid file beside the socket name a live manager (one that is starting counts)?"""
    try:
        with open(os.path.join(os.path.dirname(socket_path), "shimd.pid")) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid > 0 and b"manager" in f.read()
    except (OSError, ValueError):
        return False
