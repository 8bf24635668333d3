"""restart {id, timeout?, key?} -> inspect: stop the container as `stop` does (SIGTERM, SIGKILL after timeout
seconds), then run it again in the same writable layer and log, as docker restart. Errors: not_found,
invalid_argument."""

from __future__ import annotations

from shimproto.wire import Params

from .. import lifecycle
from ..registry import Registry
from .params import request_key, stop_grace

NAME = "restart"


async def handle(m: Registry, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    key = request_key(p)
    grace = stop_grace(p, m.defaults.stop_timeout, e.meta.spec.stop_timeout)
    await lifecycle.stop(m, e, grace, lifecycle.step(key, "stop"))
    await lifecycle.start(m, e, lifecycle.step(key, "start"))
    return await m.inspect(e)
