"""The life of a container as the manager drives it: create, roll back a failed create, delete, auto-remove.

Create and delete record an intent first (<state>/intents/<id>), so a manager killed at any step converges on the
next start (manager/restore.py): a create is rolled back (or kept, for a client that will repeat it), a delete is
rolled forward. Each step that asks the shim to change something passes the client's request key with the step's
name, so a repeat of the same call after a manager restart has one effect: the shim answers a step it has done with
its first answer. A create's key is kept in its metadata, a delete's outcome under <state>/requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import signal
import time

from shimproto.errors import AlreadyExists, InvalidArgument, InvalidState, NotFound, ShimdError, Unavailable
from shimproto.model import CREATED, DELETED, RESTARTING, STOPPED, check_id, parse_signal
from shimproto.plans import MountPlan, NamespacePlan, NetworkPlan
from shimproto.plant import planted
from shimproto.spec import MOUNT_DATA_MAX, ContainerSpec, ShimCreate, overlay_data

from . import attach, faults, launcher, restarts
from .entry import CREATING, STATES, Entry
from .registry import EVENT_POLL, SHIM_TIMEOUT, Registry, shim_alive, wait_gone
from .store import Meta

log = logging.getLogger("shimd.manager")
FORCE_WAIT = 10.0
RESTART_PROTOCOL = 2  # the first shim protocol with `restart`


def step(key: str, name: str) -> str:
    """The key of one shim call made for a client's request (none when the client sent none); the shim takes at
    most 64 characters, so a long one is shortened to a digest of the same two parts."""
    if not key:
        return ""
    k = f"{key}/{name}"
    return k if len(k) <= 64 else f"{hashlib.sha256(k.encode()).hexdigest()[:48]}/{name}"[:64]


# --- create ----------------------------------------------------------------------------------------------------

def _resolve(r: Registry, spec: ContainerSpec, id: str) -> tuple[str, str]:
    """The container's overlay lower dirs (':'-joined, top first) and image digest; the image's config applied
    to spec, so spec is what the shim runs."""
    from .images import config as image_config  # the image code loads on first use: restores never pay for it

    if spec.rootfs:
        if not os.path.isabs(spec.rootfs):
            raise InvalidArgument(f"rootfs {spec.rootfs!r} must be an absolute path")
        if not os.path.isdir(spec.rootfs):
            raise InvalidArgument(f"rootfs {spec.rootfs}: no such directory")
        if ":" in spec.rootfs or "," in spec.rootfs:
            raise InvalidArgument(f"rootfs {spec.rootfs}: overlay cannot take a path with ':' or ','")
        spec.env = image_config.with_path(spec.env) if spec.env else spec.env
        lower, digest = spec.rootfs, ""
    else:
        res = r.images.resolve(spec.image)
        image_config.apply(spec, res.config)
        lower, digest = ":".join(res.lowers), res.digest
    upper, work = r.store.fs(id)
    size = len(overlay_data(lower, upper, work))
    if size > MOUNT_DATA_MAX:
        raise InvalidArgument(f"image {spec.image} has {lower.count(':') + 1} layers: their paths make "
                              f"{size} bytes of overlay options, more than the kernel's {MOUNT_DATA_MAX}")
    return lower, digest


def _pick_id(spec: ContainerSpec, key: str) -> str:
    if spec.id:
        return check_id(spec.id)
    # the same key names the same container, so a repeated create finds the first one
    return hashlib.sha256(key.encode()).hexdigest()[:12] if key else secrets.token_hex(6)


async def create(r: Registry, spec: ContainerSpec, and_start: bool, key: str = "") -> Entry:
    """Make (and start, with and_start) a container; on any failure undo everything made so far."""
    spec.id = _pick_id(spec, key)
    id = spec.id
    first = r.entries.get(id)
    if key and first is not None and first.meta.request_key == key:  # a repeat: its first call got this far
        if and_start and first.status.get("status") == CREATED:
            try:
                await start(r, first, key)  # start() names the step: the same key the first call sent
            except ShimdError:  # the first call would have rolled the container back: so does its repeat
                await remove(r, first, force=True)
                raise
        return first
    if id in r.entries or id in r.reserved or os.path.exists(r.store.dir(id)):
        raise AlreadyExists(f"container name {id!r} is already in use")
    r.reserved.add(id)
    try:
        lower, digest = _resolve(r, spec, id)
        meta = Meta(spec=spec, lower=lower, created_at=time.time_ns(), request_key=key, image_digest=digest,
                    cgroup=f"{r.defaults.cgroup_parent}/{id}")
        attach.check_log_path(spec)
        namespaces, network = attach.namespace_plan(r, spec), attach.network_plan(r, spec)
        mounts = attach.mount_plans(r, spec)
        e = Entry(meta, state=STATES[CREATING], status=r.events.status(id))
        r.store.set_intent(id, "create", key)
        try:
            r.store.save(meta)
            faults.point("create:intent")
            await r.launch_shim(e)
            faults.point("create:launched")
            req = shim_request(r, meta, network, mounts, namespaces)
            await r.call(e, "create", req.to_wire(), timeout=30.0, key=step(key, "create"))
            faults.point("create:created")
            if and_start and not planted("create-skips-start"):  # planted: answered as started, left created
                await r.call(e, "start", timeout=30.0, key=step(key, "start"))
                faults.point("create:started")
            r.store.clear_intent(id)
        except BaseException:
            faults.point("create:failed")
            if planted("failed-create-leaves-container"):  # kept and listed, as if it had worked
                r.add(e), e.move("created")  # type: ignore[func-returns-value]
                raise
            pid = e.shim_pid if e.client is not None and shim_alive(e.shim_pid, id) else 0  # dead: no shutdown
            r.disconnect(e)
            await rollback_create(r, e, pid)
            raise
        r.add(e)
        e.move("created")
    finally:
        r.reserved.discard(id)
    r.start_pump(e)
    if network.mode == "cni":
        r.background(attach.sync_peers(r, network.network))
    if spec.auto_remove and and_start:
        watch_auto_remove(r, e)
    return e


def shim_request(r: Registry, meta: Meta, network: NetworkPlan, mounts: list[MountPlan],
                 namespaces: NamespacePlan | None = None) -> ShimCreate:
    upper, work = r.store.fs(meta.id)
    return ShimCreate(spec=meta.spec, lower=meta.lower, upper=upper, work=work,
                      log_path=meta.spec.log_path or r.store.log_path(meta.id), cgroups_path=meta.cgroup_path,
                      files_dir=r.store.dir(meta.id), network=network, mounts=mounts,
                      namespaces=namespaces or attach.namespace_plan(r, meta.spec))


SHUTDOWN_TIMEOUT = 30.0  # seconds a shim may take to answer shutdown (it kills and deletes its container first)


async def rollback_create(r: Registry, e: Entry, pid: int) -> None:
    """Take back a create that did not finish: the shim kills and deletes whatever it made, then exits."""
    if pid:
        await shutdown_shim(r, e.id, pid, "roll back create")
    await launcher.cleanup_dead(e.id, r.store.shim_dir(e.id), r.runtime, r.store.runc_root, r.store.dir(e.id))
    e.move("roll_back")
    r.store.remove(e.id)
    r.entries.pop(e.id, None)
    log.info("[%s] rolled back an unfinished create", e.id)


async def shutdown_shim(r: Registry, id: str, pid: int, why: str) -> None:
    """Have a shim kill and delete whatever it holds and exit; wait until it is gone. A shim that dies first ends
    the call at once: one already on its way out (a manager killed mid-rollback had asked it) answers nothing, and
    waiting out the call's timeout would hold up a restore for 30 s."""
    client = r.shim_client(id)
    call = asyncio.ensure_future(client.call("shutdown", {"id": id, "force": True}, timeout=SHUTDOWN_TIMEOUT))
    died = asyncio.ensure_future(wait_gone(pid, id, timeout=SHUTDOWN_TIMEOUT))
    try:
        await asyncio.wait({call, died}, return_when=asyncio.FIRST_COMPLETED)
        if call.done():
            call.result()
    except ShimdError as err:
        log.warning("[%s] %s: shim shutdown: %s", id, why, err)
    finally:
        call.cancel()
        died.cancel()
        client.close()
    await wait_gone(pid, id)


