"""The manager process: pid file, API socket, restore, sd_notify, signals.

Start-up order: refuse if another manager serves this state dir; bind the API socket; restore (reattach to every
shim); only then READY=1. SIGTERM/SIGINT: STOPPING=1, stop serving, exit 0, leaving every shim and container
running (live-restore).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

import psutil
import zmq.asyncio

from shimproto.rpc import Server

from .commands import handlers
from .registry import Manager
from .store import Store

log = logging.getLogger("shimd.manager")


@dataclass
class Config:
    root: str = "/var/lib/shimd"
    state: str = "/run/shimd"
    runtime: str = "runc"

    @property
    def socket(self) -> str:
        return os.path.join(self.state, "shimd.sock")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.state, "shimd.pid")


class AlreadyRunning(Exception):
    pass


def _claim_pid_file(path: str) -> None:
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid and pid != os.getpid():
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
            if "manager" in cmd or "shimd-manager" in cmd:
                raise AlreadyRunning(f"another shimd-manager (pid {pid}) serves {os.path.dirname(path)}")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, path)


def _notify(msg: str) -> None:
    if os.environ.get("NOTIFY_SOCKET"):
        import sdnotify

        sdnotify.SystemdNotifier().notify(msg)


async def serve(cfg: Config) -> int:
    store = Store(cfg.root, cfg.state)
    _claim_pid_file(cfg.pid_file)
    ctx = zmq.asyncio.Context()
    m = Manager(ctx, store, cfg.runtime)
    server = Server(ctx, cfg.socket, handlers(m), log)
    serving = asyncio.create_task(server.serve())
    await m.restore()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _notify(f"READY=1\nSTATUS=serving {len(m.entries)} containers\nMAINPID={os.getpid()}")
    log.info("serving on %s (root %s, state %s)", cfg.socket, cfg.root, cfg.state)
    await stop.wait()
    _notify("STOPPING=1")
    log.info("stopping; containers and shims keep running")
    serving.cancel()
    for t in list(m.tasks):
        t.cancel()
    server.close()
    for e in m.entries.values():
        if e.client is not None:
            e.client.close()
    ctx.term()
    try:
        os.unlink(cfg.pid_file)
    except FileNotFoundError:
        pass
    return 0
