"""Starting a shim and cleaning up after a dead one. The only code in the manager that runs processes.

A shim detaches itself (double fork, new session), so the process that starts it exits at once; the shim proper
tells us it is serving by writing "ok <pid>" on a pipe we pass it. A shim is forked from the warm template
(shimd/template.py, handled by `Template` below) when one is serving, else started cold as `python -m shimd start`:
the same shim either way, started faster and sharing the template's pages when warm. SHIMD_TEMPLATE=0 in the
manager's environment turns the template off. A warm launch whose pipe closes with no report (the template died
before it forked, or could not fork) is started again cold, so killing the template loses no launch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time

from shimproto.errors import Internal, Unavailable
from shimproto.exitstatus import ExitStatus
from shimproto.version import TEMPLATE_CANNOT_RENAME

log = logging.getLogger("shimd.manager")

READY_TIMEOUT = 10.0
TEMPLATE_ENV = "SHIMD_TEMPLATE"  # "0": no template, every shim starts cold
TEMPLATE_READY_TIMEOUT = 30.0
WARM_WAIT = 5.0  # how long a launch waits for a template that is starting before it goes cold
RESTART_DELAYS = (0.1, 5.0)  # a template that keeps dying is restarted after a doubling delay up to 5 s

template: Template | None = None  # set by manager/daemon.py while the manager serves


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


class Template:
    """The manager's side of the warm template: start it, restart it when it dies, stop it with the manager.

    The template is our child (its parent-death signal kills it with us) and gets one end of a SOCK_SEQPACKET
    socketpair and nothing else of ours: no API socket, no shim connection, no lock. Our end is non-blocking, so a
    hung template makes launches go cold instead of blocking the event loop."""

    def __init__(self, memory_merge: bool = False) -> None:
        self.memory_merge = memory_merge  # the template (and so every shim forked from it) offers its pages to ksmd
        self.proc: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.ready = asyncio.Event()
        self.starting = False
        self.stopping = False
        self.disabled = ""  # why no template will be started again
        self.starts = 0
        self.task: asyncio.Task | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None and self.ready.is_set() else 0

    def begin(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAYS[0]
        while not self.stopping:
            began = loop.time()
            try:
                await self._start()
                assert self.proc is not None
                rc = await self.proc.wait()
            except Exception:
                log.exception("template: start failed")
                rc = -1
            finally:
                self._closed()
            if self.stopping:
                return
            if rc == TEMPLATE_CANNOT_RENAME:
                self.disabled = "forked shims cannot take a cold shim's command line here (prctl PR_SET_MM_MAP)"
                log.warning("template: %s; shims start cold", self.disabled)
                return
            delay = RESTART_DELAYS[0] if loop.time() - began > 10 else min(delay * 2, RESTART_DELAYS[1])
            log.warning("template exited (%s); restarting it in %.1fs, shims start cold meanwhile", rc, delay)
            await asyncio.sleep(delay)

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.starting = True
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shimd", "template", "--control-fd", str(theirs.fileno()),
                "--parent", str(os.getpid()), *(["--memory-merge"] if self.memory_merge else []),
                pass_fds=(theirs.fileno(),), env=_env(),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        self.starts += 1
        ours.setblocking(False)
        self.sock = ours
        try:
            first = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 4096), TEMPLATE_READY_TIMEOUT)
        except (TimeoutError, OSError) as e:
            first = f"no word ({type(e).__name__})".encode()
        if first == b"ready" or first.startswith(b"ready "):
            self.ready.set()
            log.info("template %d serving", self.proc.pid)
            if first != b"ready":
                log.warning("template %d: no memory merging for shims: %s", self.proc.pid, first[6:].decode())
        else:
            log.warning("template %d did not start: %s", self.proc.pid, first.decode(errors="replace") or "EOF")
            if self.proc.returncode is None:
                self.proc.kill()
        self.starting = False

    def _closed(self) -> None:
        self.ready.clear()
        self.starting = False
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def wait_ready(self, timeout: float) -> bool:
        """Is a template serving (waiting up to timeout for one that is starting)?"""
        if not self.ready.is_set() and self.starting and not self.stopping:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                pass
        return self.ready.is_set() and self.sock is not None

    def request(self, req: dict, fd: int) -> bool:
        """Ask the template to fork a shim that reports on fd; False when it cannot be asked (gone, hung)."""
        if self.sock is None or not self.ready.is_set():
            return False
        try:
            socket.send_fds(self.sock, [json.dumps(req).encode()], [fd])
            return True
        except OSError:  # BlockingIOError: its queue is full (hung); EPIPE/ECONNRESET: dead
            return False

    async def stop(self) -> None:
        """Stop it for good (the manager is stopping): close its socket (it exits on EOF) and kill it."""
        self.stopping = True
        proc = self.proc
        self._closed()
        if proc is not None and proc.returncode is None:
            proc.kill()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                pass
        if self.task is not None:
            self.task.cancel()


async def launch(id: str, state_dir: str, runtime: str, runtime_root: str, shared: list[str] | None = None) -> int:
    """Start the shim of id and return its pid once its socket is bound: forked from the template when one is
    serving, else cold. shared: the sources of its rshared volumes (the shim keeps them peers of the host's)."""
    shared = shared or []
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    t = template
    if t is not None and await t.wait_ready(WARM_WAIT):
        pid = await _launch_warm(t, id, state_dir, runtime, runtime_root, shared)
        if pid is not None:
            return pid
        log.warning("[%s] the template did not start the shim; starting it cold", id)
    return await _launch_cold(id, state_dir, runtime, runtime_root, shared)


async def _launch_warm(t: Template, id: str, state_dir: str, runtime: str, runtime_root: str,
                       shared: list[str]) -> int | None:
    """The shim's pid, or None when nothing took the launch (the pipe closed with no report: no process holds
    its write end, so no shim of this launch runs or ever will)."""
    r, w = os.pipe()
    try:
        # not_after (CLOCK_MONOTONIC, shared by all processes): the template drops a request it reads later,
        # when we may already have given up and rolled the create back; what it forks by then has half of
        # READY_TIMEOUT left to report
        sent = t.request({"id": id, "state": state_dir, "runtime": runtime, "runtime_root": runtime_root,
                          "shared": shared, "not_after": time.monotonic() + READY_TIMEOUT / 2}, w)
        os.close(w)
        w = -1
        if not sent:
            return None
        try:
            line = await _read_line(r, READY_TIMEOUT)
        except TimeoutError:
            raise Unavailable(f"shim of {id} did not report ready within {READY_TIMEOUT:g}s") from None
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    if not line:
        return None
    if line.startswith("ok "):
        return int(line.split()[1])
    raise Internal(f"shim of {id} failed to start: {line.removeprefix('error ')}")


async def _launch_cold(id: str, state_dir: str, runtime: str, runtime_root: str, shared: list[str]) -> int:
    r, w = os.pipe()
    try:
        cmd = _shim_cmd("start", id, state_dir, runtime, runtime_root) + ["--ready-fd", str(w)]
        cmd += [arg for path in shared for arg in ("--shared", path)]
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


async def cleanup_dead(id: str, state_dir: str, runtime: str, runtime_root: str,
                       files_dir: str = "") -> ExitStatus | None:
    """Run `shimd delete` for a shim that is gone (files_dir: the container's dir, where its network record
    is); returns the exit status it had recorded, if any."""
    proc = await asyncio.create_subprocess_exec(
        *_shim_cmd("delete", id, state_dir, runtime, runtime_root), *(["--files", files_dir] if files_dir else []),
        env=_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    try:
        raw = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return ExitStatus.from_wire(raw) if raw else None
