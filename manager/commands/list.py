"""list {all?} -> [inspect, ...]: running (paused, restarting) containers, or every container with all.

Answered from the status the shims' events keep up to date, so a hung or slow shim never holds up the list."""

from __future__ import annotations

from shimproto.model import PAUSED, RESTARTING, RUNNING, STOPPED
from shimproto.plant import planted
from shimproto.wire import Params

from ..registry import Registry

NAME = "list"


async def handle(m: Registry, p: Params) -> list:
    out = [m.view(e) for e in m.entries.values() if e.state.listed]
    if planted("stopped-containers-vanish"):
        out = [c for c in out if c["status"] != STOPPED]
    if not p.bool("all"):
        out = [c for c in out if c["status"] in (RUNNING, PAUSED, RESTARTING)]
    return sorted(out, key=lambda c: c["created_at"])
