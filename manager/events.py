"""The manager's event log: every container event, in the order the manager learned them, with a global sequence.

It is the single record of what was delivered. On start the manager reads it back and asks each shim only for the
events after the last sequence number of that container found here, so a subscriber sees every event exactly once
however often the manager is killed. A `delete` event ends a container's incarnation: a new container with the
same id starts again at sequence 1 with its create event; anything else of an ended incarnation is stale.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time

from shimproto import journal
from shimproto.model import CREATED, PAUSED, RESTARTING, RUNNING, STOPPED

OBSERVED = ("status", "pid", "exit", "started_at", "restart_count", "health")
log = logging.getLogger("shimd.manager")


def _is_event(rec: dict) -> bool:
    return journal.is_event(rec, "gseq")


class EventLog:
    def __init__(self, path: str) -> None:
        self.path = path
        # damage is moved aside (one log line each) and the good records kept; numbers are never given out again
        self.events, lost = journal.recover(path, _is_event, log.warning)
        self.events.sort(key=lambda ev: ev["gseq"])
        self._gseqs = [ev["gseq"] for ev in self.events]
        self._next = journal.next_after(self.events, "gseq", lost)
        self.last: dict[str, int] = {}
        self.ended: set[str] = set()
        self.state: dict[str, dict] = {}  # per container: what its events say (status, pid, exit, started_at)
        for ev in self.events:
            self._advance(ev)
        self.fd = journal.open_append(path)
        self._changed = asyncio.Event()

    def _advance(self, ev: dict) -> None:
        id = ev["id"]
        if id in self.ended:  # a create of a new incarnation (add checked that)
            self.ended.discard(id)
        self.last[id] = ev["seq"]
        t = ev.get("type")
        if t == "delete":
            self.ended.add(id)
            self.state.pop(id, None)
            return
        if ev.get("exec_id"):
            return
        st = self.state.setdefault(id, {"status": "unknown"})
        if t == "create":  # a new run: what its predecessors counted stays
            kept = {k: st[k] for k in ("restart_count",) if k in st}
            st.clear()
            st.update(status=CREATED, pid=ev.get("pid", 0), **kept)
        elif t == "start":
            st.update(status=RUNNING, pid=ev.get("pid", st.get("pid", 0)), started_at=ev.get("time", 0))
        elif t == "paused":
            st["status"] = PAUSED
        elif t == "resumed":
            st["status"] = RUNNING
        elif t == "exit" and isinstance(ev.get("exit"), dict):
            st.update(status=STOPPED, exit=ev["exit"])
        elif t == "restart":
            st.update(status=RESTARTING, restart_count=ev.get("count", 0))
        elif t == "health_status":
            st["health"] = ev.get("status")

    def status(self, id: str) -> dict:
        """The live status dict of id (shared: updates to it are seen by every holder; only this class writes)."""
        return self.state.setdefault(id, {"status": "unknown"})

    def observe(self, id: str, seen: dict) -> None:
        """Take the shim's own answer about id's init (status, pid, exit, started_at) as the cached view: it is
        never older than the events, which may trail it."""
        self.status(id).update({k: seen[k] for k in OBSERVED if k in seen})

    def live(self, id: str) -> bool:
        """Has id an incarnation with events that has not ended with a delete?"""
        return id in self.last and id not in self.ended

    @property
    def gseq(self) -> int:
        """The last global sequence number given out (numbers may skip where damage was moved aside)."""
        return self._next - 1

    def last_seq(self, id: str) -> int:
        return 0 if id in self.ended else self.last.get(id, 0)

    def add(self, ev: dict) -> dict | None:
        """Record a container event unless it was recorded before; returns the stored event (with gseq)."""
        if ev["id"] in self.ended and not (ev["type"] == "create" and ev["seq"] == 1):
            return None
        if ev["id"] not in self.ended and ev["seq"] <= self.last.get(ev["id"], 0):
            return None
        rec = {**ev, "gseq": self._next}
        journal.append(self.fd, rec)
        self._next += 1
        self.events.append(rec)
        self._gseqs.append(rec["gseq"])
        self._advance(rec)
        self._changed.set()
        self._changed = asyncio.Event()
        return rec

    def synthesize(self, id: str, type: str, **data: object) -> dict:
        """An event the shim could not send (it is gone): numbered after the last one of the container."""
        rec = self.add({"seq": self.last_seq(id) + 1, "type": type, "id": id, "exec_id": "",
                        "time": time.time_ns(), "origin": "manager", **data})
        assert rec is not None
        return rec

    def since(self, gseq: int, id: str = "", limit: int = 1000) -> list[dict]:
        evs = self.events[bisect.bisect_right(self._gseqs, gseq):]
        if id:
            evs = [e for e in evs if e["id"] == id]
        return evs[:limit]

    async def wait_since(self, gseq: int, id: str, timeout: float) -> list[dict]:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (evs := self.since(gseq, id)):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                break
        return evs
