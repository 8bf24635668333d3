"""image_tag {source, target, key?} -> {}: name the image source names (tag, digest or id) target too (a tag
already pointing elsewhere moves). Errors: not_found, invalid_argument (bad target)."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "image_tag"


async def handle(m: Registry, p: Params) -> dict:
    await m.images.tag(p.str("source", required=True), p.str("target", required=True))
    return {}
