"""The registry of containers: metadata, the connection to each shim, the event pump, and what commands share.

While a shim lives it is the authority on its container; the registry keeps a status cache fed by the shim's
events (so `ps` never waits on a shim) and records every event in the EventLog. A shim that dies is noticed at
once through a pidfd: the registry takes the events it had journaled but not yet delivered, runs the offline
cleanup (which kills a container left without its shim), and reports the exit status the shim had recorded, or
an exit with reason "shim-lost" (code 255) when it recorded none.

Create and delete record an intent first (<state>/intents/<id>), so a manager killed at any step converges on the
next start: a container with a create intent is rolled back, one with a delete intent is rolled forward.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass, field

import psutil
import zmq.asyncio

from shimproto import journal
from shimproto.errors import DeadlineExceeded, NotFound, ShimdError, Unavailable
from shimproto.model import RUNNING, STOPPED, ExitStatus, rfc3339
from shimproto.rpc import AsyncClient

from . import faults, launcher
from .events import EventLog
from .store import Meta, Store

log = logging.getLogger("shimd.manager")

SHIM_TIMEOUT = 10.0
EVENT_POLL = 30.0


@dataclass
class Entry:
    meta: Meta
    client: AsyncClient | None = None
    shim_pid: int = 0
    pidfd: int = -1
    status: dict = field(default_factory=lambda: {"status": "unknown"})  # the EventLog's dict for this id
    lost: bool = False  # the shim died and was cleaned up
    busy: str = ""  # "create" or "delete" while one is under way
    removed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pump: asyncio.Task | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set once a lost shim's exit is known

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def exit(self) -> dict | None:
        return self.status.get("exit")


def shim_alive(pid: int, id: str) -> bool:
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "shimd" in " ".join(cmd) and id in cmd


def read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


@dataclass
class Defaults:
    """Per-container defaults from the configuration file."""

    log_max_size: int = 0
    log_max_files: int = 5
    stop_timeout: float = 10.0


class Manager:
    def __init__(self, ctx: zmq.asyncio.Context, store: Store, runtime: str,
                 defaults: Defaults | None = None) -> None:
        self.ctx = ctx
        self.store = store
        self.runtime = runtime
        self.defaults = defaults or Defaults()
        self.events = EventLog(os.path.join(store.state, "events.journal"))
        self.entries: dict[str, Entry] = {}
        self.reserved: set[str] = set()
        self.tasks: set[asyncio.Task] = set()

    # --- lookups -------------------------------------------------------------------------------------------

    def get(self, id: object) -> Entry:
        e = self.entries.get(id) if isinstance(id, str) else None
        if e is None or e.removed:
            raise NotFound(f"no such container: {id}")
        return e

    def background(self, coro) -> asyncio.Task:  # type: ignore[no-untyped-def]
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    # --- shims ---------------------------------------------------------------------------------------------

    def shim_socket(self, id: str) -> str:
        return os.path.join(self.store.shim_dir(id), "shim.sock")

    def connect(self, e: Entry, shim_pid: int) -> None:
        e.shim_pid = shim_pid
        e.client = AsyncClient(self.ctx, self.shim_socket(e.id), f"the shim of {e.id}", timeout=SHIM_TIMEOUT)
        try:
            e.pidfd = os.pidfd_open(shim_pid)
        except ProcessLookupError:
            self.background(self.shim_died(e))
            return
        asyncio.get_running_loop().add_reader(e.pidfd, self._pidfd_ready, e)

    def _pidfd_ready(self, e: Entry) -> None:
        self._close_pidfd(e)
        self.background(self.shim_died(e))

    def _close_pidfd(self, e: Entry) -> None:
        if e.pidfd >= 0:
            asyncio.get_running_loop().remove_reader(e.pidfd)
            os.close(e.pidfd)
            e.pidfd = -1

    def disconnect(self, e: Entry) -> None:
        self._close_pidfd(e)
        if e.pump is not None:
            e.pump.cancel()
            e.pump = None
        if e.client is not None:
            e.client.close()
            e.client = None

    async def launch_shim(self, e: Entry) -> None:
        pid = await launcher.launch(e.id, self.store.shim_dir(e.id), self.runtime, self.store.runc_root)
        self.connect(e, pid)

    async def call(self, e: Entry, method: str, params: dict | None = None,
                   timeout: float | None = -1.0) -> object:
        """Call e's shim; a clear Unavailable when it is gone, DeadlineExceeded when it is alive but silent."""
        if e.lost or e.client is None:
            raise Unavailable(f"the shim of {e.id} is gone")
        try:
            return await e.client.call(method, {"id": e.id, **(params or {})}, timeout)
        except DeadlineExceeded:
            if not shim_alive(e.shim_pid, e.id):
                await self.shim_died(e)
                raise Unavailable(f"the shim of {e.id} died") from None
            raise DeadlineExceeded(f"the shim of {e.id} (pid {e.shim_pid}) did not answer {method} "
                                   f"in time; it may be hung") from None

    # --- events --------------------------------------------------------------------------------------------

    def record(self, e: Entry, ev: dict) -> None:
        """Take one event of e into the log (once). e.status is the log's status dict of e, so it follows."""
        self.events.add(ev)

    def start_pump(self, e: Entry) -> None:
        if e.pump is None and not e.lost:
            e.pump = self.background(self._pump(e))

    async def _pump(self, e: Entry) -> None:
        while not e.removed and not e.lost and e.client is not None:
            try:
                res = await e.client.call("events", {"since": self.events.last_seq(e.id), "timeout": EVENT_POLL},
                                          timeout=EVENT_POLL + SHIM_TIMEOUT)
            except ShimdError:
                await asyncio.sleep(0.5)  # dead (the pidfd handles that) or hung: ask again
                continue
            for ev in res["events"]:  # type: ignore[index]
                self.record(e, ev)

    # --- a shim that died ----------------------------------------------------------------------------------

    async def shim_died(self, e: Entry) -> None:
        """Clean up after e's dead shim and settle its exit, once."""
        if e.lost or e.removed or e.busy:
            return  # a create or delete under way handles its own shim
        e.lost = True
        self.disconnect(e)
        await self.settle_dead_shim(e)

    async def settle_dead_shim(self, e: Entry) -> None:
        for ev in journal.load(os.path.join(self.store.shim_dir(e.id), "events.journal")):
            self.record(e, ev)  # what it journaled but we had not pulled yet
        recorded = await launcher.cleanup_dead(e.id, self.store.shim_dir(e.id), self.runtime,
                                               self.store.runc_root)
        if e.exit is None:  # the shim never got to publish the init's exit
            exit = recorded or ExitStatus(code=255, reason="shim-lost")
            self.record(e, {"seq": self.events.last_seq(e.id) + 1, "type": "exit", "id": e.id, "exec_id": "",
                            "time": exit.exited_at, "origin": "manager", "exit": exit.to_wire()})
            if e.exit is None:  # a container with no events at all (its create never finished)
                e.status["exit"] = exit.to_wire()
        e.status.update(status=STOPPED)
        e.settled.set()
        log.warning("[%s] shim lost; exit %s", e.id, e.exit)

    # --- views ---------------------------------------------------------------------------------------------

    async def fresh_state(self, e: Entry, timeout: float = 2.0) -> dict:
        """The shim's own view when it answers in time, else the cached one with a note."""
        if not e.lost and e.client is not None:
            try:
                st = await self.call(e, "state", timeout=timeout)
                e.status.update({k: st[k] for k in ("status", "pid", "exit", "started_at")})  # type: ignore
                return {**st, "status": e.status["status"]}  # type: ignore[dict-item]
            except NotFound:
                return {**e.status, "error": f"the shim of {e.id} holds no container"}
            except ShimdError as err:
                if not e.lost:
                    return {**e.status, "error": err.message}
        return e.status

    def view(self, e: Entry, st: dict) -> dict:
        exit = st.get("exit")
        m = e.meta
        out = {
            "id": e.id,
            "image": m.image,
            "rootfs": m.lower,
            "args": m.args,
            "status": st.get("status", "unknown"),
            "pid": st.get("pid", 0),
            "shim_pid": 0 if e.lost else e.shim_pid,
            "created_at": rfc3339(m.created_at),
            "started_at": rfc3339(st["started_at"]) if st.get("started_at") else None,
            "exit_code": exit["code"] if exit else None,
            "exited_at": rfc3339(exit["exited_at"]) if exit and exit.get("exited_at") else None,
            "oom_killed": bool(exit and exit.get("oom_killed")),
            "exit_reason": exit.get("reason", "") if exit else "",
            "bundle": os.path.join(self.store.shim_dir(e.id), "bundle"),
            "log_path": self.store.log_path(e.id),
            "auto_remove": m.auto_remove,
            "terminal": bool(st.get("terminal")),
            "execs": st.get("execs", []),
            "log_dropped_bytes": st.get("log_dropped_bytes", 0),
        }
        if "error" in st:
            out["error"] = st["error"]
        return out

    async def inspect(self, e: Entry, timeout: float = 2.0) -> dict:
        return self.view(e, await self.fresh_state(e, timeout))

    # --- removal -------------------------------------------------------------------------------------------

    def forget(self, e: Entry) -> None:
        """Drop e once its container is gone: a delete event, then the files, then the entry."""
        if self.events.live(e.id):
            self.events.synthesize(e.id, "delete")
        e.removed = True
        self.disconnect(e)
        self.store.remove_data(e.id)
        faults.point("delete:files-removed")
        self.store.remove_meta(e.id)
        self.entries.pop(e.id, None)

    # --- restore -------------------------------------------------------------------------------------------

    async def restore(self) -> dict:
        """Reattach to every shim on disk; finish or undo what a killed manager left half done."""
        metas = self.store.load_all()
        for meta in metas:  # until its shim answers, a container is what its recorded events say
            self.entries[meta.id] = Entry(meta, status=self.events.status(meta.id))
        for id in self.store.intent_ids():  # a create that died before its metadata was written
            if id not in self.entries:
                self.entries[id] = Entry(Meta(id=id, args=[], lower=""), status=self.events.status(id))
        faults.point("restore:scanned")
        counts = {"running": 0, "lost": 0, "rolled_back": 0, "rolled_forward": 0, "orphans": 0}
        jobs = []
        for i, e in enumerate(list(self.entries.values())):
            if i == len(self.entries) // 2:
                faults.point("restore:half")
            jobs.append(self._restore_one(e, counts))
        await asyncio.gather(*jobs)
        counts["orphans"] = await self._orphan_shims()
        for e in self.entries.values():
            if e.meta.auto_remove:
                self.watch_auto_remove(e)
        log.info("restored %d containers %s", len(self.entries), counts)
        return counts

    async def _restore_one(self, e: Entry, counts: dict) -> None:
        """Restore one container; a failure is logged and leaves it as its events say, never stops the manager."""
        try:
            await self._restore(e, counts)
        except Exception:
            log.exception("[%s] restore failed; it stays as last recorded", e.id)

    async def _restore(self, e: Entry, counts: dict) -> None:
        pid = read_pid(os.path.join(self.store.shim_dir(e.id), "shim.pid"))
        alive = bool(pid) and shim_alive(pid, e.id)
        intent = self.store.intent(e.id)
        if intent == "create":
            await self.rollback_create(e, pid if alive else 0)
            counts["rolled_back"] += 1
            return
        if intent == "delete":
            from .commands.delete import finish_delete

            if alive:
                self.connect(e, pid)
            else:
                e.lost = True
            await finish_delete(self, e)
            counts["rolled_forward"] += 1
            return
        if not alive:
            e.lost = True
            await self.settle_dead_shim(e)
            counts["lost"] += 1
            return
        self.connect(e, pid)
        try:
            st = await self.call(e, "state", timeout=5.0)
            e.status.update({k: st[k] for k in ("status", "pid", "exit", "started_at")})  # type: ignore[index]
        except ShimdError as err:
            log.warning("[%s] restore: state: %s", e.id, err.message)
        self.start_pump(e)
        counts["running"] += e.status.get("status") == RUNNING

    async def rollback_create(self, e: Entry, pid: int) -> None:
        """Take back a create that did not finish: the shim kills and deletes whatever it made, then exits."""
        e.busy = "create"
        if pid:
            client = AsyncClient(self.ctx, self.shim_socket(e.id), f"the shim of {e.id}", timeout=SHIM_TIMEOUT)
            try:
                await client.call("shutdown", {"id": e.id, "force": True}, timeout=30.0)
            except ShimdError as err:
                log.warning("[%s] roll back create: shim shutdown: %s", e.id, err)
            finally:
                client.close()
            await _wait_gone(pid, e.id)
        await launcher.cleanup_dead(e.id, self.store.shim_dir(e.id), self.runtime, self.store.runc_root)
        e.removed = True
        self.store.remove(e.id)
        self.entries.pop(e.id, None)
        log.info("[%s] rolled back an unfinished create", e.id)

    async def _orphan_shims(self) -> int:
        """Shim directories with no metadata: a manager died between removing the metadata and the shim's dir,
        or a shim outlived everything. Shut the shim down (if alive) and clean up."""
        n = 0
        for id in os.listdir(self.store.shims):
            if id in self.entries:
                continue
            n += 1
            pid = read_pid(os.path.join(self.store.shim_dir(id), "shim.pid"))
            if pid and shim_alive(pid, id):
                client = AsyncClient(self.ctx, self.shim_socket(id), f"the shim of {id}", timeout=SHIM_TIMEOUT)
                try:
                    await client.call("shutdown", {"id": id, "force": True}, timeout=30.0)
                except ShimdError as err:
                    log.warning("[%s] orphan shim shutdown: %s", id, err)
                finally:
                    client.close()
                await _wait_gone(pid, id)
            await launcher.cleanup_dead(id, self.store.shim_dir(id), self.runtime, self.store.runc_root)
            shutil.rmtree(self.store.shim_dir(id), ignore_errors=True)
        return n

    # --- auto-remove ---------------------------------------------------------------------------------------

    def watch_auto_remove(self, e: Entry) -> None:
        from .commands.delete import remove

        async def watch() -> None:
            while not e.removed and e.status.get("status") != STOPPED:
                try:
                    await self.call(e, "wait", {"timeout": EVENT_POLL}, timeout=EVENT_POLL + SHIM_TIMEOUT)
                except ShimdError:
                    if e.lost:
                        break
                    await asyncio.sleep(1.0)
                    continue
                await asyncio.sleep(0)
                if e.status.get("status") != STOPPED:  # the exit event may trail the wait reply
                    st = await self.fresh_state(e)
                    if st.get("status") != STOPPED:
                        continue
            if not e.removed:
                try:
                    await remove(self, e, force=False)
                except ShimdError as err:
                    log.warning("[%s] auto-remove failed: %s", e.id, err)

        self.background(watch())


async def _wait_gone(pid: int, id: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while shim_alive(pid, id) and loop.time() < deadline:
        await asyncio.sleep(0.02)
