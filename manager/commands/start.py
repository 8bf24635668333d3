"""start {id} -> inspect: start a created container. Errors: not_found, invalid_state (not created)."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Entry, Manager

NAME = "start"


async def start(m: Manager, e: Entry) -> None:
    await m.call(e, "start", timeout=30.0)
    e.status.update(status="running")
    if e.meta.auto_remove:
        m.watch_auto_remove(e)


async def handle(m: Manager, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    async with e.lock:
        await start(m, e)
    return await m.inspect(e)
