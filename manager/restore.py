"""What a starting manager does before it serves: reattach to every shim it finds and finish or undo what a killed
manager left half done, then shut down shims that have no metadata. A delete intent is rolled forward. A create
intent is rolled back, unless its call carried a request key and the shim already holds the container: that
client will send the same call again, and gets the container it asked for (lifecycle.create recognises the key).
A commit intent (a commit paused the container to read its layer) is undone: the container is resumed, unless
the commit's pause never took (then whoever paused it, the user, keeps it paused). A failure with one container
is logged and never stops the manager."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil

from shimproto import version
from shimproto.errors import DeadlineExceeded, ShimdError, Unavailable
from shimproto.model import RUNNING
from shimproto.plant import planted

from . import faults, launcher, relaunch
from .entry import Entry
from .lifecycle import finish_delete, rollback_create, shutdown_shim, step, watch_auto_remove
from .registry import Registry, read_pid, shim_alive
from .store import Meta

log = logging.getLogger("shimd.manager")


async def restore(r: Registry) -> dict:
    """Reattach to every shim on disk; finish or undo what a killed manager left half done."""
    for meta in r.store.load_all():  # until its shim answers, a container is what its recorded events say
        r.add(Entry(meta))
    for id in r.store.intent_ids():  # a create that died before its metadata was written
        if id not in r.entries:
            r.add(Entry(Meta.placeholder(id)))
    faults.point("restore:scanned")
    shim_dirs = relaunch.shim_dirs(r)  # none after a reboot (a tmpfs --state)
    counts = {"running": 0, "lost": 0, "rolled_back": 0, "kept": 0, "rolled_forward": 0, "thawed": 0, "orphans": 0}
    jobs = []
    for i, e in enumerate(list(r.entries.values())):
        if i == len(r.entries) // 2:
            faults.point("restore:half")
        jobs.append(_restore_one(r, e, counts))
    await asyncio.gather(*jobs)
    counts["orphans"] = await _orphan_shims(r)
    for e in [e for e in r.entries.values() if relaunch.wanted(r, e, e.id in shim_dirs)]:
        r.background(relaunch.relaunch(r, e))
        counts["relaunched"] = counts.get("relaunched", 0) + 1
    for e in r.entries.values():
        if e.meta.spec.auto_remove:
            watch_auto_remove(r, e)
    log.info("restored %d containers %s", len(r.entries), counts)
    return counts


async def _restore_one(r: Registry, e: Entry, counts: dict) -> None:
    try:
        await _restore(r, e, counts)
    except Exception:
        log.exception("[%s] restore failed; it stays as last recorded", e.id)


async def _restore(r: Registry, e: Entry, counts: dict) -> None:
    pid = read_pid(os.path.join(r.store.shim_dir(e.id), "shim.pid"))
    alive = bool(pid) and shim_alive(pid, e.id)
    intent, key = r.store.intent(e.id)
    if intent == "create" and not (key and key == e.meta.request_key and alive and await _holds(r, e.id)):
        await rollback_create(r, e, pid if alive else 0)
        counts["rolled_back"] += 1
        return
    if intent == "create":  # its client will ask again with the same key: keep what it asked for
        r.store.clear_intent(e.id)
        counts["kept"] += 1
    if intent == "delete":
        if alive:
            r.connect(e, pid)
        await finish_delete(r, e, key)
        counts["rolled_forward"] += 1
        return
    if intent == "commit" and not alive:
        r.store.clear_intent(e.id)  # nothing left to resume
    if not alive:
        e.move("lose")
        await r.settle_dead_shim(e)
        counts["lost"] += 1
        return
    r.connect(e, pid)
    e.move("attach")
    if intent == "commit" and not planted("restore-leaves-commit-paused"):
        counts["thawed"] += await _thaw(r, e, key)
    try:
        # both at once: one wake-up of the shim, one round trip
        ping, state = await asyncio.gather(r.call(e, "ping", timeout=5.0), r.call(e, "state", timeout=5.0),
                                           return_exceptions=True)
        if isinstance(ping, BaseException):
            raise ping
        e.protocol = version.of_ping(ping)
        if e.protocol != version.PROTOCOL:
            log.info("[%s] its shim speaks protocol %d (this manager %d)", e.id, e.protocol, version.PROTOCOL)
        if isinstance(state, BaseException):
            raise state
        r.events.observe(e.id, state)  # type: ignore[arg-type]
    except ShimdError as err:
        log.warning("[%s] restore: state: %s", e.id, err.message)
    if planted("restore-takes-shim-pid"):
        r.events.observe(e.id, {"pid": pid})
    r.start_pump(e)
    counts["running"] += e.status.get("status") == RUNNING


async def _thaw(r: Registry, e: Entry, attempt: str) -> bool:
    """A commit paused e (or was about to) and its manager died: finish that pause and undo it. Sent again with
    the commit's own step keys, the pause is answered with its first outcome (awaited if the shim is still doing
    it, done now if it never came) and the resume too if the commit got that far, so nothing is done twice. A
    pause that fails now found the container not running: paused by someone else (or stopped), it is left so.
    The intent stays when the shim does not answer: the next start tries again."""
    for name in ("pause", "resume"):
        try:
            await r.call(e, name, timeout=30.0, key=step(attempt, name))
        except (Unavailable, DeadlineExceeded) as err:
            log.warning("[%s] restore: the %s of a commit under way: %s (kept for the next start)", e.id, name,
                        err.message)
            return False
        except ShimdError as err:
            log.warning("[%s] restore: the %s of a commit under way: %s", e.id, name, err.message)
            if name == "pause":  # it had not paused it: left as it is
                r.store.clear_intent(e.id)
                return False
    r.store.clear_intent(e.id)
    log.info("[%s] resumed: a commit had paused it when its manager died", e.id)
    return True


async def _holds(r: Registry, id: str) -> bool:
    """Does the shim of id hold its container (a create got at least that far)?"""
    client = r.shim_client(id)
    try:
        await client.call("state", {"id": id}, timeout=5.0)
        return True
    except ShimdError:
        return False
    finally:
        client.close()


async def _orphan_shims(r: Registry) -> int:
    """Shim directories with no metadata: a manager died between removing the metadata and the shim's dir,
    or a shim outlived everything. Shut the shim down (if alive) and clean up."""
    n = 0
    for id in os.listdir(r.store.shims):
        if id in r.entries:
            continue
        n += 1
        pid = read_pid(os.path.join(r.store.shim_dir(id), "shim.pid"))
        if pid and shim_alive(pid, id):
            await shutdown_shim(r, id, pid, "orphan")
        await launcher.cleanup_dead(id, r.store.shim_dir(id), r.runtime, r.store.runc_root, r.store.dir(id))
        shutil.rmtree(r.store.shim_dir(id), ignore_errors=True)
    return n
