"""create {id?, image? | rootfs?, args, env?, cwd?, auto_remove?, start?, memory_limit?, pids_limit?, tty?, stdin?,
log_max_size?, log_max_files?} -> inspect

Makes a container: validates the request, records a create intent, writes its metadata, launches its shim, has
the shim create it (and start it when start is true), then clears the intent. On failure everything made so far is
undone; if the manager dies midway, the next one rolls the create back (see registry.restore). Errors:
invalid_argument (bad id, no command, rootfs not a directory, both/neither image and rootfs), already_exists (id in
use), not_found (unknown image), runtime_failed (runc refused).
"""

from __future__ import annotations

import logging
import os
import secrets
import time

from shimproto.errors import AlreadyExists, InvalidArgument
from shimproto.model import check_id
from shimproto.wire import Params

from .. import faults, images
from ..registry import Entry, Manager
from ..store import Meta

NAME = "create"
log = logging.getLogger("shimd.manager")


def _lower(m: Manager, p: Params) -> tuple[str, str]:
    image = p.str("image", "")
    rootfs = p.str("rootfs", "")
    if bool(image) == bool(rootfs):
        raise InvalidArgument("give exactly one of an image or --rootfs DIR")
    if rootfs:
        if not os.path.isabs(rootfs):
            raise InvalidArgument(f"rootfs {rootfs!r} must be an absolute path")
        if not os.path.isdir(rootfs):
            raise InvalidArgument(f"rootfs {rootfs}: no such directory")
        return "", rootfs
    return image, images.resolve(m.store.root, image)


def _meta(m: Manager, p: Params, id: str) -> Meta:
    args = p.strlist("args", required=True)
    if not args:
        raise InvalidArgument("no command given for the container")
    memory, pids = p.int("memory_limit"), p.int("pids_limit")
    if memory is not None and memory < 4 * 1024 * 1024:
        raise InvalidArgument(f"memory limit {memory} is below the minimum of 4 MiB")
    if pids is not None and pids < 1:
        raise InvalidArgument(f"pids limit {pids} must be at least 1")
    log_size, log_files = p.int("log_max_size", m.defaults.log_max_size), p.int("log_max_files",
                                                                                m.defaults.log_max_files)
    if log_size < 0 or log_files < 2:
        raise InvalidArgument("log max-size must be >= 0 and max-file >= 2")
    image, lower = _lower(m, p)
    return Meta(id=id, args=args, lower=lower, image=image, env=p.strlist("env"), cwd=p.str("cwd", "/"),
                created_at=time.time_ns(), auto_remove=p.bool("auto_remove"), memory_limit=memory,
                pids_limit=pids, tty=p.bool("tty"), stdin=p.bool("stdin"), log_max_size=log_size,
                log_max_files=log_files)


async def handle(m: Manager, p: Params) -> dict:
    id = p.str("id", "") or secrets.token_hex(6)
    check_id(id)
    if id in m.entries or id in m.reserved or os.path.exists(m.store.dir(id)):
        raise AlreadyExists(f"container name {id!r} is already in use")
    m.reserved.add(id)
    try:
        meta = _meta(m, p, id)
        e = Entry(meta, busy="create", status=m.events.status(id))
        m.store.set_intent(id, "create")
        try:
            m.store.save(meta)
            faults.point("create:intent")
            await m.launch_shim(e)
            faults.point("create:launched")
            upper, work = m.store.fs(id)
            await m.call(e, "create", {
                "lower": meta.lower, "upper": upper, "work": work, "log_path": m.store.log_path(id),
                "args": meta.args, "env": meta.env, "cwd": meta.cwd, "hostname": id,
                "cgroups_path": f"/shimd/{id}", "memory_limit": meta.memory_limit, "pids_limit": meta.pids_limit,
                "terminal": meta.tty, "stdin": meta.stdin, "log_max_size": meta.log_max_size,
                "log_max_files": meta.log_max_files,
            }, timeout=30.0)
            faults.point("create:created")
            if p.bool("start"):
                await m.call(e, "start", timeout=30.0)
                faults.point("create:started")
            m.store.clear_intent(id)
        except BaseException:
            await _undo(m, e)
            raise
        m.entries[id] = e
        e.busy = ""
    finally:
        m.reserved.discard(id)
    m.start_pump(e)
    if meta.auto_remove and p.bool("start"):
        m.watch_auto_remove(e)
    return await m.inspect(e)


async def _undo(m: Manager, e: Entry) -> None:
    """Take back a half-made container, as a restarted manager does for a create it finds unfinished."""
    pid = e.shim_pid if e.client is not None else 0
    m.disconnect(e)
    await m.rollback_create(e, pid)
