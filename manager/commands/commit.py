"""commit {id, ref?, comment?, author?, pause?, key?} -> image view (as pull's): docker commit.

The container's writable layer (its overlay upper directory, read on disk: overlay whiteouts become `.wh.NAME`,
an opaque directory `.wh..wh..opq`; the runtime's empty mount points of /etc/hostname, hosts and resolv.conf are
left out) becomes one new layer on top of the container's image; the config is the image's (Entrypoint, Cmd, Env
... unchanged) with rootfs.diff_ids and history extended. A container of the built-in busybox or of a --rootfs
tree gets its lower tree as a base layer under it, and busybox's config. A running container is paused while its
layer is read (pause false: not), under a `commit` intent: a manager killed meanwhile has the next one resume it
(manager/restore.py), and a repeat of the call (same key) pauses it anew. ref (a reference) tags the image. Stored
like a pull (the index is the commit point; a manager killed midway lists nothing and collects what it left).
Errors: not_found, invalid_argument, invalid_state (a create or delete of the container is under way).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shimproto.errors import InvalidState
from shimproto.model import RUNNING
from shimproto.wire import Params

from .. import faults
from ..entry import Entry
from ..lifecycle import step
from ..registry import Registry
from .params import request_key

NAME = "commit"


@asynccontextmanager
async def _paused(m: Registry, e: Entry, pause: bool, key: str) -> AsyncIterator[None]:
    if not (pause and e.status.get("status") == RUNNING):
        yield
        return
    kind, _ = m.store.intent(e.id)
    if kind in ("create", "delete"):  # its intent is the one a restarted manager must act on
        raise InvalidState(f"commit: a {kind} of container {e.id} is under way")
    # The intent names this attempt's own pause and resume (the shim answers a repeated step with its first
    # outcome): restore finishes that pause and undoes it, and a repeat of the call, finding the container
    # running again, pauses it for real instead of being answered "paused" by the shim.
    attempt = f"{key}.{os.urandom(4).hex()}" if key else os.urandom(8).hex()
    m.store.set_intent(e.id, "commit", attempt)
    try:
        await m.call(e, "pause", timeout=30.0, key=step(attempt, "pause"))
        try:
            faults.point("commit:paused")
            yield
        finally:
            await m.call(e, "resume", timeout=30.0, key=step(attempt, "resume"))
    finally:
        if m.store.intent(e.id) == ("commit", attempt):  # (a delete may have taken the container meanwhile)
            m.store.clear_intent(e.id)


async def handle(m: Registry, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    key = request_key(p)
    return await m.images.commit([d for d in e.meta.lower.split(":") if d], m.store.fs(e.id)[0],
                                 e.meta.image_digest, p.str("ref", ""), p.str("comment", ""), p.str("author", ""),
                                 _paused(m, e, p.bool("pause", True), key))
