"""create {id?, image? | rootfs?, args, env?, cwd?, auto_remove?, start?, memory_limit?, pids_limit?, tty?, stdin?,
log_max_size?, log_max_files?} -> inspect

Makes a container: validates the request, writes its metadata, launches its shim and has the shim create it (and
start it when start is true). On any failure everything made so far is undone: no metadata, shim or mount is left.
Errors: invalid_argument (bad id, no command, rootfs not a directory, both/neither image and rootfs),
already_exists (id in use), not_found (unknown image), runtime_failed (runc refused).
"""

from __future__ import annotations

import logging
import os
import secrets
import time

from shimproto.errors import AlreadyExists, InvalidArgument, ShimdError
from shimproto.model import check_id
from shimproto.wire import Params

from .. import images
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


async def handle(m: Manager, p: Params) -> dict:
    id = p.str("id", "") or secrets.token_hex(6)
    check_id(id)
    args = p.strlist("args", required=True)
    if not args:
        raise InvalidArgument("no command given for the container")
    memory = p.int("memory_limit")
    pids = p.int("pids_limit")
    if memory is not None and memory < 4 * 1024 * 1024:
        raise InvalidArgument(f"memory limit {memory} is below the minimum of 4 MiB")
    if pids is not None and pids < 1:
        raise InvalidArgument(f"pids limit {pids} must be at least 1")
    if id in m.entries or id in m.reserved or os.path.exists(m.store.dir(id)):
        raise AlreadyExists(f"container name {id!r} is already in use")
    m.reserved.add(id)
    try:
        image, lower = _lower(m, p)
        meta = Meta(id=id, args=args, lower=lower, image=image, env=p.strlist("env"), cwd=p.str("cwd", "/"),
                    created_at=time.time_ns(), auto_remove=p.bool("auto_remove"),
                    memory_limit=memory, pids_limit=pids)
        e = Entry(meta)
        m.store.save(meta)
        try:
            await m.launch_shim(e)
            upper, work = m.store.fs(id)
            await m.call(e, "create", {
                "lower": lower, "upper": upper, "work": work, "log_path": m.store.log_path(id),
                "args": args, "env": meta.env, "cwd": meta.cwd, "hostname": id[:63],
                "cgroups_path": f"/shimd/{id}", "memory_limit": memory, "pids_limit": pids,
                "terminal": p.bool("tty"), "stdin": p.bool("stdin"),
                "log_max_size": p.int("log_max_size", 0), "log_max_files": p.int("log_max_files", 5),
            }, timeout=30.0)
        except BaseException:
            await _undo(m, e)
            raise
        m.entries[id] = e
    finally:
        m.reserved.discard(id)
    if p.bool("start"):
        from .start import start

        try:
            await start(m, e)
        except ShimdError:
            from .delete import remove

            await remove(m, e, force=True)
            raise
    return await m.inspect(e)


async def _undo(m: Manager, e: Entry) -> None:
    """Take back a half-made container: stop its shim (which unmounts what it mounted), drop the metadata."""
    if e.client is not None:
        try:
            await e.client.call("shutdown", {"force": True}, timeout=10.0)
        except ShimdError as err:
            log.warning("[%s] undo create: shim shutdown: %s", e.id, err)
            await m.mark_lost(e)
    await m.forget(e)
