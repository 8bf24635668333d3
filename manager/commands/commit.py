"""commit {id, ref?, comment?, author?, pause?, key?} -> image view (as pull's): docker commit.

The container's writable layer (its overlay upper directory, read on disk: overlay whiteouts become `.wh.NAME`,
an opaque directory `.wh..wh..opq`; the runtime's empty mount points of /etc/hostname, hosts and resolv.conf are
left out) becomes one new layer on top of the container's image; the config is the image's (Entrypoint, Cmd, Env
... unchanged) with rootfs.diff_ids and history extended. A container of the built-in busybox or of a --rootfs
tree gets its lower tree as a base layer under it, and busybox's config. A running container is paused while its
layer is read (pause false: not). ref (a reference) tags the image. Stored like a pull (the index is the commit
point; a manager killed midway lists nothing and collects what it left). Errors: not_found, invalid_argument.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from shimproto.model import RUNNING
from shimproto.wire import Params

from ..entry import Entry
from ..lifecycle import step
from ..registry import Registry
from .params import request_key

NAME = "commit"


@asynccontextmanager
async def _paused(m: Registry, e: Entry, pause: bool, key: str):  # type: ignore[no-untyped-def]
    frozen = pause and e.status.get("status") == RUNNING
    if frozen:
        await m.call(e, "pause", timeout=30.0, key=step(key, "pause"))
    try:
        yield
    finally:
        if frozen:
            await m.call(e, "resume", timeout=30.0, key=step(key, "resume"))


async def handle(m: Registry, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    key = request_key(p)
    return await m.images.commit([d for d in e.meta.lower.split(":") if d], m.store.fs(e.id)[0],
                                 e.meta.image_digest, p.str("ref", ""), p.str("comment", ""), p.str("author", ""),
                                 _paused(m, e, p.bool("pause", True), key))
