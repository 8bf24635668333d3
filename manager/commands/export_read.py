"""export_read {stream, wait?} -> {data: bytes, eof: bool}: the next part (at most 4 MiB) of a stream that export
started, waiting up to wait seconds (default 10, at most 20) for it; data may be empty while eof is false (ask
again). After eof, or an error, the stream is gone. Errors: not_found (no such stream: it ended, went unread for
60 s, or the manager restarted), and whatever made the stream fail.
"""

from __future__ import annotations

import asyncio

from shimproto.wire import Params

from ..registry import Registry

NAME = "export_read"


async def handle(m: Registry, p: Params) -> dict:
    wait = min(max(p.float("wait", 10.0), 0.0), 20.0)
    data, eof = await asyncio.to_thread(m.streams.read, p.str("stream", required=True), wait)
    return {"data": data, "eof": eof}