# --- start and restart ---------------------------------------------------------------------------------------------

async def start(r: Registry, e: Entry, key: str = "") -> None:
    """Start a created container, or run a stopped one again (as docker start does)."""
    async with e.lock:
        probe = await r.probe(e, timeout=5.0)
        if probe.status in (STOPPED, RESTARTING):  # a back-off under way is dropped: it runs now
            if e.protocol < RESTART_PROTOCOL:
                raise InvalidState(f"cannot start stopped container {e.id} again: its shim predates restart "
                                   f"(protocol {e.protocol}); remove it and run it again")
            st = await r.call(e, "restart", {"start": True}, timeout=30.0, key=step(key, "restart"))
        else:
            st = await r.call(e, "start", timeout=30.0, key=step(key, "start"))
        r.events.observe(e.id, st)  # type: ignore[arg-type]
        restarts.user_start(r.store.dir(e.id))
    if e.meta.spec.auto_remove:
        watch_auto_remove(r, e)


async def stop(r: Registry, e: Entry, grace: float, key: str = "") -> dict | None:
    """The stop signal (the image's StopSignal, else SIGTERM), then SIGKILL after grace seconds, as docker stop;
    the exit (None if it never ran)."""
    probe = await r.probe(e, timeout=5.0)
    restarts.user_kill(r.store.dir(e.id), e.meta.spec, int(signal.SIGKILL))  # a stop is the user's, whatever it sends
    if probe.status == STOPPED or e.lost:
        return e.exit
    if probe.status == RESTARTING:  # the shim drops the back-off, or kills the run it is making once it runs
        await r.call(e, "kill", {"signal": int(signal.SIGKILL)}, key=step(key, "kill"))
        res = await r.call(e, "wait", {"timeout": 30.0}, timeout=40.0)
        return res.get("exit")  # type: ignore[union-attr]
    if probe.status != CREATED and grace > 0:
        sig = parse_signal(e.meta.spec.stop_signal) if e.meta.spec.stop_signal else int(signal.SIGTERM)
        await r.call(e, "kill", {"signal": sig}, key=step(key, "term"))
        faults.point("stop:signalled")
        res = await r.call(e, "wait", {"timeout": grace}, timeout=grace + 10)
        if res.get("exited"):  # type: ignore[union-attr]
            return res["exit"]  # type: ignore[index]
    await r.call(e, "kill", {"signal": int(signal.SIGKILL), "all": True}, key=step(key, "kill"))
    res = await r.call(e, "wait", {"timeout": 30.0}, timeout=40.0)
    return res.get("exit")  # type: ignore[union-attr]


