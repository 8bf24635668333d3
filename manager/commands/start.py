"""start {id, key?} -> inspect: start a created container, or run a stopped one again in the same writable layer
and log (as docker start does). Errors: not_found, invalid_state (running or paused)."""

from __future__ import annotations

from shimproto.wire import Params

from .. import lifecycle
from ..registry import Registry
from .params import request_key

NAME = "start"


async def handle(m: Registry, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    await lifecycle.start(m, e, request_key(p))
    return await m.inspect(e)
