"""One container as its shim owns it: writable root, bundle, /etc files, log, event journal, OOM watch, the init
process of the current run and its exec processes.

Life: create (mount the overlay, write /etc/hostname, hosts, resolv.conf and the bundle, `runc create` with the
stdio the init needs) -> start -> exits (each written durably, then journaled, then waiters woken) -> restart (a
new run: `runc delete`, create and start again on the same root, log and stdio set-up) or delete (`runc delete`,
unmount, remove the shim's state). Mounts are made in the shim's private mount namespace, so only the shim can see
or undo them. Processes get a narrow ProcessContext; what spans processes (waiting for exec exits before the init's
exit is published, the OOM count, teardown after the init is deleted) is done here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal

from runtime.bundle import write_bundle
from runtime.cni import Cni
from runtime.opts import CreateOpts, UpdateOpts
from runtime.runc import Runc
from shimproto.cri import PLAIN, ReadOpts
from shimproto.errors import AlreadyExists, InvalidArgument, InvalidState, NotFound
from shimproto.exitstatus import ExitStatus
from shimproto.fsutil import read_json
from shimproto.model import CREATED, DELETED, RESTARTING, STOPPED, check_id
from shimproto.spec import ShimCreate

from . import ocispec
from . import sys as _sys
from .cgroup import OomWatch
from .etcfiles import container_files, host_lines, hosts_text, rewrite_hosts
from .events import Journal
from .health import Health
from .io.log import LogWriter, check_log_dir
from .io.stdio import ProcessIO
from .mounts import oci_mounts
from .net import ShimNetwork
from .process.context import ExitHooks, ProcessContext
from .process.process import ExecProcess, InitProcess, Process
from .reaper import Reaper
from .restart import Restarts
from .users import resolve_user

EXIT_FILE = "exit.json"
KEEP = ("shim.sock", "shim.pid", "shim.log")
EXEC_EXITS_GRACE = 5.0  # how long the init's exit waits for exec processes the kernel is killing


class Container:
    def __init__(self, id: str, state_dir: str, runc: Runc, reaper: Reaper, log: logging.LoggerAdapter) -> None:
        self.id = id
        self.state_dir = state_dir
        self.bundle = os.path.join(state_dir, "bundle")
        self.rootfs = os.path.join(self.bundle, "rootfs")
        self.runc = runc
        self.log = log
        self.journal = Journal(os.path.join(state_dir, "events.journal"), id)
        self.ctx = ProcessContext(id=id, bundle=self.bundle, runtime=runc, reaper=reaper, journal=self.journal,
                                  log=log)
        self.init: InitProcess | None = None
        self.execs: dict[str, ExecProcess] = {}
        self.req: ShimCreate | None = None
        self.log_path = ""
        self._writer: LogWriter | None = None
        self._oom: OomWatch | None = None
        self._torn_down = False
        self._delete_lock = asyncio.Lock()
        self.net = ShimNetwork(id, state_dir, Cni(reaper, tmp_dir=state_dir), log)
        self.restarts = Restarts(self.journal, log, lambda: self._new_run(True),
                                 lambda: self._init().kill(signal.SIGKILL, True))
        self.health = Health(self.ctx, state_dir)

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

    # --- create, restart -----------------------------------------------------------------------------------

    async def create(self, req: ShimCreate) -> None:
        if self.init is not None:
            raise InvalidState(f"container {self.id} is already created")
        for lower in req.lower.split(":"):
            if not os.path.isdir(lower):
                raise InvalidArgument(f"rootfs {lower} is not a directory")
        spec = req.spec
        # the writable layer and our log are root's alone (upper keeps 0711: it is the container's /); a client's
        # log_path is in its own directory, left as it is and never rotated here (LogWriter's max_size 0)
        check_log_dir(spec.log_path)
        for d in (os.path.dirname(req.upper), req.files_dir, self.bundle):
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        for d in (req.upper, req.work, self.rootfs):
            os.makedirs(d, mode=0o711, exist_ok=True)
        _sys.mount_overlay(req.lower, req.upper, req.work, self.rootfs)
        try:
            await self.net.attach(req.network, req.files_dir)
            binds = container_files(req, self.id, self.net.ip) + oci_mounts(self.rootfs, req.mounts)
            write_bundle(self.bundle, ocispec.build(self.id, req, self.rootfs, binds, self.net.netns()))
            self._writer = LogWriter(req.log_path, 0 if spec.log_path else spec.log_max_size or 0,
                                     spec.log_max_files or 5)
            self.init = await self._create_init(req)
        except BaseException:
            if self._writer is not None:
                self._writer.close()
            await self.net.release()
            _sys.unmount(self.rootfs)
            raise
        self.req = req
        self.log_path = req.log_path
        self.restarts.configure(spec)
        self.health.configure(spec)

    async def _create_init(self, req: ShimCreate) -> InitProcess:
        """`runc create` of one run of the container on the bundle already written; the log is self._writer."""
        io = ProcessIO(self.state_dir, "init", self._writer, req.spec.tty, req.spec.stdin)
        try:
            stdin, stdout, stderr, console = io.prepare()
            pid_file = os.path.join(self.state_dir, "init.pid")
            init = InitProcess(self.ctx, "", io, self._writer, os.path.join(self.state_dir, EXIT_FILE),
                               ExitHooks(before_exit=self._execs_exited, oom_killed=self._oom_killed))
            with self.ctx.reaper.subscribe() as sub:
                await self.runc.create(self.id, self.bundle, CreateOpts(pid_file=pid_file, console_socket=console),
                                       stdin=stdin, stdout=stdout, stderr=stderr)
                with open(pid_file) as f:
                    init.pid = int(f.read().strip())
                init.watch_exit(self.ctx.reaper.watch(init.pid, sub))
            await io.started()
        except BaseException:
            io.close()
            raise
        self._oom = OomWatch(init.pid, self._on_oom, self.log)
        self.journal.emit("create", pid=init.pid)
        self.log.info("created, init pid %d", init.pid)
        return init

    async def restart(self, start: bool) -> None:
        """The user runs a stopped container again (a back-off under way is dropped): see _new_run."""
        self.restarts.user_start()
        await self._new_run(start)

    async def _new_run(self, start: bool) -> None:
        """A new run of a stopped container: `runc delete` of the old one, create (and start) again with the same
        bundle, writable layer, log (appended to) and stdio set-up. If the new run cannot be created, the
        container stays stopped with its last exit."""
        async with self._delete_lock:
            old = self._init()

            async def next_run() -> None:
                assert self.req is not None and self._writer is not None
                self._end_run()
                self._writer.resume()
                try:
                    self.init = await self._create_init(self.req)
                except BaseException:
                    self._writer.close()
                    raise
                with contextlib.suppress(FileNotFoundError):  # the last run's: the new run writes its own
                    os.unlink(os.path.join(self.state_dir, EXIT_FILE))

            await old.restart(next_run)  # refused unless stopped: "cannot restart a running container"
        if start:
            await self._start_run()

    def _end_run(self) -> None:
        """What belongs to one run only: its exec processes and its OOM watch."""
        if self._oom is not None:
            self._oom.close()
            self._oom = None
        for p in list(self.execs.values()):
            p.discard()
        self.execs.clear()

    # --- what spans processes ------------------------------------------------------------------------------

    async def _execs_exited(self) -> None:
        """Before the init's exit is published: its exec processes' exits, which the kernel is delivering."""
        running = [e.exited.wait() for e in self.execs.values() if e.pid and not e.exited.is_set()]
        if running:
            await asyncio.wait([asyncio.ensure_future(w) for w in running], timeout=EXEC_EXITS_GRACE)

    def _on_oom(self) -> None:
        self.journal.emit("oom")
        self.log.warning("OOM in container")

    def oom_kills(self) -> int:
        return self._oom.kills() if self._oom is not None else 0

    def _oom_killed(self) -> bool:
        return self.oom_kills() > 0

    # --- container operations ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.restarts.user_start()
        await self._start_run()

    async def _start_run(self) -> None:
        init = self._init()
        await init.start()
        self.restarts.run_started(init)
        self.health.run_started(init)

    async def kill(self, sig: int, all: bool, exec_id: str = "") -> None:
        if exec_id or not self.restarts.user_kill(sig):  # True: a back-off dropped, no run to signal
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
                   attach: bool, user: str = "") -> ExecProcess:
        check_id(exec_id, "exec id")
        init = self._init()
        init.state.check_exec(init)
        if exec_id in self.execs:
            raise AlreadyExists(f"exec id {exec_id!r} is already in use in container {self.id}")
        if not args:
            raise InvalidArgument("no command given for exec")
        if cwd and not cwd.startswith("/"):
            raise InvalidArgument(f"exec: working directory {cwd!r} must be an absolute path")
        oci_user = resolve_user(self.rootfs, user) if user else None
        d = os.path.join(self.state_dir, "execs", exec_id)
        os.makedirs(d, mode=0o700)
        writer = LogWriter(os.path.join(self.req.files_dir, f"exec-{exec_id}.log")) if attach and self.req else None
        io = ProcessIO(d, "io", writer, terminal, stdin)
        p = ExecProcess(self.ctx, exec_id, io, writer, d, args, env, cwd or "", oci_user)
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

    def set_peers(self, peers: list[list[str]]) -> None:
        """The other containers of our network changed: [ip, name, ...] each, written into our /etc/hosts."""
        if self.req is None or self.net.plan.mode != "cni":
            return
        rewrite_hosts(self.req.files_dir, hosts_text(self.req.spec.hostname or self.id, self.net.ip,
                                                     host_lines(self.req.spec, peers)))

    def reopen_log(self) -> None:
        if self._writer is not None:
            self._writer.reopen()

    async def delete(self, exec_id: str = "") -> ExitStatus | None:
        if exec_id:
            p = self.process(exec_id)
            await p.delete()
            self.execs.pop(exec_id, None)
            return p.exit
        self.restarts.close()
        async with self._delete_lock:
            init = self._init()
            if init.state.name == CREATED:  # kill the waiting init first; its exit makes the container stopped
                await init.do_kill(signal.SIGKILL, True)
                await init.exited.wait()
            await init.delete()
            await self.teardown()
        return init.exit

    async def destroy(self) -> ExitStatus | None:
        """Kill whatever runs (SIGKILL to every process), wait for the exit, delete: shutdown with force."""
        init = self._init()
        if init.state.name not in (CREATED, STOPPED, DELETED):
            await init.do_kill(signal.SIGKILL, True)
            await init.exited.wait()
        if init.state.name != DELETED:
            return await self.delete()
        return init.exit

    async def teardown(self) -> None:
        """After the init is deleted: unmount and remove the shim's state (its socket, pid and log stay until
        exit)."""
        self._torn_down = True
        self.health.close()  # (delete closed the restart policy before it took the lock)
        self._end_run()
        if self._writer is not None:
            self._writer.close()
        await self.net.release()
        _sys.unmount(self.rootfs)
        self.journal.emit("delete")
        self.journal.close()
        for name in os.listdir(self.state_dir):
            if name not in KEEP:
                path = os.path.join(self.state_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)

    @property
    def gone(self) -> bool:
        """Nothing left to own: the shim may exit."""
        return self.init is None or self._torn_down

    # --- queries -------------------------------------------------------------------------------------------

    def describe(self) -> dict:
        init = self._init()
        return {
            **init.describe(), **self.restarts.describe(), **self.health.describe(),
            **({"status": RESTARTING} if self.restarts.pending else {}),
            "id": self.id,
            "shim_pid": os.getpid(),
            "bundle": self.bundle,
            "log_path": self.log_path,
            "events_seq": self.journal.seq,
            "execs": [p.describe() for p in self.execs.values()],
            "network": self.net.describe(),
        }

    async def logs(self, exec_id: str, cur: int, follow: bool, timeout: float, max_bytes: int, tail: int = -1,
                   opts: ReadOpts = PLAIN) -> dict:
        p = self.process(exec_id)
        if tail >= 0 and p.log is not None:
            cur = p.log.tail_cursor(tail)
        records, new, done = p.logs(cur, max_bytes, opts)
        if not records and follow and not done and p.log is not None and p.log.at_end(new):
            await p.log.changed(timeout)
            records, new, done = p.logs(new, max_bytes, opts)
        return {"records": records, "cursor": new,
                "eof": done if follow else (done or p.log is None or p.log.at_end(new))}


def recorded_exit(state_dir: str) -> ExitStatus | None:
    try:
        return ExitStatus.from_wire(read_json(os.path.join(state_dir, EXIT_FILE)))  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
