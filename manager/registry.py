"""The registry: the table of container entries and the connection to each one's shim.

While a shim lives it is the authority on its container; the registry pulls the shim's events into the EventLog
(which keeps each container's status, so `ps` never waits on a shim). A shim that dies is noticed at once through
a pidfd: the registry takes the events it had journaled but not yet delivered, runs the offline cleanup (which
kills a container left without its shim), and reports the exit status the shim had recorded, or an exit with
reason "shim-lost" (code 255) when it recorded none. What to do with containers (create, delete, restore) is
manager/lifecycle.py's; this module only keeps the table and talks to shims.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq.asyncio

from shimproto import journal
from shimproto.errors import DeadlineExceeded, NotFound, ShimdError, Unavailable
from shimproto.exitstatus import ExitStatus
from shimproto.model import STOPPED, rfc3339
from shimproto.plans import VolumeSpec
from shimproto.plant import planted
from shimproto.rpc import AsyncClient

from . import faults, launcher, restarts
from .entry import Entry
from .events import EventLog
from .networks import Networks, published, read_record
from .store import Store
from .streams import Streams
from .volumes import Volumes

if TYPE_CHECKING:
    from .images.service import Images

log = logging.getLogger("shimd.manager")

SHIM_TIMEOUT = 10.0
DYING_REPLY_GRACE = 0.5  # how long a call waits for a reply its shim may have sent just before it died
EVENT_POLL = 30.0


def live_cmdline(pid: int) -> list[str] | None:
    """The command line of pid if it is a live process (not gone, not a zombie), else None. Read from /proc
    directly: psutil's import cost every manager start (and so every restore) a few ms."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rpartition(b")")[2].split()[0] == b"Z":
                return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (OSError, IndexError):
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def shim_alive(pid: int, id: str) -> bool:
    cmd = live_cmdline(pid)
    return cmd is not None and "shimd" in " ".join(cmd) and id in cmd


async def wait_gone(pid: int, id: str, timeout: float = 10.0) -> None:
    """Until the shim pid of id has exited (at most timeout), woken by a pidfd at the moment it does."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # a kernel without pidfds: poll
        deadline = loop.time() + timeout
        while shim_alive(pid, id) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return
    try:
        if not shim_alive(pid, id):  # checked after the open: a pid reused since is not waited on
            return
        exited = loop.create_future()
        loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
        try:
            await asyncio.wait_for(exited, timeout)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


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
    network: str = "bridge"  # for a container that names none (docker's default)
    cgroup_parent: str = "/shimd"  # this manager's containers' cgroups go under it (config.py derives it)


@dataclass
class Probe:
    """A container's state as its shim tells it now, or the cached view with the reason the shim did not."""

    state: dict
    error: ShimdError | None = None

    @property
    def status(self) -> str:
        return str(self.state.get("status", "unknown"))

    @property
    def shim_holds_container(self) -> bool:
        return not isinstance(self.error, NotFound)


