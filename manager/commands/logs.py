"""logs {id, exec_id?, cursor?, follow?, timeout?, tail?, since?, until?, timestamps?, max_bytes?}
-> {records, cursor, eof, file?}

Pages through the container's log (or an attached exec's output) from cursor (0: the start, -1: from now on, as
attach does; otherwise an opaque value a previous reply gave). tail N (-1 or absent: all) starts instead at the
first of the last N lines on disk when the call is made; carry on with the reply's cursor (without tail).
since / until (unix nanoseconds, 0: unbounded, both inclusive) keep only records whose own log time is in range;
a reply may then hold no record yet a new cursor: ask again. Records are [stream, bytes], or [stream, bytes,
time_ns] with timestamps. With follow, waits up to timeout seconds for new output and reports eof only once the
container has exited and everything was read (or a record after until was met). A reply covers at most
max_bytes of the log (4 KiB to 1 MiB, the default; a reply holds at least one whole record). Unless eof, file
is [path, st_dev, st_ino, offset]: the CRI log file the reply's cursor points into and
where; a client on this host may read on in that file itself (once it has checked the identity of what it opened)
and carry on with cursor + the bytes of whole records it read. Cursors grow with the log: one at or past another
has everything before that one behind it. Errors: not_found, invalid_argument, unavailable
(the shim is gone: read the file at inspect's log_path)."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Registry

NAME = "logs"
MAX_PAGE = 1 << 20  # bytes of log a reply covers at most (the shim's own default)


async def handle(m: Registry, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    timeout = min(max(p.float("timeout", 30.0), 0.0), 60.0)
    return await m.call(e, "logs", {  # type: ignore[return-value]
        "cursor": p.int("cursor", 0), "follow": p.bool("follow"), "exec_id": p.str("exec_id", ""),
        "timeout": timeout, "tail": p.int("tail", -1), "since": p.int("since", 0), "until": p.int("until", 0),
        "timestamps": p.bool("timestamps"), "max_bytes": min(max(p.int("max_bytes", MAX_PAGE), 4096), MAX_PAGE),
    }, timeout=timeout + 10.0)
