"""exec {id, args, exec_id?, env?, cwd?, user?, tty?, stdin?, detach?} -> the exec process (exec_id, pid, status, ...)

Starts a new process in a running container. env (["K=V", ...]) is added to the container's environment, a K given
there replacing the container's K; cwd is an absolute directory (default: the container's); user is "UID",
"UID:GID", "NAME" or "NAME:GROUP", names looked up in the container's /etc/passwd and /etc/group (default: the
container's user). Unless detach, its output is kept for the caller (read it with `logs {id, exec_id, follow}`,
wait with `wait {id, exec_id}`, remove it with `delete {id, exec_id}`); a detached exec's output is discarded, as
docker does. A repeat (same key) returns the first exec process instead of starting another.
Errors: not_found, invalid_state (container not running), already_exists (exec id in use),
invalid_argument (unknown user or group, relative cwd), command_not_found (127), cannot_invoke (126),
runtime_failed."""

from __future__ import annotations

import secrets

from shimproto.wire import Params

from .. import faults
from ..registry import Registry
from .params import request_key

NAME = "exec"


async def handle(m: Registry, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    proc = await m.call(e, "exec", {
        "exec_id": p.str("exec_id", "") or secrets.token_hex(6), "args": p.strlist("args", required=True),
        "env": p.strlist("env"), "cwd": p.str("cwd", ""), "user": p.str("user", ""), "terminal": p.bool("tty"),
        "stdin": p.bool("stdin"), "attach": not p.bool("detach"),
    }, timeout=30.0, key=request_key(p))
    faults.point("exec:started")
    return proc  # type: ignore[return-value]
