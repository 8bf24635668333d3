"""The shim's event journal: every event gets the container's next sequence number, is appended to
<state>/events.journal (one msgpack map per record) and only then published, so a subscriber that asks
`events since=N` later gets every event after N exactly once, in order, whenever it asks. The journal lives in
--state (tmpfs in production): it must survive any process crash, not a reboot, so it is written, not fsynced.

Types: create, start, exec-added, exec-started, exit, oom, paused, resumed, delete; restart (the restart policy
runs the container again after a back-off: {count, delay_ms, exit_code}), health_status ({status, failing_streak}:
the health check's verdict changed, or a run began `starting`).
"""

from __future__ import annotations

import asyncio
import os
import time

from shimproto import journal

TYPES = ("create", "start", "exec-added", "exec-started", "exit", "oom", "paused", "resumed", "delete", "restart",
         "health_status")


class Journal:
    def __init__(self, path: str, container_id: str) -> None:
        self.path = path
        self.id = container_id
        self.events: list[dict] = journal.load(path)
        self.fd = journal.open_append(path)
        self._changed = asyncio.Event()

    @property
    def seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    def emit(self, type: str, exec_id: str = "", **data: object) -> dict:
        assert type in TYPES, type
        ev = {"seq": self.seq + 1, "type": type, "id": self.id, "exec_id": exec_id, "time": time.time_ns(),
              **data}
        journal.append(self.fd, ev)
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
