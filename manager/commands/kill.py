"""kill {id, signal?, all?, exec_id?} -> null: send a signal (default SIGKILL, as docker kill) to the init, or to every
process of the container with all. Errors: not_found, invalid_argument (unknown signal), invalid_state (not
running). A repeat (same key) is not sent twice. A kill of the container (not of an exec) ends its restart
policy's care by docker's rule (shimproto.policy.stops_policy): its exit is not restarted, and during a back-off the
kill only drops it; the manager records that in --root first (manager/restarts.py)."""

from __future__ import annotations

from shimproto.model import parse_signal
from shimproto.wire import Params

from .. import restarts
from ..registry import Registry
from .params import request_key

NAME = "kill"


async def handle(m: Registry, p: Params) -> None:
    e = m.get(p.str("id", required=True))
    sig = parse_signal(p.raw.get("signal", "KILL"))
    if not p.str("exec_id", ""):
        restarts.user_kill(m.store.dir(e.id), e.meta.spec, sig)
    await m.call(e, "kill", {"signal": sig, "all": p.bool("all"), "exec_id": p.str("exec_id", "")},
                 key=request_key(p))
