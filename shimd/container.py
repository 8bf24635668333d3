"""One container as its shim owns it: writable root, bundle, log, event journal, OOM watch, the init process and
its exec processes.

Life: create (mount the overlay, write the bundle, `runc create` with the stdio the init needs) -> start -> exits
(each written durably, then journaled, then waiters woken) -> delete (`runc delete`, unmount, remove the shim's
state). Mounts are made in the shim's private mount namespace, so only the shim can see or undo them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from dataclasses import dataclass

from runtime.bundle import DEFAULT_ENV, Spec, write_bundle
from runtime.opts import CreateOpts, UpdateOpts
from runtime.runc import Runc
from shimproto.errors import AlreadyExists, InvalidArgument, InvalidState, NotFound
from shimproto.fsutil import read_json
from shimproto.model import CREATED, STOPPED, ExitStatus, check_id

from . import cgroup
from . import sys as _sys
from .events import Journal
from .io.log import LogWriter
from .io.stdio import ProcessIO
from .process.process import ExecProcess, InitProcess, Process
from .reaper import Reaper

EXIT_FILE = "exit.json"
KEEP = ("shim.sock", "shim.pid", "shim.log")


@dataclass
class CreateRequest:
    """What the manager asks for. Paths are absolute; lower is the shared read-only image tree."""

    lower: str
    upper: str
    work: str
    log_path: str
    args: list[str]
    env: list[str]
    cwd: str = "/"
    hostname: str = ""
    cgroups_path: str = ""
    memory_limit: int | None = None
    pids_limit: int | None = None
    terminal: bool = False
    stdin: bool = False
    log_max_size: int = 0
    log_max_files: int = 5


class Container:
    def __init__(self, id: str, state_dir: str, runc: Runc, reaper: Reaper, log: logging.LoggerAdapter) -> None:
        self.id = id
        self.state_dir = state_dir
        self.bundle = os.path.join(state_dir, "bundle")
        self.rootfs = os.path.join(self.bundle, "rootfs")
        self.runc = runc
        self.reaper = reaper
        self.log = log
        self.journal = Journal(os.path.join(state_dir, "events.journal"), id)
        self.init: InitProcess | None = None
        self.execs: dict[str, ExecProcess] = {}
        self.log_path = ""
        self._memcg: tuple[str, int] | None = None
        self._oom_fds: tuple[int, int] | None = None
        self._delete_lock = asyncio.Lock()

    # --- lookups -------------------------------------------------------------------------------------------

    def _init(self) -> InitProcess:
        if self.init is None:
            raise NotFound(f"container {self.id} has not been created in this shim")
        return self.init

    def process(self, exec_id: str = "") -> Process:
        if not exec_id:
            return self._init()
        p = self.execs.get(exec_id)
        if p is None:
            raise NotFound(f"no exec process {exec_id!r} in container {self.id}")
        return p

    # --- create --------------------------------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> None:
        if self.init is not None:
            raise InvalidState(f"container {self.id} is already created")
        if not os.path.isdir(req.lower):
            raise InvalidArgument(f"rootfs {req.lower} is not a directory")
        if not req.args:
            raise InvalidArgument("no command given for the container")
        for d in (req.upper, req.work, self.rootfs, os.path.dirname(req.log_path)):
            os.makedirs(d, mode=0o711, exist_ok=True)
        _sys.mount_overlay(req.lower, req.upper, req.work, self.rootfs)
        writer = io = None
        try:
            write_bundle(self.bundle, Spec(
                args=req.args, env=req.env or list(DEFAULT_ENV), cwd=req.cwd, hostname=req.hostname or self.id,
                cgroups_path=req.cgroups_path or f"/shimd/{self.id}", terminal=req.terminal,
                memory_limit=req.memory_limit, pids_limit=req.pids_limit,
            ))
            writer = LogWriter(req.log_path, req.log_max_size, req.log_max_files)
            io = ProcessIO(self.state_dir, "init", writer, req.terminal, req.stdin)
            stdin, stdout, stderr, console = io.prepare()
            pid_file = os.path.join(self.state_dir, "init.pid")
            init = InitProcess(self, "", io, writer, os.path.join(self.state_dir, EXIT_FILE))
            with self.reaper.subscribe() as sub:
                await self.runc.create(self.id, self.bundle, CreateOpts(pid_file=pid_file, console_socket=console),
                                       stdin=stdin, stdout=stdout, stderr=stderr)
                with open(pid_file) as f:
                    init.pid = int(f.read().strip())
                init.watch_exit(self.reaper.watch(init.pid, sub))
            await io.started()
        except BaseException:
            if io is not None:
                io.close()
            if writer is not None:
                writer.close()
            _sys.unmount(self.rootfs)
            raise
        self.init = init
        self.log_path = req.log_path
        self._watch_oom(init.pid)
        self.journal.emit("create", pid=init.pid)
        self.log.info("created, init pid %d", init.pid)

    def _watch_oom(self, pid: int) -> None:
        self._memcg = cgroup.memory_dir(pid)
        if self._memcg is None or self._memcg[1] != 1:
            return  # v2: the exit-time counter still reports oom_killed; no live event
        try:
            self._oom_fds = _sys.oom_eventfd_v1(self._memcg[0])
        except OSError as e:
            self.log.warning("no OOM notifications: %s", e)
            return
        asyncio.get_running_loop().add_reader(self._oom_fds[0], self._on_oom)

    def _on_oom(self) -> None:
        try:
            os.read(self._oom_fds[0], 8)  # type: ignore[index]
        except BlockingIOError:
            return
        self.journal.emit("oom")
        self.log.warning("OOM in container")

    def oom_kills(self) -> int:
        return cgroup.oom_kills(self._memcg)

    def _stop_oom_watch(self) -> None:
        if self._oom_fds is not None:
            asyncio.get_running_loop().remove_reader(self._oom_fds[0])
            for fd in self._oom_fds:
                os.close(fd)
            self._oom_fds = None

    # --- container operations ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._init().start()

    async def kill(self, sig: int, all: bool, exec_id: str = "") -> None:
        await self.process(exec_id).kill(sig, all)

    async def pause(self) -> None:
        init = self._init()
        await init.state.pause(init)

    async def resume(self) -> None:
        init = self._init()
        await init.state.resume(init)

    async def update(self, memory_limit: int | None, pids_limit: int | None) -> None:
        init = self._init()
        init.state.check_io(init, "update")
        await self.runc.update(self.id, UpdateOpts(memory_limit=memory_limit, pids_limit=pids_limit))

    async def stats(self) -> dict:
        init = self._init()
        init.state.check_io(init, "get stats of")
        data = await self.runc.stats(self.id)
        mem = data.get("memory", {}).get("usage", {})
        pids = data.get("pids", {})
        return {
            "cpu_ns": data.get("cpu", {}).get("usage", {}).get("total", 0),
            "memory_bytes": mem.get("usage", 0),
            "memory_limit": mem.get("limit", 0),
            "pids": pids.get("current", 0),
            "pids_limit": pids.get("limit", 0),
            "oom_kills": self.oom_kills(),
        }

    async def pids(self) -> list[dict]:
        init = self._init()
        init.state.check_io(init, "list processes of")
        by_pid = {p.pid: p.exec_id for p in self.execs.values()}
        out = []
        for pid in await self.runc.ps(self.id):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
            out.append({"pid": pid, "ppid": ppid, "cmd": cmd, "exec_id": by_pid.get(pid, "")})
        return out

    async def exec(self, exec_id: str, args: list[str], env: list[str], cwd: str, terminal: bool, stdin: bool,
                   attach: bool) -> ExecProcess:
        check_id(exec_id, "exec id")
        init = self._init()
        init.state.check_exec(init)
        if exec_id in self.execs:
            raise AlreadyExists(f"exec id {exec_id!r} is already in use in container {self.id}")
        if not args:
            raise InvalidArgument("no command given for exec")
        d = os.path.join(self.state_dir, "execs", exec_id)
        os.makedirs(d, mode=0o700)
        writer = LogWriter(os.path.join(os.path.dirname(self.log_path), f"exec-{exec_id}.log")) if attach else None
        io = ProcessIO(d, "io", writer, terminal, stdin)
        p = ExecProcess(self, exec_id, io, writer, d, args, env, cwd or "")
        self.execs[exec_id] = p
        self.journal.emit("exec-added", exec_id)
        try:
            await p.start()
        except BaseException:
            p.discard()
            self.execs.pop(exec_id, None)
            raise
        return p

    async def write_stdin(self, exec_id: str, data: bytes) -> None:
        p = self.process(exec_id)
        p.state.check_io(p, "write to")
        await p.io.write_stdin(data)

    def close_stdin(self, exec_id: str) -> None:
        p = self.process(exec_id)
        p.state.check_io(p, "close stdin of")
        p.io.close_stdin()

    def resize(self, exec_id: str, rows: int, cols: int) -> None:
        p = self.process(exec_id)
        p.state.check_io(p, "resize")
        p.io.resize(rows, cols)

    def reopen_log(self) -> None:
        init = self._init()
        if init.log is not None:
            init.log.reopen()

    async def delete(self, exec_id: str = "") -> ExitStatus | None:
        if exec_id:
            p = self.process(exec_id)
            await p.delete()
            return p.exit
        async with self._delete_lock:
            init = self._init()
            if init.state.name == CREATED:  # kill the waiting init first; its exit makes the container stopped
                await init.do_kill(signal.SIGKILL, True)
                await init.exited.wait()
            await init.delete()
        return init.exit

    async def destroy(self) -> ExitStatus | None:
        """Kill whatever runs (SIGKILL to every process), wait for the exit, delete: shutdown with force."""
        init = self._init()
        if init.state.name not in (CREATED, STOPPED, "deleted"):
            await init.do_kill(signal.SIGKILL, True)
            await init.exited.wait()
        if init.state.name != "deleted":
            return await self.delete()
        return init.exit

    async def teardown(self) -> None:
        """After `runc delete`: unmount and remove the shim's state (its socket, pid and log stay until exit)."""
        self._stop_oom_watch()
        for p in list(self.execs.values()):
            p.discard()
        _sys.unmount(self.rootfs)
        self.journal.emit("delete")
        self.journal.close()
        for name in os.listdir(self.state_dir):
            if name not in KEEP:
                path = os.path.join(self.state_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)

    # --- queries -------------------------------------------------------------------------------------------

    def describe(self) -> dict:
        init = self._init()
        return {
            **init.describe(),
            "id": self.id,
            "shim_pid": os.getpid(),
            "bundle": self.bundle,
            "log_path": self.log_path,
            "events_seq": self.journal.seq,
            "execs": [p.describe() for p in self.execs.values()],
        }

    async def logs(self, exec_id: str, cur: int, follow: bool, timeout: float, max_bytes: int) -> dict:
        p = self.process(exec_id)
        records, new, done = p.logs(cur, max_bytes)
        if not records and follow and not done and p.log is not None:
            await p.log.changed(timeout)
            records, new, done = p.logs(new, max_bytes)
        return {"records": records, "cursor": new, "eof": done if follow else (p.log is None or
                                                                              p.log.at_end(new))}


def recorded_exit(state_dir: str) -> ExitStatus | None:
    try:
        return ExitStatus.from_wire(read_json(os.path.join(state_dir, EXIT_FILE)))  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
