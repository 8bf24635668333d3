"""images {} -> [image view]: the stored images, newest first: {id (config digest), digest (manifest), tags
(familiar), repo_tags (normalized), size (unpacked bytes), created, layers (diffids), platform}. The built-in
busybox is not listed (it is no stored image)."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "images"


async def handle(m: Registry, p: Params) -> list:
    return m.images.list()
