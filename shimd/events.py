"""The shim's event journal: every event gets the container's next sequence number, is appended to
<state>/events.journal (one msgpack map per record) and only then published, so a subscriber that asks
`events since=N` later gets every event after N exactly once, in order, whenever it asks. The journal lives in
--state (tmpfs in production): it must survive any process crash, not a reboot, so it is written, not fsynced.

Types: create, start, exec-added, exec-started, exit, oom, paused, resumed, delete.
"""

from __future__ import annotations

import asyncio
import os
import time

import msgpack

TYPES = ("create", "start", "exec-added", "exec-started", "exit", "oom", "paused", "resumed", "delete")


class Journal:
    def __init__(self, path: str, container_id: str) -> None:
        self.path = path
        self.id = container_id
        self.events: list[dict] = self._load()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._changed = asyncio.Event()

    def _load(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                return [e for e in msgpack.Unpacker(f, raw=False) if isinstance(e, dict)]
        except (FileNotFoundError, ValueError, msgpack.UnpackException):
            return []

    @property
    def seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    def emit(self, type: str, exec_id: str = "", **data: object) -> dict:
        assert type in TYPES, type
        ev = {"seq": self.seq + 1, "type": type, "id": self.id, "exec_id": exec_id, "time": time.time_ns(),
              **data}
        rec = msgpack.packb(ev, use_bin_type=True)
        os.write(self.fd, rec)  # one write: a process crash never leaves half a record
        self.events.append(ev)
        self._changed.set()
        self._changed = asyncio.Event()
        return ev

    def since(self, seq: int, limit: int = 1000) -> list[dict]:
        # sequence numbers are dense from 1, so seq is also the index of the next event
        return self.events[max(0, seq): max(0, seq) + limit]

    async def wait_since(self, seq: int, timeout: float) -> list[dict]:
        if not self.since(seq):
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass
        return self.since(seq)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
