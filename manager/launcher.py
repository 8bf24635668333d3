"""Starting a shim and cleaning up after a dead one. The only code in the manager that runs processes.

A shim detaches itself (double fork, new session), so the process we start exits at once; the shim proper tells
us it is serving by writing "ok <pid>" on a pipe we pass it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from shimproto.errors import Internal, Unavailable
from shimproto.model import ExitStatus

READY_TIMEOUT = 10.0


def _shim_cmd(sub: str, id: str, state_dir: str, runtime: str, runtime_root: str) -> list[str]:
    return [sys.executable, "-m", "shimd", sub, "--id", id, "--state", state_dir,
            "--runtime", runtime, "--runtime-root", runtime_root]


def _env() -> dict[str, str]:
    # the manager's sd_notify socket is the manager's alone
    return {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


async def _read_line(fd: int, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    buf = b""
    deadline = loop.time() + timeout
    while not buf.endswith(b"\n"):
        ready = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
        finally:
            loop.remove_reader(fd)
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


async def launch(id: str, state_dir: str, runtime: str, runtime_root: str) -> int:
    """Start the shim of id and return its pid once its socket is bound."""
    os.makedirs(state_dir, mode=0o711, exist_ok=True)
    r, w = os.pipe()
    try:
        cmd = _shim_cmd("start", id, state_dir, runtime, runtime_root) + ["--ready-fd", str(w)]
        proc = await asyncio.create_subprocess_exec(
            *cmd, pass_fds=(w,), env=_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        os.close(w)
        w = -1
        try:
            line = await _read_line(r, READY_TIMEOUT)
        except TimeoutError:
            raise Unavailable(f"shim of {id} did not report ready within {READY_TIMEOUT:g}s") from None
        _, stderr = await proc.communicate()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    if line.startswith("ok "):
        return int(line.split()[1])
    detail = line.removeprefix("error ") or stderr.decode(errors="replace").strip().splitlines()[-1:]
    raise Internal(f"shim of {id} failed to start: {detail or 'no report'}")


async def cleanup_dead(id: str, state_dir: str, runtime: str, runtime_root: str) -> ExitStatus | None:
    """Run `shimd delete` for a shim that is gone; returns the exit status it had recorded, if any."""
    proc = await asyncio.create_subprocess_exec(
        *_shim_cmd("delete", id, state_dir, runtime, runtime_root), env=_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    try:
        raw = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return ExitStatus.from_wire(raw) if raw else None
