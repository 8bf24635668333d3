"""The registry of containers: metadata, the connection to each shim, and what every command shares.

The registry never holds a container's status of its own: the shim is the authority while it lives. When a shim is
found dead, the registry runs the offline cleanup once and keeps the exit status that shim had recorded (or an
exit with reason "shim-lost" when it had none).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

import psutil
import zmq.asyncio

from shimproto.errors import DeadlineExceeded, NotFound, ShimdError, Unavailable
from shimproto.model import STOPPED, ExitStatus, rfc3339
from shimproto.rpc import AsyncClient

from . import launcher
from .store import Meta, Store

log = logging.getLogger("shimd.manager")

SHIM_TIMEOUT = 10.0


@dataclass
class Entry:
    meta: Meta
    client: AsyncClient | None = None
    shim_pid: int = 0
    lost_exit: ExitStatus | None = None  # set once a dead shim was cleaned up
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    removed: bool = False

    @property
    def id(self) -> str:
        return self.meta.id


def shim_alive(pid: int, id: str) -> bool:
    try:
        cmd = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "shimd" in " ".join(cmd) and id in cmd


class Manager:
    def __init__(self, ctx: zmq.asyncio.Context, store: Store, runtime: str) -> None:
        self.ctx = ctx
        self.store = store
        self.runtime = runtime
        self.entries: dict[str, Entry] = {}
        self.reserved: set[str] = set()
        self.tasks: set[asyncio.Task] = set()

    # --- lookups -------------------------------------------------------------------------------------------

    def get(self, id: object) -> Entry:
        e = self.entries.get(id) if isinstance(id, str) else None
        if e is None or e.removed:
            raise NotFound(f"no such container: {id}")
        return e

    def background(self, coro) -> None:  # type: ignore[no-untyped-def]
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    # --- shims ---------------------------------------------------------------------------------------------

    def connect(self, e: Entry, shim_pid: int) -> None:
        e.shim_pid = shim_pid
        e.client = AsyncClient(self.ctx, os.path.join(self.store.shim_dir(e.id), "shim.sock"),
                               f"the shim of {e.id}", timeout=SHIM_TIMEOUT)

    async def launch_shim(self, e: Entry) -> None:
        pid = await launcher.launch(e.id, self.store.shim_dir(e.id), self.runtime, self.store.runc_root)
        self.connect(e, pid)

    async def call(self, e: Entry, method: str, params: dict | None = None,
                   timeout: float | None = -1.0) -> object:
        """Call e's shim. A shim that does not answer and is no longer alive is cleaned up as lost."""
        if e.lost_exit is not None or e.client is None:
            raise Unavailable(f"the shim of {e.id} is gone")
        try:
            return await e.client.call(method, {"id": e.id, **(params or {})}, timeout)
        except DeadlineExceeded:
            if not shim_alive(e.shim_pid, e.id):
                await self.mark_lost(e)
                raise Unavailable(f"the shim of {e.id} died") from None
            raise

    async def mark_lost(self, e: Entry) -> None:
        """The shim is dead: clean up after it (kills a container left without its shim), keep its exit."""
        if e.lost_exit is not None:
            return
        if e.client is not None:
            e.client.close()
            e.client = None
        exit = await launcher.cleanup_dead(e.id, self.store.shim_dir(e.id), self.runtime, self.store.runc_root)
        e.lost_exit = exit or ExitStatus(code=255, reason="shim-lost")
        log.warning("[%s] shim lost; exit %s", e.id, e.lost_exit)

    async def state(self, e: Entry, timeout: float = 2.0) -> dict:
        """The shim's view of the container, or a stopped/unknown view when the shim cannot tell."""
        if e.lost_exit is None:
            try:
                return await self.call(e, "state", timeout=timeout)  # type: ignore[return-value]
            except NotFound:
                return {"status": "unknown", "empty_shim": True,
                        "error": f"the shim of {e.id} holds no container"}
            except ShimdError as err:
                if e.lost_exit is None:
                    return {"status": "unknown", "error": err.message}
        return {"status": STOPPED, "pid": 0, "shim_pid": 0, "exit": e.lost_exit.to_wire()}  # type: ignore

    async def inspect(self, e: Entry, timeout: float = 2.0) -> dict:
        st = await self.state(e, timeout)
        exit = st.get("exit")
        m = e.meta
        out = {
            "id": e.id,
            "image": m.image,
            "rootfs": m.lower,
            "args": m.args,
            "status": st.get("status", "unknown"),
            "pid": st.get("pid", 0),
            "shim_pid": st.get("shim_pid", e.shim_pid),
            "created_at": rfc3339(m.created_at),
            "started_at": rfc3339(st["started_at"]) if st.get("started_at") else None,
            "exit_code": exit["code"] if exit else None,
            "exited_at": rfc3339(exit["exited_at"]) if exit and exit.get("exited_at") else None,
            "oom_killed": bool(exit and exit.get("oom_killed")),
            "exit_reason": exit.get("reason", "") if exit else "",
            "bundle": st.get("bundle", os.path.join(self.store.shim_dir(e.id), "bundle")),
            "log_path": self.store.log_path(e.id),
            "auto_remove": m.auto_remove,
            "terminal": bool(st.get("terminal")),
            "execs": st.get("execs", []),
        }
        if "error" in st:
            out["error"] = st["error"]
        return out

    # --- removal -------------------------------------------------------------------------------------------

    async def forget(self, e: Entry) -> None:
        """Drop e after its shim has deleted the container (or was cleaned up as lost)."""
        e.removed = True
        if e.client is not None:
            e.client.close()
            e.client = None
        self.store.remove(e.id)
        self.entries.pop(e.id, None)

    # --- restore -------------------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Reattach to every shim found on disk; clean up after the ones that died while we were away."""
        lost = []
        for meta in self.store.load_all():
            e = Entry(meta)
            self.entries[meta.id] = e
            pid = _read_pid(os.path.join(self.store.shim_dir(meta.id), "shim.pid"))
            if pid and shim_alive(pid, meta.id):
                self.connect(e, pid)
            else:
                lost.append(e)
        await asyncio.gather(*(self.mark_lost(e) for e in lost))
        for e in self.entries.values():
            if e.meta.auto_remove:
                self.watch_auto_remove(e)
        log.info("restored %d containers (%d shims lost)", len(self.entries), len(lost))

    def watch_auto_remove(self, e: Entry) -> None:
        from .commands.delete import remove

        async def watch() -> None:
            while not e.removed:
                try:
                    if e.lost_exit is not None:
                        break
                    res = await self.call(e, "wait", {"timeout": 30.0}, timeout=40.0)
                    if res.get("exited"):  # type: ignore[union-attr]
                        break
                except ShimdError as err:
                    log.warning("[%s] auto-remove watch: %s", e.id, err)
                    await asyncio.sleep(1.0)
            if not e.removed:
                try:
                    await remove(self, e, force=False)
                except ShimdError as err:
                    log.warning("[%s] auto-remove failed: %s", e.id, err)

        self.background(watch())


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
