"""The manager's side of the CRI front (manager/cri/front.py): start one when none runs, start it again when it
dies, stop it when the manager stops gracefully.

The front is a process of its own so that CRI calls outlive the manager: a SIGKILLed manager leaves it serving,
and the next manager finds it by its lock (<state>/cri.lock, held by the live front) instead of starting another.
A front this manager started is its child until it exits (the wait below reaps it); one started by an earlier
manager was re-parented and is only watched through the lock."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
import time

from .config import Config
from .registry import live_cmdline

log = logging.getLogger("shimd.manager")

CHECK_EVERY = 2.0  # seconds between two looks at the lock
STOP_WAIT = 5.0


def front_alive(state: str) -> bool:
    """Does a front hold the lock of this state dir?"""
    try:
        fd = os.open(os.path.join(state, "cri.lock"), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if we took it
    return False


class Front:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task | None = None
        self.starts = 0

    def begin(self) -> None:
        if self.cfg.cri.enabled:
            self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            if (self.proc is None or self.proc.returncode is not None) and not front_alive(self.cfg.state):
                try:
                    await self._spawn()
                except OSError as e:
                    log.error("cannot start the CRI front: %s", e)
            await asyncio.sleep(CHECK_EVERY)

    async def _spawn(self) -> None:
        argv = [sys.executable, "-m", "manager.cri", "--state", self.cfg.state, "--manager-socket",
                self.cfg.socket, "--config-json", self.cfg.cri.to_json()]
        with open(os.path.join(self.cfg.state, "cri.log"), "ab") as logf:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                cwd="/", env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        self.starts += 1
        log.info("CRI front started (pid %d) for %s", self.proc.pid, self.cfg.cri.socket_path(self.cfg.state))
        asyncio.get_running_loop().create_task(self.proc.wait())  # reaped when it exits

    async def stop(self) -> None:
        """Stop the front (whoever started it, serving or still starting) and wait for it to let go of its lock."""
        if self.task is not None:
            self.task.cancel()
        pids = {front_pid(self.cfg.state)} | ({self.proc.pid} if self.running() else set())
        pids.discard(0)
        for pid in pids:
            signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while (front_alive(self.cfg.state) or self.running()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if front_alive(self.cfg.state) or self.running():
            log.warning("the CRI front (pids %s) did not stop within %gs: killing it", sorted(pids), STOP_WAIT)
            for pid in pids:
                signal_pid(pid, signal.SIGKILL)
        if self.running():
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_WAIT)
            except TimeoutError:
                pass

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def front_pid(state: str) -> int:
    """The pid of the live front of state (0: none), from its pid file (written once it serves) or, while it is
    still starting, from the command lines of the running processes."""
    want = ["-m", "manager.cri", "--state", state]
    try:
        with open(os.path.join(state, "cri.pid")) as f:
            pid = int(f.read().strip() or 0)
        if (live_cmdline(pid) or [])[1:5] == want:
            return pid
    except (OSError, ValueError):
        pass
    return next((int(n) for n in os.listdir("/proc") if n.isdigit() and (live_cmdline(int(n)) or [])[1:5] == want), 0)
