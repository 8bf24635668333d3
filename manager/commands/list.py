"""list {all?} -> [inspect, ...]: running containers, or every container with all. Shims are asked in parallel;
one that does not answer in time shows status "unknown" instead of holding up the list."""

from __future__ import annotations

import asyncio

from shimproto.model import PAUSED, RUNNING
from shimproto.wire import Params

from ..registry import Manager

NAME = "list"


async def handle(m: Manager, p: Params) -> list:
    entries = list(m.entries.values())
    out = await asyncio.gather(*(m.inspect(e) for e in entries))
    if not p.bool("all"):
        out = [c for c in out if c["status"] in (RUNNING, PAUSED)]
    return sorted(out, key=lambda c: c["created_at"])
