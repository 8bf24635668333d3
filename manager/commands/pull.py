"""pull {ref, tls_verify?, authfile?, registries_conf?, platform?, key?} -> image view {id, digest, tags, repo_tags,
size, created, layers, platform}

Fetches REF from its registry with skopeo into the content store: the image for platform (OS/ARCH[/VARIANT],
default linux on this machine's architecture) from a multi-platform index, every blob checked against its digest,
each layer unpacked once, then the tag recorded (the index is the commit point: a manager killed midway lists
nothing of it and collects what it left). tls_verify false allows a plain-HTTP registry; authfile is a docker-style
auth file (absolute path); registries_conf a containers-registries.conf(5) file (absolute path) used instead of the
system's: the registry's mirrors, tried in order, and which endpoints are plain HTTP (`insecure`; tls_verify true
leaves that to the file). Errors: invalid_argument (bad reference, digest mismatch, hostile layer),
not_found (no such image or platform), unauthenticated, unavailable (no registry there), already_exists (the same
pull is under way).
"""

from __future__ import annotations

from shimproto.wire import Params

from ..images.params import platform
from ..registry import Registry

NAME = "pull"


async def handle(m: Registry, p: Params) -> dict:
    return await m.images.pull(p.str("ref", required=True), p.bool("tls_verify", True), p.str("authfile", ""),
                               platform(p), p.str("registries_conf", ""))
