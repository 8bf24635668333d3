"""ExecSync: run a command in a container, collect its output, and end it at the deadline.

The exec is an attached shimd exec: its output is kept by the shim (read with `logs {exec_id}`), its exit with
`wait {exec_id}`. On timeout the process is killed and reaped before the call fails, so a caller that checks
right after finds it gone (critest does). The exec's record is removed at the end either way."""

from __future__ import annotations

import time

from shimproto.errors import DeadlineExceeded, NotFound, ShimdError

from .calls import Manager

OUTPUT_MAX = 16 << 20  # bytes kept per stream, as containerd's exec output limit
POLL = 5.0  # seconds one logs/wait long-poll may take


def pump_output(m: Manager, cid: str, eid: str, deadline: float | None, sink, check=None) -> None:
    """Feed (stream, data) pairs of the exec's output to sink until its end; DeadlineExceeded at deadline. check,
    when given, is called before each page (it raises to end the pump)."""
    cursor = 0
    while True:
        if check is not None:
            check()
        left = POLL if deadline is None else min(POLL, deadline - time.monotonic())
        if left <= 0:
            raise DeadlineExceeded("deadline")
        page = m.query("logs", {"id": cid, "exec_id": eid, "cursor": cursor, "follow": True,
                                "timeout": max(left, 0.05)}, timeout=left + 30)
        for rec in page["records"]:
            sink(rec[0], rec[1])
        cursor = page["cursor"]
        if page["eof"]:
            return


def wait_exit(m: Manager, cid: str, eid: str) -> int:
    while True:
        w = m.query("wait", {"id": cid, "exec_id": eid, "timeout": POLL}, timeout=POLL + 30)
        if w.get("exited"):
            return int(w.get("exit_code") or 0)


def end(m: Manager, cid: str, eid: str, kill: bool) -> None:
    """Kill (when asked) and forget the exec; what is already gone is fine."""
    try:
        if kill:
            try:
                m.call("kill", {"id": cid, "exec_id": eid, "signal": "SIGKILL"})
            except ShimdError:
                pass
            wait_exit(m, cid, eid)
        m.call("delete", {"id": cid, "exec_id": eid})
    except NotFound:
        pass


def exec_sync(m: Manager, cid: str, cmd: list[str], timeout: int) -> tuple[int, bytes, bytes]:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    x = m.call("exec", {"id": cid, "args": cmd})
    eid = x["exec_id"]
    out, err = bytearray(), bytearray()

    def sink(stream: str, data: bytes) -> None:
        buf = err if stream == "stderr" else out
        buf += data[:max(0, OUTPUT_MAX - len(buf))]

    try:
        pump_output(m, cid, eid, deadline, sink)
        code = wait_exit(m, cid, eid)
    except DeadlineExceeded:
        end(m, cid, eid, kill=True)
        raise DeadlineExceeded(f"command {cmd} in container {cid} timed out after {timeout}s") from None
    end(m, cid, eid, kill=False)
    return code, bytes(out), bytes(err)
