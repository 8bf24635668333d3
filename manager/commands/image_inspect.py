"""image_inspect {ref} -> image view plus {config (the image's config blob), containers (ids using it)}. ref is a
tag, a digest or an id (or a prefix of one). Errors: not_found."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "image_inspect"


async def handle(m: Registry, p: Params) -> dict:
    view = m.images.inspect(p.str("ref", required=True))
    return {**view, "containers": m.image_users().get(view["digest"], [])}
