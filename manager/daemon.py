"""The manager process: pid file, API socket, restore, sd_notify, signals.

Start-up order: refuse if another manager serves this state dir; bind the API socket; restore (reattach to every
shim, finish or undo what a killed manager left half done); only then READY=1 with a STATUS line. WATCHDOG=1 pings
at half the interval systemd asks for. SIGTERM/SIGINT: STOPPING=1, stop serving, exit 0, leaving every shim and
container running (live-restore). The warm template (manager/launcher.py's Template) is started after restore,
restarted whenever it dies, and killed on the way out (it dies with a SIGKILLed manager by its parent-death signal).
Once serving, a background task opens the image store and collects what a killed manager left in it.
"""

from __future__ import annotations

import asyncio
import grp
import importlib
import logging
import os
import resource
import signal

import zmq.asyncio

from shimproto.rpc import MAX_PENDING, MAX_PENDING_ALL, Server

from . import launcher
from .commands import Handlers
from .config import Config
from .crifront import Front
from .registry import Registry, live_cmdline
from .restore import restore
from .store import Store

log = logging.getLogger("shimd.manager")


class AlreadyRunning(Exception):
    pass


def _claim_pid_file(path: str) -> None:
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid and pid != os.getpid():
        cmd = live_cmdline(pid)
        if cmd is not None and "manager" in " ".join(cmd):
            raise AlreadyRunning(f"another shimd-manager (pid {pid}) serves {os.path.dirname(path)}")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, path)


def _notify(msg: str) -> None:
    if os.environ.get("NOTIFY_SOCKET"):
        import sdnotify

        sdnotify.SystemdNotifier().notify(msg)


async def _watchdog(interval: float) -> None:
    while True:
        _notify("WATCHDOG=1")
        await asyncio.sleep(interval)


KSM_RUN = "/sys/kernel/mm/ksm/run"
COLLECT_AFTER = 1.0  # seconds after the manager serves before it collects the image store's garbage


def _start_ksmd() -> None:
    """memory_merge = true: shims offer their pages to the kernel's samepage merging, which only ksmd does. Start it
    when it is stopped ("0"). It merges only the memory of processes that asked for it (ours, and any other that
    did, such as a VM's): a host-wide switch, which is why memory_merge = false leaves it alone."""
    try:
        with open(KSM_RUN) as f:
            now = f.read().strip()
        if now == "0":
            with open(KSM_RUN, "w") as f:
                f.write("1")
            log.info("started the kernel's samepage merging (%s = 1) for shim memory (memory_merge = false in "
                     "the config leaves it alone)", KSM_RUN)
        elif now != "1":
            log.warning("%s is %s: shim memory is not merged", KSM_RUN, now)
    except OSError as e:
        log.warning("no samepage merging for shim memory: %s: %s", KSM_RUN, e.strerror)


def _raise_fd_limit() -> None:
    """A few descriptors per container (a pidfd, the shim connection's socket): lift the soft open-files limit to
    the hard one, as dockerd and containerd do, so a shell's 1024 does not cap a manager at a few hundred."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def collect_images(m: Registry) -> None:
    """Collect what a manager killed mid-pull, mid-import or mid-removal left in the image store, once it serves:
    off restore's path, so a start with many images and containers is not slowed down. A store never made stays
    unopened (and unimported)."""
    if not os.path.isdir(os.path.join(m.store.root, "images", "blobs")):
        return
    # not at once: the clients that waited out the restart come first (a thread importing the image code holds
    # the interpreter, and the lock of every module it imports, for tens of ms)
    await asyncio.sleep(COLLECT_AFTER)
    await asyncio.to_thread(importlib.import_module, "manager.images.service")  # its imports off the loop
    try:
        blobs, layers = await m.images.collect()
    except Exception:
        log.exception("image store: collecting garbage at start failed")
        return
    log.info("image store opened: %d blobs and %d layers nothing refers to were removed", blobs, layers)


async def serve(cfg: Config) -> int:
    store = Store(cfg.root, cfg.state)
    _claim_pid_file(cfg.pid_file)
    _raise_fd_limit()
    ctx = zmq.asyncio.Context()
    ctx.set(zmq.MAX_SOCKETS, 65536)  # one socket per shim; ZeroMQ's default of 1023 would cap the containers
    m = Registry(ctx, store, cfg.runtime, cfg.defaults)
    mode = 0o600
    table = Handlers(m)
    server = Server(ctx, cfg.socket, table, log, mode=mode, polls=(MAX_PENDING, MAX_PENDING_ALL // 2))
    if cfg.socket_group:
        os.chown(cfg.socket, 0, grp.getgrnam(cfg.socket_group).gr_gid)
        os.chmod(cfg.socket, 0o660)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = []
    usec = os.environ.get("WATCHDOG_USEC")
    if usec and usec.isdigit() and os.environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
        tasks.append(asyncio.create_task(_watchdog(int(usec) / 2e6)))
    counts = await restore(m)
    if os.environ.get(launcher.TEMPLATE_ENV, "1") != "0":
        # after restore, which starts no shim: its imports would only slow the restore down; a create that comes
        # while it starts waits for it (it is ready sooner than a cold shim would be)
        if cfg.memory_merge:
            _start_ksmd()
        launcher.template = launcher.Template(memory_merge=cfg.memory_merge)
        launcher.template.begin()
    serving = asyncio.create_task(server.serve())
    front = Front(cfg)
    front.begin()
    m.background(collect_images(m))
    m.background(table.load_all())
    _notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving {len(m.entries)} containers "
            f"({counts['running']} running, {counts['lost']} with lost shims, {counts['rolled_back']} creates "
            f"rolled back, {counts['rolled_forward']} deletes finished)")
    log.info("serving on %s (root %s, state %s)", cfg.socket, cfg.root, cfg.state)
    await stop.wait()
    _notify("STOPPING=1")
    log.info("stopping; containers and shims keep running")
    serving.cancel()
    await front.stop()
    if launcher.template is not None:
        await launcher.template.stop()
        launcher.template = None
    for t in [*tasks, *m.tasks]:
        t.cancel()
    server.close()
    for e in list(m.entries.values()):
        m.disconnect(e)
    ctx.term()
    try:
        os.unlink(cfg.pid_file)
    except FileNotFoundError:
        pass
    return 0
