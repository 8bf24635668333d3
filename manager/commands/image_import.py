"""image_import {path, tag?, ref?, platform?, key?} -> image view (as pull's)

Imports a docker archive (`docker save`), an OCI archive or an OCI layout directory (an absolute path the manager
can read) through skopeo into the content store, as a pull does. Tags: tag if given, else the names the archive
carries (docker's RepoTags, OCI ref names that are whole references), else none. ref picks one image of an
archive or layout that holds several. Errors: invalid_argument (not an
archive, digest mismatch, hostile layer), not_found (no such file).
"""

from __future__ import annotations

from shimproto.wire import Params

from ..images.params import platform
from ..registry import Registry

NAME = "image_import"


async def handle(m: Registry, p: Params) -> dict:
    return await m.images.import_(p.str("path", required=True), p.str("tag", ""), platform(p), p.str("ref", ""))