class Registry:
    def __init__(self, ctx: zmq.asyncio.Context, store: Store, runtime: str,
                 defaults: Defaults | None = None) -> None:
        self.ctx = ctx
        self.store = store
        self.runtime = runtime
        self.defaults = defaults or Defaults()
        self.events = EventLog(os.path.join(store.state, "events.journal"))
        self.entries: dict[str, Entry] = {}
        self.reserved: set[str] = set()  # ids of creates under way
        self.tasks: set[asyncio.Task] = set()
        self._images: Images | None = None
        self.streams = Streams()  # export's tars on their way out
        self.networks = Networks(store.root)
        self.volumes = Volumes(store.root)

    @property
    def images(self) -> Images:
        """The image store, opened on first use (opening it empties ingest/; the manager collects its garbage once
        after it starts serving: daemon.collect_images)."""
        if self._images is None:
            from .images.service import Images  # loaded on first use: a manager's start (a restore) never pays for it

            self._images = Images(self.store.root, self.store.images_in_use)
        return self._images

    def image_users(self) -> dict[str, list[str]]:
        """image digest -> ids of the containers that run it (every container with metadata on disk)."""
        return self.store.images_in_use()[1]

    # --- the table -----------------------------------------------------------------------------------------

    def get(self, id: object) -> Entry:
        e = self.entries.get(id) if isinstance(id, str) else None
        if e is None:
            raise NotFound(f"no such container: {id}")
        return e.check_listed()

    def add(self, e: Entry) -> None:
        e.status = self.events.status(e.id)
        self.entries[e.id] = e

    def background(self, coro) -> asyncio.Task:  # type: ignore[no-untyped-def]
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    # --- shims ---------------------------------------------------------------------------------------------

    def shim_socket(self, id: str) -> str:
        return os.path.join(self.store.shim_dir(id), "shim.sock")

    def shim_client(self, id: str) -> AsyncClient:
        return AsyncClient(self.ctx, self.shim_socket(id), f"the shim of {id}", timeout=SHIM_TIMEOUT)

    def connect(self, e: Entry, shim_pid: int) -> None:
        e.shim_pid = shim_pid
        e.client = self.shim_client(e.id)
        e.shim_gone.clear()
        try:
            e.pidfd = os.pidfd_open(shim_pid)
        except ProcessLookupError:
            e.shim_gone.set()
            self.background(self.shim_died(e))
            return
        asyncio.get_running_loop().add_reader(e.pidfd, self._pidfd_ready, e)

    def _pidfd_ready(self, e: Entry) -> None:
        self._close_pidfd(e)
        e.shim_gone.set()  # a call of an operation that owns the shim (a create) fails now, not at its timeout
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
        pid = await launcher.launch(e.id, self.store.shim_dir(e.id), self.runtime, self.store.runc_root,
                                    shared_sources(e.meta.spec.volumes))
        self.connect(e, pid)

    async def call(self, e: Entry, method: str, params: dict | None = None,
                   timeout: float | None = -1.0, key: str = "") -> object:
        """Call e's shim; a clear Unavailable when it is gone, DeadlineExceeded when it is alive but silent.
        key (the client's request key plus the step) lets the shim recognise a repeat of a mutating call."""
        e.state.check_call(e)
        if e.client is None:
            raise Unavailable(f"the shim of {e.id} is gone")
        try:
            reply = e.client.call(method, {"id": e.id, **(params or {}), **({"key": key} if key else {})}, timeout)
            if e.state.watches_shim:  # its death disconnects the client, which fails the call
                return await reply
            return await self._unless_shim_dies(e, method, reply)
        except DeadlineExceeded:
            if not shim_alive(e.shim_pid, e.id):
                await self.shim_died(e)
                raise Unavailable(f"the shim of {e.id} died") from None
            raise DeadlineExceeded(f"the shim of {e.id} (pid {e.shim_pid}) did not answer {method} "
                                   f"in time; it may be hung") from None

    async def _unless_shim_dies(self, e: Entry, method: str, reply) -> object:  # type: ignore[no-untyped-def]
        """reply's result, or Unavailable as soon as the shim dies: an operation that owns the shim (create,
        delete, restore) is not kept waiting for its timeout by a shim that can no longer answer."""
        call = asyncio.ensure_future(reply)
        gone = asyncio.ensure_future(e.shim_gone.wait())
        try:
            await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                await asyncio.wait({call}, timeout=DYING_REPLY_GRACE)
            if not call.done():
                raise Unavailable(f"the shim of {e.id} (pid {e.shim_pid}) died during {method}")
            return call.result()
        finally:
            gone.cancel()
            call.cancel()

    # --- events --------------------------------------------------------------------------------------------

    def record(self, e: Entry, ev: dict) -> None:
        """Take one event of e into the log (once); e.status, the log's view of e, follows."""
        if not journal.is_event(ev) or ev["id"] != e.id:
            log.warning("[%s] an event without what every event has (or of another container) ignored: %.200r",
                        e.id, ev)
            return
        if planted("drop-exit-event") and ev["type"] == "exit" and not ev["exec_id"]:
            ev = {**ev, "type": "exit-dropped"}
        if self.events.add(ev) and planted("duplicate-exit-event") and ev["type"] == "exit" and not ev["exec_id"]:
            self.events.synthesize(e.id, "exit", exit=ev["exit"])

    def start_pump(self, e: Entry) -> None:
        if e.pump is None and e.state.watches_shim:
            e.pump = self.background(self._pump(e))

    async def _pump(self, e: Entry) -> None:
        while e.state.watches_shim and e.client is not None:
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
        """Clean up after e's dead shim and settle its exit, once; an operation that owns the shim does it."""
        if not e.state.watches_shim:
            return
        e.move("lose")
        self.disconnect(e)
        await self.settle_dead_shim(e)

    async def settle_dead_shim(self, e: Entry) -> None:
        path = os.path.join(self.store.shim_dir(e.id), "events.journal")
        got = journal.read(path, journal.is_event)
        for off, n, why in got.bad:
            log.warning("[%s] %s: %d bytes at offset %d skipped (%s)", e.id, path, n, off, why)
        for ev in got.records:
            self.record(e, ev)  # what it journaled but we had not pulled yet
        recorded = await launcher.cleanup_dead(e.id, self.store.shim_dir(e.id), self.runtime,
                                               self.store.runc_root, self.store.dir(e.id))
        if e.exit is None:  # the shim never got to publish the init's exit
            exit = (recorded or ExitStatus(code=255, reason="shim-lost")).to_wire()
            self.record(e, {"seq": self.events.last_seq(e.id) + 1, "type": "exit", "id": e.id, "exec_id": "",
                            "time": exit["exited_at"], "origin": "manager", "exit": exit})
            self.events.observe(e.id, {"status": STOPPED, "exit": exit})  # also when the log kept no event
        e.settled.set()
        log.warning("[%s] shim lost; exit %s", e.id, e.exit)

    # --- views ---------------------------------------------------------------------------------------------

    async def probe(self, e: Entry, timeout: float = 2.0) -> Probe:
        """The shim's own view when it answers in time, else the cached one with the reason."""
        if not e.state.reachable or e.client is None:
            return Probe(e.status, Unavailable(f"the shim of {e.id} is gone"))
        try:
            st = await self.call(e, "state", timeout=timeout)
        except NotFound:
            return Probe(e.status, NotFound(f"the shim of {e.id} holds no container"))
        except ShimdError as err:
            return Probe(e.status, err)
        self.events.observe(e.id, st)  # type: ignore[arg-type]
        return Probe({**st, "status": e.status["status"]})  # type: ignore[dict-item]

    def view(self, e: Entry, probe: Probe | None = None) -> dict:
        st = probe.state if probe else e.status
        exit = st.get("exit")
        spec = e.meta.spec
        net = read_record(self.store.dir(e.id))
        out = {
            "id": e.id,
            "image": spec.image,
            "image_digest": e.meta.image_digest,
            "cgroup": e.meta.cgroup_path,
            "labels": spec.labels,
            "rootfs": e.meta.lower,
            "args": spec.args,
            "hostname": spec.hostname or e.id,
            "status": st.get("status", "unknown"),
            "pid": st.get("pid", 0),
            "shim_pid": 0 if e.lost else e.shim_pid,
            "created_at": rfc3339(e.meta.created_at),
            "started_at": rfc3339(st["started_at"]) if st.get("started_at") else None,
            "exit_code": exit["code"] if exit else None,
            "exited_at": rfc3339(exit["exited_at"]) if exit and exit.get("exited_at") else None,
            "oom_killed": bool(exit and exit.get("oom_killed")),
            "exit_reason": exit.get("reason", "") if exit else "",
            "bundle": os.path.join(self.store.shim_dir(e.id), "bundle"),
            "log_path": spec.log_path or self.store.log_path(e.id),
            "auto_remove": spec.auto_remove,
            "terminal": spec.tty,
            "execs": st.get("execs", []),
            "log_dropped_bytes": st.get("log_dropped_bytes", 0),
            "spec": spec.to_wire(),
            "network": spec.network or (spec.conflist or {}).get("name", ""),  # a CRI pod's conflist: its name
            "ip": net.get("ip", ""),
            "ports": [p.to_wire() for p in published(net)],
            **restarts.view(spec, st),
        }
        if probe and probe.error is not None and not e.lost:
            out["error"] = probe.error.message
        if e.meta.damaged:
            out["metadata_error"] = e.meta.damaged
        return out

    async def inspect(self, e: Entry, timeout: float = 2.0) -> dict:
        return self.view(e, await self.probe(e, timeout))

    # --- removal -------------------------------------------------------------------------------------------

    def forget(self, e: Entry) -> None:
        """Drop e once its container is gone: a delete event, then the files, then the entry."""
        if self.events.live(e.id):
            self.events.synthesize(e.id, "delete")
        e.move("removed")
        self.disconnect(e)
        self.store.remove_data(e.id)
        faults.point("delete:files-removed")
        self.store.remove_meta(e.id)
        self.entries.pop(e.id, None)


def shared_sources(volumes: list[str]) -> list[str]:
    """The host paths of the rshared bind volumes among volumes (a named volume's data is the manager's own)."""
    specs = [VolumeSpec.parse(v) for v in volumes]
    return [v.source for v in specs if not v.named and v.propagation in ("shared", "rshared")]
