"""wait {id, exec_id?, run?, timeout?} -> {exited: bool, exit_code?, exit?}: long-poll for the exit of the container
(or of one of its exec processes). Returns after at most timeout seconds (default 30) with exited false; the caller
asks again. With a restart policy (docker's rule) it answers the exit of the run under way, or during a back-off
the next run's; with run (inspect's `run` of a run the caller followed) that run's exit, though a new run began
since. Errors: not_found."""

from __future__ import annotations

import asyncio

from shimproto.errors import Unavailable
from shimproto.wire import Params

from ..registry import Registry

NAME = "wait"


async def handle(m: Registry, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    timeout = min(max(p.float("timeout", 30.0), 0.0), 60.0)
    exec_id = p.str("exec_id", "")
    res: dict = {"exited": False}
    if not e.lost:
        try:
            res = await m.call(e, "wait", {"timeout": timeout, "exec_id": exec_id, "run": p.int("run", 0)},
                               timeout=timeout + 10.0)  # type: ignore[assignment]
        except Unavailable:
            if not e.lost:
                raise
    if e.lost:
        if exec_id:
            raise Unavailable(f"the shim of {e.id} is gone with exec process {exec_id}")
        await asyncio.wait_for(e.settled.wait(), timeout + 10.0)
        res = {"exited": True, "exit": e.exit}
    if res.get("exited"):
        res["exit_code"] = res["exit"]["code"]
    return res
