"""image_save {ref, path, format?, key?} -> {}: write the image to path (absolute, in an existing directory, on the
manager's host, written by the manager) as a docker archive (format docker, the default: `docker load` reads it)
or an OCI archive (format oci). Written beside path and renamed: never half a file. Errors: not_found,
invalid_argument."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "image_save"


async def handle(m: Registry, p: Params) -> dict:
    await m.images.save(p.str("ref", required=True), p.str("path", required=True), p.str("format", "docker"))
    return {}
