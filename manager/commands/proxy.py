"""Commands that pass straight through to the container's shim (documented per command below). Each takes the
optional `key` of the package docstring: the shim answers a repeat with its first answer.

- pause {id} / unpause {id}: freeze or thaw every process. invalid_state unless running / paused.
- stats {id} -> {cpu_ns, memory_bytes, memory_limit, pids, pids_limit, oom_kills}.
- top {id} -> [{pid, ppid, cmd, exec_id}]: every process of the container (host pids).
- write_stdin {id, exec_id?, data: bytes}: feed the process's stdin (it must have been started with stdin).
- close_stdin {id, exec_id?}: EOF on the process's stdin once what was written is delivered.
- resize {id, exec_id?, rows, cols}: set the process's terminal size.
- reopen_log {id}: reopen the container's log file (after an external tool rotated it).
"""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry
from .params import request_key

# command -> (shim method, params passed on, timeout of the call)
ROUTES: dict[str, tuple[str, tuple[str, ...], float]] = {
    "pause": ("pause", (), 30.0),
    "unpause": ("resume", (), 30.0),
    "stats": ("stats", (), 30.0),
    "top": ("pids", (), 30.0),
    "write_stdin": ("write_stdin", ("exec_id", "data"), 60.0),
    "close_stdin": ("close_stdin", ("exec_id",), 10.0),
    "resize": ("resize", ("exec_id", "rows", "cols"), 10.0),
    "reopen_log": ("reopen_log", (), 10.0),
}


def handler(name: str):  # type: ignore[no-untyped-def]
    method, keys, timeout = ROUTES[name]

    async def handle(m: Registry, p: Params) -> object:
        e = m.get(p.str("id", required=True))
        return await m.call(e, method, {k: p.raw[k] for k in keys if k in p.raw}, timeout=timeout,
                            key=request_key(p))

    return handle
