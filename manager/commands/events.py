"""events {since?, id?, timeout?} -> {events: [...], seq}

Every container event the manager has recorded after global sequence number `since` (0: from the beginning),
optionally of one container, waiting up to timeout seconds (default 30) for the next one when there is none yet.
Each event: {gseq, seq (per container), type, id, exec_id, time, ...}; types: create, start, exec-added,
exec-started, exit (with exit: {code, signal, exited_at, oom_killed, reason}), oom, paused, resumed, delete.
`seq` in the reply is the last global sequence number: pass it as the next `since`. Events survive manager
restarts and are delivered exactly once each, in order."""

from __future__ import annotations

from shimproto.errors import InvalidArgument
from shimproto.wire import Params

from ..registry import Registry

NAME = "events"


async def handle(m: Registry, p: Params) -> dict:
    since = p.int("since", 0)
    if since < 0:
        raise InvalidArgument("events: since must be >= 0")
    timeout = min(max(p.float("timeout", 30.0), 0.0), 60.0)
    evs = await m.events.wait_since(since, p.str("id", ""), timeout)
    return {"events": evs, "seq": m.events.gseq}
