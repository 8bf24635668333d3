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
import bisect
import logging
import os
import time

from shimproto import journal

log = logging.getLogger("shimd")
TYPES = ("create", "start", "exec-added", "exec-started", "exit", "oom", "paused", "resumed", "delete", "restart",
         "health_status")


class Journal:
    def __init__(self, path: str, container_id: str) -> None:
        self.path = path
        self.id = container_id
        self.events, lost = journal.recover(path, journal.is_event, log.warning)
        self._next = journal.next_after(self.events, "seq", lost)
        self.fd = journal.open_append(path)
        self._changed = asyncio.Event()

    @property
    def seq(self) -> int:
        """The last sequence number given out (numbers skip where damage was moved aside)."""
        return self._next - 1

    def emit(self, type: str, exec_id: str = "", **data: object) -> dict:
        assert type in TYPES, type
        ev = {"seq": self._next, "type": type, "id": self.id, "exec_id": exec_id, "time": time.time_ns(),
              **data}
        journal.append(self.fd, ev)
        self._next += 1
        self.events.append(ev)
        self._changed.set()
        self._changed = asyncio.Event()
        return ev

    def since(self, seq: int, limit: int = 1000) -> list[dict]:
        start = bisect.bisect_right(self.events, seq, key=lambda ev: ev["seq"])
        return self.events[start: start + limit]

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
