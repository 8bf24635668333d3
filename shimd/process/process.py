"""The init process and exec processes: what each does in each operation its state allows.

A process sees its container only through a ProcessContext (id, bundle, runtime, reaper, journal, logger); the
container does what spans processes and hands it in as ExitHooks. A process's exit is handled only after a
concurrent start of it has finished (so its start event always precedes its exit event), and the init's exit
awaits its hooks' before_exit first (the container waits there for its exec processes, which the kernel kills when
the init dies), so exec exits always precede the init's. Before an exit is published it is written durably.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable

import runtime.errors as rt
from runtime.bundle import exec_process
from runtime.opts import DeleteOpts, ExecOpts, KillOpts
from shimproto.cri import PLAIN, ReadOpts
from shimproto.errors import InvalidState
from shimproto.exitstatus import ExitStatus
from shimproto.fsutil import write_json
from shimproto.model import CREATED, STOPPED
from shimproto.plant import planted

from .. import sys as _sys
from ..io.log import LogWriter
from ..io.stdio import ProcessIO
from . import STATES, State, next_state
from .context import ExitHooks, ProcessContext


class Process:
    noun = "process"

    def __init__(self, ctx: ProcessContext, exec_id: str, io: ProcessIO, log: LogWriter | None, exit_path: str,
                 hooks: ExitHooks = ExitHooks()) -> None:
        self.ctx = ctx
        self.hooks = hooks
        self.exec_id = exec_id
        self.io = io
        self.log = log
        self.exit_path = exit_path
        self.pid = 0
        self.state: State = STATES[CREATED]
        self.exit: ExitStatus | None = None
        self.exited = asyncio.Event()
        self.start_lock = asyncio.Lock()
        self.created_at = time.time_ns()
        self.started_at = 0
        self._exit_task: asyncio.Task | None = None

    def transition(self, event: str) -> None:
        self.state = STATES[next_state(self.state.name, event, self.noun)]
        self.ctx.log.info("%s%s: %s -> %s", self.noun, f" {self.exec_id}" if self.exec_id else "", event,
                          self.state.name)

    # --- operations, dispatched through the state ----------------------------------------------------------

    async def start(self) -> None:
        async with self.start_lock:
            await self.state.start(self)

    async def kill(self, sig: int, all: bool) -> None:
        await self.state.kill(self, sig, all)

    async def delete(self) -> None:
        await self.state.delete(self)

    async def restart(self, next_run: Callable[[], Awaitable[None]]) -> None:
        await self.state.restart(self, next_run)

    # --- what every process shares -------------------------------------------------------------------------

    def watch_exit(self, fut: asyncio.Future) -> None:
        self._exit_task = asyncio.create_task(self._on_exit(fut))

    async def _on_exit(self, fut: asyncio.Future) -> None:
        status = await fut
        async with self.start_lock:
            await self.hooks.before_exit()
            self.io.drain()
            self.io.close()
            if self.log is not None:
                self.log.close()
            self.exit = ExitStatus.from_wait_status(status, oom_killed=self.hooks.oom_killed())
            if planted("wrong-exec-exit-code" if self.exec_id else "wrong-exit-code"):
                self.exit = ExitStatus.from_wire({**self.exit.to_wire(), "code": self.exit.code + 1})
            write_json(self.exit_path, self.exit.to_wire())
            self.transition("exit")
            self.ctx.journal.emit("exit", self.exec_id, pid=self.pid, exit=self.exit.to_wire())
            self.exited.set()

    async def wait(self, timeout: float) -> dict:
        if not self.exited.is_set():
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except TimeoutError:
                return {"exited": False}
        return {"exited": True, "exit": self.exit.to_wire()}  # type: ignore[union-attr]

    def logs(self, cur: int, max_bytes: int, opts: ReadOpts = PLAIN, pages: int = 16) -> tuple[list, int, bool]:
        """(records, next cursor, done: at the end of a closed log or past opts.until). Pages wholly outside
        since/until are skipped, up to `pages` of them per call."""
        if self.log is None:
            return [], 0, True
        if cur < 0:  # "from now on" (attach)
            cur = self.log.end
        for _ in range(pages):
            records, new, past = self.log.read(cur, max_bytes, opts)
            if records or past or new == cur:
                break
            cur = new
        if planted("lose-attach-line") and records and records[0][1].count(b"\n") > 1:
            records[0][1] = records[0][1].split(b"\n", 1)[1]
        at_end = self.log.at_end(new)
        done = past or (at_end and (self.log.closed or 0 < opts.until < time.time_ns()))
        return records, new, done

    def describe(self) -> dict:
        return {
            "exec_id": self.exec_id,
            "status": self.state.name,
            "pid": self.pid,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "exit": self.exit.to_wire() if self.exit else None,
            "terminal": self.io.terminal,
            "log_dropped_bytes": self.log.dropped if self.log else 0,
        }

    # --- implemented per kind ------------------------------------------------------------------------------

    async def do_start(self) -> None:
        raise NotImplementedError

    async def do_kill(self, sig: int, all: bool) -> None:
        raise NotImplementedError

    async def do_pause(self) -> None:
        raise NotImplementedError

    async def do_resume(self) -> None:
        raise NotImplementedError

    async def do_delete(self) -> None:
        raise NotImplementedError

    async def do_restart(self, next_run: Callable[[], Awaitable[None]]) -> None:
        raise InvalidState(f"cannot restart an {self.noun}: only a container is restarted")


class InitProcess(Process):
    noun = "container"

    async def do_start(self) -> None:
        await self.ctx.runtime.start(self.ctx.id)
        self.started_at = time.time_ns()
        self.transition("start")
        self.ctx.journal.emit("start", pid=self.pid)

    async def do_kill(self, sig: int, all: bool) -> None:
        await self.ctx.runtime.kill(self.ctx.id, sig, KillOpts(all=all))

    async def do_pause(self) -> None:
        await self.ctx.runtime.pause(self.ctx.id)
        self.transition("pause")
        self.ctx.journal.emit("paused")

    async def do_resume(self) -> None:
        await self.ctx.runtime.resume(self.ctx.id)
        self.transition("resume")
        self.ctx.journal.emit("resumed")

    async def do_delete(self) -> None:
        """`runc delete`; the container tears down what is left once its init is deleted."""
        if not planted("leave-runtime-state"):  # planted bug: runc's state and the cgroups outlive the container
            await self._runtime_delete(force=self.state.name == CREATED)
        self.transition("delete")

    async def do_restart(self, next_run: Callable[[], Awaitable[None]]) -> None:
        """`runc delete` of this run's runtime container, then next_run (the container creates the new run under
        the same id). Only once that worked is this run over: if it failed, this one stays stopped."""
        await self._runtime_delete(force=False)
        await next_run()
        self.transition("restart")

    async def _runtime_delete(self, force: bool) -> None:
        try:
            await self.ctx.runtime.delete(self.ctx.id, DeleteOpts(force=force))
        except rt.NotFound:  # a restart deleted it and could not create the next run: nothing left to delete
            if self.state.name != STOPPED:
                raise


class ExecProcess(Process):
    noun = "exec process"

    def __init__(self, ctx: ProcessContext, exec_id: str, io: ProcessIO, log: LogWriter | None, dir: str,
                 args: list[str], env: list[str], cwd: str, user: dict | None = None) -> None:
        super().__init__(ctx, exec_id, io, log, os.path.join(dir, "exit.json"))
        self.dir = dir
        self.args = args
        self.env = env
        self.cwd = cwd
        self.user = user  # an OCI process user ({uid, gid, additionalGids}); None: the container's

    async def do_start(self) -> None:
        with open(os.path.join(self.ctx.bundle, "config.json")) as f:
            base = json.load(f)["process"]
        proc_file = os.path.join(self.dir, "process.json")
        # owner-only: the env holds secrets
        with os.fdopen(os.open(proc_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
            json.dump(exec_process(base, self.args, self.env, self.cwd, self.io.terminal, self.user), f)
        pid_file = os.path.join(self.dir, "pid")
        stdin, stdout, stderr, console = self.io.prepare()
        with self.ctx.reaper.subscribe() as sub:
            await self.ctx.runtime.exec(self.ctx.id, ExecOpts(process_file=proc_file, pid_file=pid_file,
                                                       console_socket=console),
                                   stdin=stdin, stdout=stdout, stderr=stderr)
            with open(pid_file) as f:
                self.pid = int(f.read().strip())
            self.watch_exit(self.ctx.reaper.watch(self.pid, sub))
        await self.io.started()
        self.started_at = time.time_ns()
        self.transition("start")
        self.ctx.journal.emit("exec-started", self.exec_id, pid=self.pid)

    async def do_kill(self, sig: int, all: bool) -> None:
        # still unreaped (only our reaper reaps it, and it has not), so the pid cannot have been reused
        _sys.send_signal(self.pid, sig)

    async def do_delete(self) -> None:
        self.discard()
        self.transition("delete")

    def discard(self) -> None:
        """Close the exec's stdio and remove its files (its log, its state directory)."""
        self.io.close()
        if self.log is not None:
            self.log.close()
            for path in (self.log.path, *(f"{self.log.path}.{n}" for n in range(1, self.log.max_files))):
                if os.path.exists(path):
                    os.unlink(path)
        shutil.rmtree(self.dir, ignore_errors=True)

    def describe(self) -> dict:
        return {**super().describe(), "args": self.args}
