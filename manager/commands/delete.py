"""delete {id, force?, exec_id?} -> {exit}: remove a container (with exec_id: one of its stopped exec processes).

A running container is refused unless force, which kills it first (SIGKILL) and waits for its exit. The shim
deletes the runtime's container, unmounts the writable root and exits; then the manager removes the metadata, the
log and the writable layer. Errors: not_found, invalid_state."""

from __future__ import annotations

import signal

from shimproto.errors import InvalidState, Unavailable
from shimproto.model import CREATED, STOPPED
from shimproto.wire import Params

from ..registry import Entry, Manager

NAME = "delete"
FORCE_WAIT = 10.0


async def remove(m: Manager, e: Entry, force: bool) -> dict | None:
    async with e.lock:
        if e.removed:
            return None
        exit = None
        if e.lost_exit is None:
            st = await m.state(e, timeout=5.0)
            status = st.get("status")
            if status not in (STOPPED, CREATED) and e.lost_exit is None:
                if st.get("empty_shim"):  # a create that never finished
                    await m.call(e, "shutdown", {"force": True})
                    await m.forget(e)
                    return None
                if not force:
                    raise InvalidState(f"cannot remove {status} container {e.id}: stop it first or use force")
                if status != "unknown":
                    await m.call(e, "kill", {"signal": int(signal.SIGKILL), "all": True})
                    res = await m.call(e, "wait", {"timeout": FORCE_WAIT}, timeout=FORCE_WAIT + 5)
                    if not res.get("exited"):  # type: ignore[union-attr]
                        raise Unavailable(f"container {e.id} did not exit within {FORCE_WAIT:g}s of SIGKILL")
            if e.lost_exit is None:
                try:
                    exit = (await m.call(e, "delete", timeout=30.0))["exit"]  # type: ignore[index]
                except Unavailable:
                    if e.lost_exit is None:
                        raise
        if e.lost_exit is not None:
            exit = e.lost_exit.to_wire()
        await m.forget(e)
        return exit


async def handle(m: Manager, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    exec_id = p.str("exec_id", "")
    if exec_id:  # only that exec process's record and output
        return await m.call(e, "delete", {"exec_id": exec_id})  # type: ignore[return-value]
    return {"exit": await remove(m, e, p.bool("force"))}