# --- delete --------------------------------------------------------------------------------------------------------

async def remove(r: Registry, e: Entry, force: bool, key: str = "") -> dict | None:
    """Delete a container: refused while it runs unless force (then killed first). Its exit, if it had one."""
    async with e.lock:
        if e.removed:
            return None
        e.state.check_delete(e)
        if e.state.reachable:
            probe = await r.probe(e, timeout=5.0)
            if probe.status not in (STOPPED, CREATED, DELETED) and probe.shim_holds_container and not e.lost \
                    and not force:
                raise InvalidState(f"cannot remove {probe.status} container {e.id}: stop it first or use force")
        r.store.set_intent(e.id, "delete", key)
        faults.point("delete:intent")
        if planted("remove-leaves-container"):  # forgotten, its shim and container left running
            e.move("delete"), r.forget(e)  # type: ignore[func-returns-value]
            return None
        return await finish_delete(r, e, key)


async def finish_delete(r: Registry, e: Entry, key: str = "") -> dict | None:
    """Delete e for good: kill it if it runs, have its shim delete it (or clean up after a dead shim), then
    remove the files. Also what a restarted manager does for a delete intent it finds."""
    e.move("delete")
    deleted = False
    if e.client is not None:
        try:
            await _delete_in_shim(r, e, key)
            deleted = True
        except ShimdError:
            if e.client is not None and shim_alive(e.shim_pid, e.id):
                e.move("delete_failed")
                raise
    if not deleted:  # the shim died or was never reached: clean up after it
        r.disconnect(e)
        await r.settle_dead_shim(e)
    faults.point("delete:shim-deleted")
    exit = e.exit
    if key:  # before the files go: a repeat of this call after a crash finds its answer here
        r.store.save_outcome(key, {"exit": exit})
    r.forget(e)
    r.background(attach.sync_peers(r, e.meta.spec.network))
    return exit


