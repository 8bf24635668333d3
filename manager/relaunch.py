"""After a reboot: the containers whose restart policy asks for it run again, each under a new shim.

A reboot empties --state (a tmpfs): restore finds the container's metadata in --root but neither its shim nor its
shim directory, and settles it as lost. If its policy says so (`always`; `unless-stopped` unless the user had
stopped it: manager/restarts.py), the manager makes a new shim for it and has it create and start the container on
the same writable layer, log, network and volumes, as a create does. The shim's journal starts over at 1, so the
event log first ends the old incarnation's events (a `delete` event with reason `reboot`). A container that cannot
be run again stays lost with its last exit. Done in the background once restore is over, so READY never waits on
it.
"""

from __future__ import annotations

import logging
import os

from shimproto.errors import ShimdError

from . import attach, launcher, restarts
from .entry import Entry
from .lifecycle import shim_request, shutdown_shim
from .registry import Registry

log = logging.getLogger("shimd.manager")


def wanted(r: Registry, e: Entry, shim_dir_was_there: bool) -> bool:
    return e.lost and not shim_dir_was_there and restarts.after_reboot(r.store.dir(e.id), e.meta.spec)


async def relaunch(r: Registry, e: Entry) -> None:
    async with e.lock:
        if not e.lost:
            return
        if r.events.live(e.id):
            r.events.synthesize(e.id, "delete", reason="reboot")
        e.status = r.events.status(e.id)  # the new incarnation's (the old one's was dropped with its events)
        e.move("relaunch")
        try:
            await r.launch_shim(e)
            spec = e.meta.spec
            req = shim_request(r, e.meta, attach.network_plan(r, spec), attach.mount_plans(r, spec))
            await r.call(e, "create", req.to_wire(), timeout=30.0)
            st = await r.call(e, "start", timeout=30.0)
        except (ShimdError, OSError) as err:
            log.error("[%s] run again after a reboot: %s", e.id, err)
            pid = e.shim_pid if e.client is not None else 0
            r.disconnect(e)
            if pid:
                await shutdown_shim(r, e.id, pid, "run again after a reboot")
            await launcher.cleanup_dead(e.id, r.store.shim_dir(e.id), r.runtime, r.store.runc_root, r.store.dir(e.id))
            e.move("lose")
            return
        r.events.observe(e.id, st)  # type: ignore[arg-type]
        e.move("created")
        e.settled.clear()
        r.start_pump(e)
        log.info("[%s] running again after a reboot (restart policy %s)", e.id, spec.restart)


def shim_dirs(r: Registry) -> set[str]:
    return set(os.listdir(r.store.shims))
