"""logs {id, exec_id?, cursor?, follow?, timeout?} -> {records: [[stream, bytes], ...], cursor, eof}

Pages through the container's log (or an attached exec's output) from cursor (0: the start, -1: from now on, as
attach does; otherwise an opaque value a previous reply gave). With follow, waits up to timeout seconds for
new output and reports eof only once the container has exited and everything was read. Errors: not_found,
unavailable (the shim is gone: read the file at inspect's log_path)."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Manager

NAME = "logs"


async def handle(m: Manager, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    timeout = min(max(p.float("timeout", 30.0), 0.0), 60.0)
    return await m.call(e, "logs", {"cursor": p.int("cursor", 0), "follow": p.bool("follow"),
                                    "exec_id": p.str("exec_id", ""),
                                    "timeout": timeout}, timeout=timeout + 10.0)  # type: ignore[return-value]
