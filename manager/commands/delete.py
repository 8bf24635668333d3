"""delete {id, force?, exec_id?} -> {exit}: remove a container (with exec_id: one of its stopped exec processes).

A running container is refused unless force, which kills it first (SIGKILL) and waits for its exit. The manager
writes a delete intent, the shim deletes the runtime's container, unmounts the writable root and exits, then the
manager records the delete event and removes the log, the writable layer and the metadata (last). A manager killed
midway finishes the delete on its next start. Errors: not_found, invalid_state.
"""

from __future__ import annotations

import logging
import signal
import time

from shimproto.errors import InvalidState, ShimdError, Unavailable
from shimproto.model import CREATED, STOPPED
from shimproto.wire import Params

from .. import faults
from ..registry import Entry, Manager, _wait_gone

NAME = "delete"
log = logging.getLogger("shimd.manager")
FORCE_WAIT = 10.0


async def remove(m: Manager, e: Entry, force: bool) -> dict | None:
    async with e.lock:
        if e.removed:
            return None
        if not e.lost:
            st = await m.fresh_state(e, timeout=5.0)
            status = st.get("status")
            if status not in (STOPPED, CREATED) and not e.lost and not force and "holds no container" not in \
                    st.get("error", ""):
                raise InvalidState(f"cannot remove {status} container {e.id}: stop it first or use force")
        m.store.set_intent(e.id, "delete")
        faults.point("delete:intent")
        return await finish_delete(m, e)


async def finish_delete(m: Manager, e: Entry) -> dict | None:
    """Delete e for good: kill it if it runs, have its shim delete it (or clean up after a dead shim), then
    remove the files. Also what a restarted manager does for a delete intent it finds."""
    e.busy = "delete"
    deleted = False
    if not e.lost and e.client is not None:
        try:
            await _delete_in_shim(m, e)
            deleted = True
        except ShimdError:
            if e.client is not None and not _gone(e):
                e.busy = ""
                raise
            e.lost = True
    if not deleted:  # the shim died or was never reached: clean up after it
        m.disconnect(e)
        await m.settle_dead_shim(e)
    faults.point("delete:shim-deleted")
    exit = e.exit
    m.forget(e)
    return exit


async def _delete_in_shim(m: Manager, e: Entry) -> None:
    st = await m.fresh_state(e, timeout=5.0)
    if st.get("status") == "deleted":  # it deleted the container already; the shim is on its way out
        pid = e.shim_pid
        m.disconnect(e)
        await _wait_gone(pid, e.id)
        return
    if st.get("status") not in (STOPPED, CREATED) and "holds no container" not in st.get("error", ""):
        t0 = time.monotonic()
        await m.call(e, "kill", {"signal": int(signal.SIGKILL), "all": True})
        res = await m.call(e, "wait", {"timeout": FORCE_WAIT}, timeout=FORCE_WAIT + 5)
        if time.monotonic() - t0 > 2:
            log.warning("[%s] delete: kill and wait took %.1fs", e.id, time.monotonic() - t0)
        if not res.get("exited"):  # type: ignore[union-attr]
            raise Unavailable(f"container {e.id} did not exit within {FORCE_WAIT:g}s of SIGKILL")
        faults.point("delete:killed")
    if "holds no container" in st.get("error", ""):
        await m.call(e, "shutdown", {"force": True})
    else:
        res = await m.call(e, "delete", {"since": m.events.last_seq(e.id)}, timeout=30.0)
        for ev in res.get("events", []):  # type: ignore[union-attr]
            m.record(e, ev)
        if res.get("exit") and e.exit is None:  # type: ignore[union-attr]
            e.status.update(status=STOPPED, exit=res["exit"])  # type: ignore[index]
    pid = e.shim_pid
    m.disconnect(e)
    await _wait_gone(pid, e.id)


def _gone(e: Entry) -> bool:
    from ..registry import shim_alive

    return not shim_alive(e.shim_pid, e.id)


async def handle(m: Manager, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    exec_id = p.str("exec_id", "")
    if exec_id:  # only that exec process's record and output
        return await m.call(e, "delete", {"exec_id": exec_id})  # type: ignore[return-value]
    return {"exit": await remove(m, e, p.bool("force"))}
