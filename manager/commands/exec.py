"""exec {id, args, exec_id?, env?, cwd?, tty?, stdin?, detach?} -> the exec process (exec_id, pid, status, ...)

Starts a new process in a running container. Unless detach, its output is kept for the caller (read it with
`logs {id, exec_id, follow}`, wait with `wait {id, exec_id}`, remove it with `delete {id, exec_id}`); a detached
exec's output is discarded, as docker does. Errors: not_found, invalid_state (container not running),
already_exists (exec id in use), runtime_failed."""

from __future__ import annotations

import secrets

from shimproto.wire import Params

from ..registry import Manager

NAME = "exec"


async def handle(m: Manager, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    return await m.call(e, "exec", {  # type: ignore[return-value]
        "exec_id": p.str("exec_id", "") or secrets.token_hex(6), "args": p.strlist("args", required=True),
        "env": p.strlist("env"), "cwd": p.str("cwd", ""), "terminal": p.bool("tty"), "stdin": p.bool("stdin"),
        "attach": not p.bool("detach"),
    }, timeout=30.0)