async def _delete_in_shim(r: Registry, e: Entry, key: str) -> None:
    probe = await r.probe(e, timeout=5.0)
    if probe.status == DELETED:  # it deleted the container already; the shim is on its way out
        pid = e.shim_pid
        r.disconnect(e)
        await wait_gone(pid, e.id)
        return
    if probe.status not in (STOPPED, CREATED) and probe.shim_holds_container:
        t0 = time.monotonic()
        await r.call(e, "kill", {"signal": int(signal.SIGKILL), "all": True}, key=step(key, "kill"))
        res = await r.call(e, "wait", {"timeout": FORCE_WAIT}, timeout=FORCE_WAIT + 5)
        if time.monotonic() - t0 > 2:
            log.warning("[%s] delete: kill and wait took %.1fs", e.id, time.monotonic() - t0)
        if not res.get("exited"):  # type: ignore[union-attr]
            raise Unavailable(f"container {e.id} did not exit within {FORCE_WAIT:g}s of SIGKILL")
        faults.point("delete:killed")
    if not probe.shim_holds_container:
        await r.call(e, "shutdown", {"force": True}, key=step(key, "shutdown"))
    else:
        res = await r.call(e, "delete", {"since": r.events.last_seq(e.id)}, timeout=30.0, key=step(key, "delete"))
        for ev in res.get("events", []):  # type: ignore[union-attr]
            r.record(e, ev)
        if res.get("exit") and e.exit is None:  # type: ignore[union-attr]
            r.events.observe(e.id, {"status": STOPPED, "exit": res["exit"]})  # type: ignore[index]
    pid = e.shim_pid
    r.disconnect(e)
    await wait_gone(pid, e.id)


def deleted_before(r: Registry, id: str, key: str) -> dict:
    """The answer to a repeat of a delete whose container is gone: the first call's, else NotFound."""
    outcome = r.store.outcome(key) if key else None
    if outcome is None:
        raise NotFound(f"no such container: {id}")
    return outcome


# --- auto-remove ---------------------------------------------------------------------------------------------------

def watch_auto_remove(r: Registry, e: Entry) -> None:
    async def watch() -> None:
        while not e.removed and e.status.get("status") != STOPPED:
            try:
                await r.call(e, "wait", {"timeout": EVENT_POLL}, timeout=EVENT_POLL + SHIM_TIMEOUT)
            except ShimdError:
                if e.lost:
                    break
                await asyncio.sleep(1.0)
                continue
            await asyncio.sleep(0)
            if e.status.get("status") != STOPPED:  # the exit event may trail the wait reply
                if (await r.probe(e)).status != STOPPED:
                    continue
        if not e.removed:
            try:
                await remove(r, e, force=False)
            except ShimdError as err:
                log.warning("[%s] auto-remove failed: %s", e.id, err)

    r.background(watch())
