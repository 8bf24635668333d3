"""A container's health check as its shim runs it: a probe every interval inside the container, its verdicts, the
status they add up to (docker's rules), a `health_status` event on each change. The shim does it, so it goes on
while the manager is down.

A probe is an exec of the check's command (`runc exec --detach`, the container's own user, env and cwd) with its
stdout and stderr in a file of the shim's state dir; its first 4 KiB are kept with the exit code, the last five
results in all. One loop per run: a probe never overlaps the previous one, and everything is awaited on the event
loop (the reaper reports the probe's exit), so the shim's API is never held up. A probe still running at its
timeout is SIGKILLed with every process it started and counts as a failure (exit code -1). While the container is
paused no probe is run.

Status, one class per state, moves in TRANSITIONS (shaped like shimd/process/): every run starts `starting`; a
pass makes it `healthy`; `retries` failures in a row make it `unhealthy`, except that failures within the start
period do not count while it is still starting.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import time

from runtime.bundle import exec_process
from runtime.opts import ExecOpts
from shimproto.model import HEALTH_STARTING, HEALTHY, PAUSED, UNHEALTHY, rfc3339
from shimproto.plant import planted
from shimproto.policy import HealthCheck
from shimproto.spec import ContainerSpec

from . import sys as _sys
from .process.context import ProcessContext
from .process.process import Process

RESULTS_KEPT = 5
OUTPUT_KEPT = 4096  # docker's too
KILLED_WAIT = 5.0  # how long a probe killed at its timeout may take to be reaped

TRANSITIONS: dict[tuple[str, str], str] = {
    (HEALTH_STARTING, "pass"): HEALTHY,
    (HEALTH_STARTING, "fail"): UNHEALTHY,
    (HEALTHY, "fail"): UNHEALTHY,
    (UNHEALTHY, "pass"): HEALTHY,
}


class HealthState:
    name = ""

    def passed(self, h: Health) -> None:
        h.streak = 0
        h.move("pass")

    def failed(self, h: Health, started: float, now: float) -> None:
        h.streak += 1
        if h.streak >= h.check.retries:
            h.move("fail")


class Starting(HealthState):
    name = HEALTH_STARTING

    def failed(self, h: Health, started: float, now: float) -> None:
        if now - started < h.check.start_period:
            return  # within the start period a failure does not count
        super().failed(h, started, now)


class Healthy(HealthState):
    name = HEALTHY

    def passed(self, h: Health) -> None:
        h.streak = 0


class Unhealthy(HealthState):
    name = UNHEALTHY

    def failed(self, h: Health, started: float, now: float) -> None:
        h.streak += 1


STATES: dict[str, HealthState] = {s.name: s for s in (Starting(), Healthy(), Unhealthy())}


class Health:
    def __init__(self, ctx: ProcessContext, state_dir: str) -> None:
        self.ctx = ctx
        self.dir = os.path.join(state_dir, "health")
        self.check = HealthCheck(None)
        self.state: HealthState = STATES[HEALTH_STARTING]
        self.streak = 0
        self.results: collections.deque[dict] = collections.deque(maxlen=RESULTS_KEPT)
        self.task: asyncio.Task | None = None
        self.probes = 0  # how many were run (tests and the chaos suite count them)

    @property
    def log(self) -> logging.LoggerAdapter:
        return self.ctx.log

    def move(self, event: str) -> None:
        old = self.state.name
        self.state = STATES[TRANSITIONS[(old, event)]]
        self._changed()

    def _changed(self) -> None:
        self.ctx.journal.emit("health_status", status=self.state.name, failing_streak=self.streak)
        self.log.info("health: %s", self.state.name)

    def configure(self, spec: ContainerSpec) -> None:
        self.check = HealthCheck.of(spec.healthcheck)

    def run_started(self, init: Process) -> None:
        """A run began: its health starts over, checked every interval until it exits."""
        self.close()
        if self.check.args is None:
            return
        self.state, self.streak = STATES[HEALTH_STARTING], 0
        self._changed()
        self.task = asyncio.create_task(self._loop(init))

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _loop(self, init: Process) -> None:
        started = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(init.exited.wait(), self.check.interval)
                return  # the run is over
            except TimeoutError:
                pass
            if init.state.name == PAUSED:
                continue
            t0, start = time.monotonic(), time.time_ns()
            try:
                code, output = await self._probe()
            except Exception as e:  # runc could not exec: the container is going away, or the command is not there
                if init.exited.is_set():
                    return
                code, output = -1, f"cannot run the health check: {e}"
            self.probes += 1
            self.results.append({"start": rfc3339(start), "end": rfc3339(time.time_ns()), "exit_code": code,
                                 "output": output})
            if code == 0:
                self.state.passed(self)
            else:
                self.state.failed(self, started, t0)

    async def _probe(self) -> tuple[int, str]:
        """Run the check once; (exit code, output). -1: killed at the timeout."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with open(os.path.join(self.ctx.bundle, "config.json")) as f:
            base = json.load(f)["process"]
        proc_file, pid_file = os.path.join(self.dir, "process.json"), os.path.join(self.dir, "pid")
        out_path = os.path.join(self.dir, "output")
        # owner-only: the env holds secrets
        with os.fdopen(os.open(proc_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
            json.dump(exec_process(base, list(self.check.args or []), None, None, False), f)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.check.timeout
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with self.ctx.reaper.subscribe() as sub:
                await self.ctx.runtime.exec(self.ctx.id, ExecOpts(process_file=proc_file, pid_file=pid_file),
                                            stdout=out, stderr=out)
                with open(pid_file) as f:
                    pid = int(f.read().strip())
                done = self.ctx.reaper.watch(pid, sub)
        finally:
            os.close(out)
        try:
            status = await asyncio.wait_for(asyncio.shield(done), max(0.0, deadline - loop.time()))
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            output = ""
        except TimeoutError:
            if not planted("hung-check-not-killed"):
                kill_tree(pid)
            try:
                await asyncio.wait_for(done, KILLED_WAIT)
            except TimeoutError:
                self.log.warning("health check pid %d not reaped %gs after SIGKILL", pid, KILLED_WAIT)
            code, output = -1, f"Health check exceeded timeout ({self.check.timeout:g}s)\n"
        with open(out_path, "rb") as f:
            output = f.read(OUTPUT_KEPT).decode(errors="replace") + output
        return code, output

    def describe(self) -> dict:
        if self.check.args is None:
            return {"health": None}
        return {"health": self.state.name, "health_failing_streak": self.streak,
                "health_log": list(self.results)}


def kill_tree(pid: int) -> None:
    """SIGKILL pid and every process below it (a hung check's children too), read from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rpartition(b")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            _sys.send_signal(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
