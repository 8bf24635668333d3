"""stop {id, timeout?, key?} -> {exit}: SIGTERM, then SIGKILL after timeout seconds (default: the container's
--stop-timeout, else the configuration's, 10 s), as docker stop. A container whose PID 1 ignores SIGTERM (busybox
sh, sleep) is killed at the deadline. Stopping a stopped container is a no-op. Errors: not_found,
invalid_argument."""

from __future__ import annotations

from shimproto.wire import Params

from .. import lifecycle
from ..registry import Registry
from .params import request_key, stop_grace

NAME = "stop"


async def handle(m: Registry, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    grace = stop_grace(p, m.defaults.stop_timeout, e.meta.spec.stop_timeout)
    return {"exit": await lifecycle.stop(m, e, grace, request_key(p))}
