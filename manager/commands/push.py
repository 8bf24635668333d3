"""push {ref, dest?, tls_verify?, authfile?, key?} -> {}: send the stored image ref to its registry (or to dest, a
reference) with skopeo. Errors: not_found, unauthenticated, unavailable, invalid_argument."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "push"


async def handle(m: Registry, p: Params) -> dict:
    await m.images.push(p.str("ref", required=True), p.str("dest", ""), p.bool("tls_verify", True),
                        p.str("authfile", ""))
    return {}
