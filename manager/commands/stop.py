"""stop {id, timeout?} -> {exit}: SIGTERM, then SIGKILL after timeout seconds (default from the configuration,
10 s), as docker stop. A container whose PID 1 ignores SIGTERM (busybox sh, sleep) is killed at the deadline.
Stopping a stopped container is a no-op. Errors: not_found, invalid_argument."""

from __future__ import annotations

import signal

from shimproto.errors import InvalidArgument
from shimproto.model import CREATED, STOPPED
from shimproto.wire import Params

from ..registry import Manager

NAME = "stop"


async def handle(m: Manager, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    grace = p.float("timeout", m.defaults.stop_timeout)
    if not 0 <= grace <= 3600:
        raise InvalidArgument(f"stop timeout {grace:g} must be between 0 and 3600 seconds")
    st = await m.fresh_state(e, timeout=5.0)
    if st.get("status") in (STOPPED,) or e.lost:
        return {"exit": e.exit}
    if st.get("status") != CREATED and grace > 0:
        await m.call(e, "kill", {"signal": int(signal.SIGTERM)})
        res = await m.call(e, "wait", {"timeout": grace}, timeout=grace + 10)
        if res.get("exited"):  # type: ignore[union-attr]
            return {"exit": res["exit"]}  # type: ignore[index]
    await m.call(e, "kill", {"signal": int(signal.SIGKILL), "all": True})
    res = await m.call(e, "wait", {"timeout": 30.0}, timeout=40.0)
    return {"exit": res.get("exit")}  # type: ignore[union-attr]
