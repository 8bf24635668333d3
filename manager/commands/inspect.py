"""inspect {id} -> {id, image, rootfs, args, status, pid, shim_pid, created_at, started_at, exit_code, exited_at,
oom_killed, exit_reason, bundle, log_path, auto_remove, ..., restart_policy, restart_count, run, last_exits, health:
{status, failing_streak, log} | null}. Times are RFC 3339 strings. Errors: not_found."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "inspect"


async def handle(m: Registry, p: Params) -> dict:
    return await m.inspect(m.get(p.str("id", required=True)))
