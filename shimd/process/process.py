"""The init process and exec processes: what each does in each operation its state allows.

A process's exit is handled only after a concurrent start of it has finished (so its start event always precedes
its exit event), and the init's exit waits for the exit of every exec process first (the kernel kills them when
the init dies), so exec exits always precede the init's. Before an exit is published it is written durably.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from typing import TYPE_CHECKING

from runtime.bundle import exec_process
from runtime.opts import DeleteOpts, ExecOpts, KillOpts
from shimproto.fsutil import write_json
from shimproto.model import CREATED, ExitStatus

from .. import sys as _sys
from ..io.log import LogWriter
from ..io.stdio import ProcessIO
from . import STATES, State, next_state

if TYPE_CHECKING:
    from ..container import Container

EXEC_EXITS_GRACE = 5.0  # how long the init's exit waits for exec processes the kernel is killing


class Process:
    noun = "process"

    def __init__(self, c: Container, exec_id: str, io: ProcessIO, log: LogWriter | None, exit_path: str) -> None:
        self.c = c
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
        self.c.log.info("%s%s: %s -> %s", self.noun, f" {self.exec_id}" if self.exec_id else "", event,
                        self.state.name)

    # --- operations, dispatched through the state ----------------------------------------------------------

    async def start(self) -> None:
        async with self.start_lock:
            await self.state.start(self)

    async def kill(self, sig: int, all: bool) -> None:
        await self.state.kill(self, sig, all)

    async def delete(self) -> None:
        await self.state.delete(self)

    # --- what every process shares -------------------------------------------------------------------------

    def watch_exit(self, fut: asyncio.Future) -> None:
        self._exit_task = asyncio.create_task(self._on_exit(fut))

    async def _on_exit(self, fut: asyncio.Future) -> None:
        status = await fut
        async with self.start_lock:
            await self.before_exit()
            self.io.drain()
            self.io.close()
            if self.log is not None:
                self.log.close()
            self.exit = ExitStatus.from_wait_status(status, oom_killed=self.oom_killed())
            write_json(self.exit_path, self.exit.to_wire())
            self.transition("exit")
            self.c.journal.emit("exit", self.exec_id, pid=self.pid, exit=self.exit.to_wire())
            self.exited.set()

    async def before_exit(self) -> None:
        pass

    def oom_killed(self) -> bool:
        return False

    async def wait(self, timeout: float) -> dict:
        if not self.exited.is_set():
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except TimeoutError:
                return {"exited": False}
        return {"exited": True, "exit": self.exit.to_wire()}  # type: ignore[union-attr]

    def logs(self, cur: int, max_bytes: int) -> tuple[list, int, bool]:
        """(records, next cursor, at the end of a closed log)."""
        if self.log is None:
            return [], 0, True
        if cur < 0:  # "from now on" (attach)
            cur = self.log.end
        records, new = self.log.read(cur, max_bytes)
        return records, new, self.log.closed and self.log.at_end(new)

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


class InitProcess(Process):
    noun = "container"

    async def do_start(self) -> None:
        await self.c.runc.start(self.c.id)
        self.started_at = time.time_ns()
        self.transition("start")
        self.c.journal.emit("start", pid=self.pid)

    async def do_kill(self, sig: int, all: bool) -> None:
        await self.c.runc.kill(self.c.id, sig, KillOpts(all=all))

    async def do_pause(self) -> None:
        await self.c.runc.pause(self.c.id)
        self.transition("pause")
        self.c.journal.emit("paused")

    async def do_resume(self) -> None:
        await self.c.runc.resume(self.c.id)
        self.transition("resume")
        self.c.journal.emit("resumed")

    async def do_delete(self) -> None:
        await self.c.runc.delete(self.c.id, DeleteOpts(force=self.state.name == CREATED))
        self.transition("delete")
        await self.c.teardown()

    async def before_exit(self) -> None:
        running = [e.exited.wait() for e in self.c.execs.values() if e.pid and not e.exited.is_set()]
        if running:
            await asyncio.wait([asyncio.ensure_future(w) for w in running], timeout=EXEC_EXITS_GRACE)

    def oom_killed(self) -> bool:
        return self.c.oom_kills() > 0


class ExecProcess(Process):
    noun = "exec process"

    def __init__(self, c: Container, exec_id: str, io: ProcessIO, log: LogWriter | None, dir: str,
                 args: list[str], env: list[str], cwd: str) -> None:
        super().__init__(c, exec_id, io, log, os.path.join(dir, "exit.json"))
        self.dir = dir
        self.args = args
        self.env = env
        self.cwd = cwd

    async def do_start(self) -> None:
        with open(os.path.join(self.c.bundle, "config.json")) as f:
            base = json.load(f)["process"]
        proc_file = os.path.join(self.dir, "process.json")
        with open(proc_file, "w") as f:
            json.dump(exec_process(base, self.args, self.env, self.cwd, self.io.terminal), f)
        pid_file = os.path.join(self.dir, "pid")
        stdin, stdout, stderr, console = self.io.prepare()
        with self.c.reaper.subscribe() as sub:
            await self.c.runc.exec(self.c.id, ExecOpts(process_file=proc_file, pid_file=pid_file,
                                                       console_socket=console),
                                   stdin=stdin, stdout=stdout, stderr=stderr)
            with open(pid_file) as f:
                self.pid = int(f.read().strip())
            self.watch_exit(self.c.reaper.watch(self.pid, sub))
        await self.io.started()
        self.started_at = time.time_ns()
        self.transition("start")
        self.c.journal.emit("exec-started", self.exec_id, pid=self.pid)

    async def do_kill(self, sig: int, all: bool) -> None:
        # still unreaped (only our reaper reaps it, and it has not), so the pid cannot have been reused
        _sys.send_signal(self.pid, sig)

    async def do_delete(self) -> None:
        self.discard()
        self.transition("delete")
        self.c.execs.pop(self.exec_id, None)

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
