"""image_prune {all?, key?} -> {deleted, blobs, layers}: remove untagged images no container uses (with all:
every image no container uses), then every blob and layer directory nothing refers to."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "image_prune"


async def handle(m: Registry, p: Params) -> dict:
    return await m.images.prune(p.bool("all"), m.image_users())
