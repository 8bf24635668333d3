"""update {id, memory_limit?, pids_limit?, restart?, key?} -> null: change the resource limits of a running
container and/or the restart policy of a container in any state (docker's text: no, on-failure[:MAX], always,
unless-stopped). The shim judges the next exit by the new policy; the manager records it in the container's
metadata once the shim took it (a reboot's relaunch reads it there). Errors: not_found, invalid_argument (bad
limit or policy, a policy for a container with auto-remove), invalid_state (limits of a container not running)."""

from __future__ import annotations

from shimproto.policy import check_restart
from shimproto.wire import Params

from ..registry import Registry
from .params import request_key

NAME = "update"


async def handle(m: Registry, p: Params) -> None:
    e = m.get(p.str("id", required=True))
    params = {k: p.raw[k] for k in ("memory_limit", "pids_limit") if k in p.raw}
    restart = p.str("restart")
    if restart is not None:
        check_restart(restart, e.meta.spec.auto_remove)
        params["restart"] = restart
    await m.call(e, "update", params, timeout=30.0, key=request_key(p))
    if restart is not None and restart != e.meta.spec.restart:
        e.meta.spec.restart = restart
        m.store.save(e.meta)
