"""The console socket: runc connects to it and passes the pty master of a `terminal: true` process (SCM_RIGHTS)."""

from __future__ import annotations

import asyncio
import os
import socket


class ConsoleSocket:
    def __init__(self, path: str) -> None:
        self.path = path
        if os.path.lexists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.setblocking(False)

    async def receive(self, timeout: float = 10.0) -> int:
        """The pty master fd runc sends (runc has sent it by the time `runc create/exec` returns)."""
        loop = asyncio.get_running_loop()
        conn, _ = await asyncio.wait_for(loop.sock_accept(self.sock), timeout)
        with conn:
            conn.setblocking(True)
            conn.settimeout(timeout)
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        if not fds:
            raise OSError(f"no pty master received on {self.path}")
        os.set_inheritable(fds[0], False)
        os.set_blocking(fds[0], False)
        return fds[0]

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
