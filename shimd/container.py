"""One container as its shim owns it: writable root, bundle, stdio, log, the init process and its exit status.

Life: create (mount the overlay, write the bundle, open the FIFOs, `runc create`) -> start -> the init exits
(drain the pipes into the log, write exit.json durably, then wake waiters) -> delete (`runc delete`, unmount,
remove the shim's state). The init's exit is processed only once a concurrent start has finished, so a start is
always seen before its exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field

from runtime.bundle import DEFAULT_ENV, Spec, write_bundle
from runtime.opts import CreateOpts, DeleteOpts, KillOpts
from runtime.runc import Runc
from shimproto.errors import InvalidArgument, InvalidState, NotFound
from shimproto.fsutil import read_json, write_json
from shimproto.model import CREATED, STOPPED, ExitStatus

from . import sys as _sys
from .io.fifo import OutputFifo
from .io.log import LogWriter, read_log
from .process import STATES, State, next_state
from .reaper import Reaper

EXIT_FILE = "exit.json"


@dataclass
class CreateRequest:
    """What the manager asks for. Paths are absolute; lower is the shared read-only image tree."""

    lower: str
    upper: str
    work: str
    log_path: str
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    hostname: str = ""
    cgroups_path: str = ""
    memory_limit: int | None = None
    pids_limit: int | None = None


class Container:
    def __init__(self, id: str, state_dir: str, runc: Runc, reaper: Reaper, log: logging.LoggerAdapter) -> None:
        self.id = id
        self.state_dir = state_dir
        self.bundle = os.path.join(state_dir, "bundle")
        self.rootfs = os.path.join(self.bundle, "rootfs")
        self.runc = runc
        self.reaper = reaper
        self.log = log
        self.state: State | None = None  # None until created
        self.pid = 0
        self.created_at = 0
        self.started_at = 0
        self.exit: ExitStatus | None = None
        self.exited = asyncio.Event()
        self.log_writer: LogWriter | None = None
        self.log_path = ""
        self._fifos: list[OutputFifo] = []
        self._start_lock = asyncio.Lock()
        self._delete_lock = asyncio.Lock()
        self._exit_task: asyncio.Task | None = None

    # --- transitions ---------------------------------------------------------------------------------------

    def _transition(self, event: str) -> None:
        assert self.state is not None
        self.state = STATES[next_state(self.state.name, event)]
        self.log.info("%s -> %s", event, self.state.name)

    def _require(self) -> State:
        if self.state is None:
            raise NotFound(f"container {self.id} has not been created in this shim")
        return self.state

    # --- operations ----------------------------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> None:
        if self.state is not None:
            raise InvalidState(f"container {self.id} is already created")
        if not os.path.isdir(req.lower):
            raise InvalidArgument(f"rootfs {req.lower} is not a directory")
        if not req.args:
            raise InvalidArgument("no command given for the container")
        for d in (req.upper, req.work, self.rootfs, os.path.dirname(req.log_path)):
            os.makedirs(d, mode=0o711, exist_ok=True)
        _sys.mount_overlay(req.lower, req.upper, req.work, self.rootfs)
        try:
            write_bundle(self.bundle, Spec(
                args=req.args, env=req.env or list(DEFAULT_ENV), cwd=req.cwd, hostname=req.hostname or self.id[:63],
                cgroups_path=req.cgroups_path or f"/shimd/{self.id}",
                memory_limit=req.memory_limit, pids_limit=req.pids_limit,
            ))
            self.log_path = req.log_path
            self.log_writer = LogWriter(req.log_path)
            self._fifos = [OutputFifo(os.path.join(self.state_dir, f"{s}.fifo"), s) for s in ("stdout", "stderr")]
            pid_file = os.path.join(self.state_dir, "init.pid")
            with self.reaper.subscribe() as sub:
                await self.runc.create(self.id, self.bundle, CreateOpts(pid_file=pid_file), stdin=None,
                                       stdout=self._fifos[0].take_write_fd(), stderr=self._fifos[1].take_write_fd())
                with open(pid_file) as f:
                    self.pid = int(f.read().strip())
                exit_fut = self.reaper.watch(self.pid, sub)
        except BaseException:
            self._close_io()
            _sys.unmount(self.rootfs)
            raise
        for f in self._fifos:
            f.release_write_fd()  # the container holds its own copies now
            asyncio.get_running_loop().add_reader(f.read_fd, self._copy, f)
        self.created_at = time.time_ns()
        self.state = STATES[CREATED]
        self._exit_task = asyncio.create_task(self._on_exit(exit_fut))
        self.log.info("created, init pid %d", self.pid)

    async def start(self) -> None:
        async with self._start_lock:
            await self._require().start(self)

    async def kill(self, sig: int, all: bool) -> None:
        await self._require().kill(self, sig, all)

    async def delete(self) -> ExitStatus | None:
        async with self._delete_lock:
            st = self._require()
            if st.name == CREATED:  # kill the waiting init first; its exit makes the container stopped
                await self.do_kill(signal.SIGKILL, True)
                await self.exited.wait()
                st = self._require()
            await st.delete(self)
        return self.exit

    # --- called by the state classes -----------------------------------------------------------------------

    async def do_start(self) -> None:
        await self.runc.start(self.id)
        self.started_at = time.time_ns()
        self._transition("start")

    async def do_kill(self, sig: int, all: bool) -> None:
        await self.runc.kill(self.id, sig, KillOpts(all=all))

    async def do_delete(self, force: bool) -> None:
        await self.runc.delete(self.id, DeleteOpts(force=force))
        _sys.unmount(self.rootfs)
        self._transition("delete")
        for name in os.listdir(self.state_dir):
            if name not in ("shim.sock", "shim.pid", "shim.log"):
                p = os.path.join(self.state_dir, name)
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)

    # --- I/O and exit --------------------------------------------------------------------------------------

    def _copy(self, f: OutputFifo) -> None:
        data = f.read_available()
        if data and self.log_writer is not None:
            self.log_writer.write(f.stream, data)

    def _close_io(self) -> None:
        loop = asyncio.get_running_loop()
        for f in self._fifos:
            if f.read_fd >= 0:
                loop.remove_reader(f.read_fd)
            f.close()
        self._fifos = []
        if self.log_writer is not None:
            self.log_writer.close()

    async def _on_exit(self, fut: asyncio.Future) -> None:
        status = await fut
        async with self._start_lock:
            for f in self._fifos:  # whatever the init wrote before it died belongs in the log
                while data := f.read_available():
                    self.log_writer.write(f.stream, data)  # type: ignore[union-attr]
            self._close_io()
            self.exit = ExitStatus.from_wait_status(status)
            write_json(os.path.join(self.state_dir, EXIT_FILE), self.exit.to_wire())
            self._transition("exit")
            self.exited.set()
        self.log.info("init %d exited with %d", self.pid, self.exit.code)

    # --- queries -------------------------------------------------------------------------------------------

    def describe(self) -> dict:
        st = self._require()
        e = self.exit
        return {
            "id": self.id,
            "status": st.name,
            "pid": self.pid,
            "shim_pid": os.getpid(),
            "bundle": self.bundle,
            "log_path": self.log_path,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "exit": e.to_wire() if e else None,
        }

    async def wait(self, timeout: float) -> dict:
        self._require()
        if not self.exited.is_set():
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except TimeoutError:
                return {"exited": False}
        return {"exited": True, "exit": self.exit.to_wire()}  # type: ignore[union-attr]

    async def logs(self, cursor: int, follow: bool, timeout: float, max_bytes: int) -> dict:
        self._require()
        records, new = read_log(self.log_path, cursor, max_bytes)
        w = self.log_writer
        if not records and follow and w is not None and not w.closed:
            await w.changed(timeout)
            records, new = read_log(self.log_path, cursor, max_bytes)
        if follow:
            done = w is None or (w.closed and new >= w.size)
        else:
            done = new >= _size(self.log_path)
        return {"records": records, "cursor": new, "eof": done}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def recorded_exit(state_dir: str) -> ExitStatus | None:
    try:
        return ExitStatus.from_wire(read_json(os.path.join(state_dir, EXIT_FILE)))  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


__all__ = ["Container", "CreateRequest", "STOPPED", "recorded_exit"]
