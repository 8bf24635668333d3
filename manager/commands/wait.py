"""wait {id, exec_id?, timeout?} -> {exited: bool, exit_code?, exit?}: long-poll for the exit of the container
(or of one of its exec processes). Returns after at
most timeout seconds (default 30) with exited false; the caller asks again. Errors: not_found."""

from __future__ import annotations

from shimproto.wire import Params

from ..registry import Manager

NAME = "wait"


async def handle(m: Manager, p: Params) -> dict:
    e = m.get(p.str("id", required=True))
    timeout = min(max(p.float("timeout", 30.0), 0.0), 60.0)
    if e.lost_exit is None:
        res: dict = await m.call(e, "wait", {"timeout": timeout, "exec_id": p.str("exec_id", "")},
                                 timeout=timeout + 10.0)  # type: ignore
    if e.lost_exit is not None:
        res = {"exited": True, "exit": e.lost_exit.to_wire()}
    if res.get("exited"):
        res["exit_code"] = res["exit"]["code"]
    return res
