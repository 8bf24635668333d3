"""A container's restart policy as its shim keeps it: every run's exit judged, the back-off, the next run made.

The shim does it, so it goes on while the manager is down. Runs are numbered from 1 (`run`); `restart_count`
counts the restarts the policy made since the user last started the container (docker's; on-failure's MAX is
compared with it). The last exits are kept, each with its run number, for inspect and for `wait {run}`.

One class per state; each implements only what that state allows, the base refuses the rest; the legal moves are
TRANSITIONS (shaped like shimd/process/):

    idle         no run to judge: never started, the policy said no, or the user stopped it
    watching     a run is under way; its exit is judged by the policy
    backing-off  the policy asked for a new run; it is made at the deadline (shown as status restarting)
    restarting   the new run is being made
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from shimproto.errors import InvalidState
from shimproto.plant import planted
from shimproto.policy import BACKOFF_FIRST, BACKOFF_LONGEST, BACKOFF_RESET, RestartPolicy, stops_policy
from shimproto.spec import ContainerSpec

from .events import Journal
from .process.process import Process

IDLE, WATCHING, BACKING_OFF, RESTARTING = "idle", "watching", "backing-off", "restarting"
EXITS_KEPT = 5

TRANSITIONS: dict[tuple[str, str], str] = {
    (IDLE, "start"): WATCHING,  # the user started it
    (WATCHING, "exit"): IDLE,  # the policy does not restart this exit (or the user stopped it)
    (WATCHING, "retry"): BACKING_OFF,
    (BACKING_OFF, "due"): RESTARTING,
    (BACKING_OFF, "cancel"): IDLE,  # stopped, killed, removed or started by the user meanwhile
    (RESTARTING, "start"): WATCHING,  # the new run runs
    (RESTARTING, "failed"): IDLE,  # the new run could not be made: stopped with its last exit
}


class RestartState:
    name = ""

    def _refuse(self, op: str) -> InvalidState:
        return InvalidState(f"restart policy: cannot {op} while {self.name}")

    def exited(self, m: Restarts, exit: dict, ran_for: float) -> None:
        raise self._refuse("judge an exit")

    def due(self, m: Restarts) -> None:
        raise self._refuse("make the next run")

    def started(self, m: Restarts) -> None:
        raise self._refuse("start a run")

    def user_stop(self, m: Restarts) -> bool:
        """The user stopped the container: True when that is all there was to do (no run to signal)."""
        m.by_user = True
        return False


class Idle(RestartState):
    name = IDLE

    def exited(self, m: Restarts, exit: dict, ran_for: float) -> None:
        pass  # a created container killed before its start: nothing to judge

    def started(self, m: Restarts) -> None:
        m.move("start")


class Watching(RestartState):
    name = WATCHING

    def exited(self, m: Restarts, exit: dict, ran_for: float) -> None:
        if not m.policy.restarts(int(exit["code"]), m.count, m.by_user):
            m.move("exit")
            return
        if ran_for >= BACKOFF_RESET:
            m.delay = 0.0
        m.delay = BACKOFF_FIRST if m.delay == 0 else min(m.delay * 2, BACKOFF_LONGEST)
        m.count += 2 if planted("restart-count-skips") else 1
        m.move("retry")
        m.journal.emit("restart", count=m.count, delay_ms=int(m.delay * 1000), exit_code=exit["code"])
        m.log.info("restart %d in %.1fs (exit %s)", m.count, m.delay, exit["code"])
        m.timer = m._spawn(m.backoff(m.delay))


class BackingOff(RestartState):
    name = BACKING_OFF

    def due(self, m: Restarts) -> None:
        m.move("due")

    def user_stop(self, m: Restarts) -> bool:
        m.by_user = True
        m.cancel()
        return True


class Restarting(RestartState):
    name = RESTARTING

    def started(self, m: Restarts) -> None:
        m.move("start")

    def user_stop(self, m: Restarts) -> bool:
        m.by_user = True  # the run being made is killed once it runs (Restarts.run_started)
        return True


STATES: dict[str, RestartState] = {s.name: s for s in (Idle(), Watching(), BackingOff(), Restarting())}


class Restarts:
    def __init__(self, journal: Journal, log: logging.LoggerAdapter,
                 new_run: Callable[[], Awaitable[None]], kill: Callable[[], Awaitable[None]]) -> None:
        self.journal = journal
        self.log = log
        self.new_run = new_run  # the container's: a new run made and started (it calls run_started)
        self.kill = kill  # the container's: SIGKILL to every process of the current run
        self.policy = RestartPolicy()
        self.stop_signal = ""
        self.state: RestartState = STATES[IDLE]
        self.count = 0
        self.run = 0
        self.by_user = False
        self.delay = 0.0
        self.exits: collections.deque[dict] = collections.deque(maxlen=EXITS_KEPT)
        self.timer: asyncio.Task | None = None
        self.changed = asyncio.Event()  # set (and replaced) on every move: a wait across a back-off wakes
        self.closed = False
        self._tasks: set[asyncio.Task] = set()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def move(self, event: str) -> None:
        try:
            self.state = STATES[TRANSITIONS[(self.state.name, event)]]
        except KeyError:
            raise InvalidState(f"restart policy: cannot {event} while {self.state.name}") from None
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def pending(self) -> bool:
        """Is a new run coming (the last one's exit is not the container's final word)?"""
        return self.state.name in (BACKING_OFF, RESTARTING)

    # --- what the container tells us -----------------------------------------------------------------------

    def user_start(self) -> None:
        """The user starts the container (again): a back-off under way is dropped, the count starts over."""
        if self.state.name == BACKING_OFF:
            self.cancel()
        self.by_user = False
        self.count = 0
        self.delay = 0.0

    def configure(self, spec: ContainerSpec) -> None:
        self.policy, self.stop_signal = RestartPolicy.parse(spec.restart), spec.stop_signal

    def user_kill(self, sig: int) -> bool:
        """A kill of the container by the user; True when there was no run to signal (a back-off dropped)."""
        if not stops_policy(sig, self.stop_signal):
            return False
        return self.state.user_stop(self)

    def run_started(self, init: Process) -> None:
        self.run += 1
        self.state.started(self)
        self._spawn(self._judge(init, self.run))
        if self.by_user:  # stopped by the user while this run was being made
            self._spawn(self.kill())

    async def _judge(self, init: Process, run: int) -> None:
        await init.exited.wait()
        exit = init.exit.to_wire()  # type: ignore[union-attr]
        self.exits.append({"run": run, **exit})
        if not self.closed:
            self.state.exited(self, exit, (exit["exited_at"] - init.started_at) / 1e9)

    async def backoff(self, delay: float) -> None:
        await asyncio.sleep(delay)  # the only point where the timer is cancelled (cancel)
        self.timer = None
        self.state.due(self)
        try:
            await self.new_run()
        except Exception as e:  # the container stays stopped with its last exit
            self.log.warning("restart %d failed: %s", self.count, e)
            if self.state.name == RESTARTING:
                self.move("failed")

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.move("cancel")

    def close(self) -> None:
        """The container is being deleted: no run after this one."""
        self.closed = True
        if self.state.name == BACKING_OFF:
            self.cancel()

    async def wait(self, current: Callable[[], Process], run: int, timeout: float) -> dict:
        """docker's wait: the exit of the run under way or, during a back-off, of the next run. With run (the
        number of a run the caller followed, 0: none), that run's exit once it is over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if run and (run < self.run or self.pending) and (exit := self.exit_of(run)) is not None:
                return {"exited": True, "exit": exit}
            if not self.pending:
                return await current().wait(max(0.0, deadline - loop.time()))
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return {"exited": False}

    def exit_of(self, run: int) -> dict | None:
        for e in self.exits:
            if e["run"] == run:
                return {k: v for k, v in e.items() if k != "run"}
        return None

    def describe(self) -> dict:
        return {"restart_policy": str(self.policy), "restart_count": self.count, "run": self.run,
                "restart_state": self.state.name, "last_exits": list(self.exits)}
