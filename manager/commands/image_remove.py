"""image_remove {ref, force?, key?} -> {untagged, deleted}: docker rmi. One of several tags is only untagged;
the last name (or an id) removes the image and collects its blobs and layers no other image or container uses.
Refused (invalid_state) while a container uses the image, unless force: then its tags go and the image stays,
untagged, for its containers (a later prune removes it). Errors: not_found, invalid_state."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "image_remove"


async def handle(m: Registry, p: Params) -> dict:
    return await m.images.remove(p.str("ref", required=True), p.bool("force"), m.image_users())
