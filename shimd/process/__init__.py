"""Process states: one class per state, each implementing only what that state allows; transitions in one table.

The base class refuses everything with a typed InvalidState naming the operation, the state and the kind of
process ("cannot pause a stopped container", "cannot kill a stopped exec process"), in exactly one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from shimproto.errors import InvalidState
from shimproto.model import CREATED, DELETED, PAUSED, RUNNING, STOPPED


class Process(Protocol):
    """What a state needs of a process (shimd.process.process implements it; no import back to it here)."""

    noun: str

    async def do_start(self) -> None: ...
    async def do_kill(self, sig: int, all: bool) -> None: ...
    async def do_pause(self) -> None: ...
    async def do_resume(self) -> None: ...
    async def do_delete(self) -> None: ...
    async def do_restart(self, next_run: Callable[[], Awaitable[None]]) -> None: ...

# (state, event) -> next state. Anything not listed is illegal.
TRANSITIONS: dict[tuple[str, str], str] = {
    (CREATED, "start"): RUNNING,
    (CREATED, "exit"): STOPPED,
    (CREATED, "delete"): DELETED,
    (RUNNING, "exit"): STOPPED,
    (RUNNING, "pause"): PAUSED,
    (PAUSED, "resume"): RUNNING,
    (PAUSED, "exit"): STOPPED,
    (STOPPED, "delete"): DELETED,
    (STOPPED, "restart"): DELETED,  # this run is over once the next one, a new process, was created
}


def next_state(state: str, event: str, noun: str = "container") -> str:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidState(f"cannot {event} a {state} {noun}") from None


class State:
    name = ""

    def _refuse(self, p: Process, op: str) -> InvalidState:
        return InvalidState(f"cannot {op} a {self.name} {p.noun}")

    async def start(self, p: Process) -> None:
        raise self._refuse(p, "start")

    async def kill(self, p: Process, sig: int, all: bool) -> None:
        raise self._refuse(p, "kill")

    async def pause(self, p: Process) -> None:
        raise self._refuse(p, "pause")

    async def resume(self, p: Process) -> None:
        raise self._refuse(p, "resume")

    async def delete(self, p: Process) -> None:
        raise self._refuse(p, "delete")

    async def restart(self, p: Process, next_run: Callable[[], Awaitable[None]]) -> None:
        raise self._refuse(p, "restart")

    def check_exec(self, p: Process) -> None:
        """May a new exec process join this (init) process's container?"""
        raise InvalidState(f"cannot exec in a {self.name} container")

    def check_io(self, p: Process, op: str) -> None:
        raise self._refuse(p, op)


class Created(State):
    name = CREATED

    async def start(self, p: Process) -> None:
        await p.do_start()

    async def kill(self, p: Process, sig: int, all: bool) -> None:
        await p.do_kill(sig, all)

    async def delete(self, p: Process) -> None:
        await p.do_delete()

    def check_io(self, p: Process, op: str) -> None:
        pass


class Running(State):
    name = RUNNING

    async def kill(self, p: Process, sig: int, all: bool) -> None:
        await p.do_kill(sig, all)

    async def pause(self, p: Process) -> None:
        await p.do_pause()

    def check_exec(self, p: Process) -> None:
        pass

    def check_io(self, p: Process, op: str) -> None:
        pass


class Paused(State):
    name = PAUSED

    async def kill(self, p: Process, sig: int, all: bool) -> None:
        await p.do_kill(sig, all)

    async def resume(self, p: Process) -> None:
        await p.do_resume()

    def check_io(self, p: Process, op: str) -> None:
        pass


class Stopped(State):
    name = STOPPED

    async def delete(self, p: Process) -> None:
        await p.do_delete()

    async def restart(self, p: Process, next_run: Callable[[], Awaitable[None]]) -> None:
        await p.do_restart(next_run)


class Deleted(State):
    name = DELETED


STATES: dict[str, State] = {s.name: s for s in (Created(), Running(), Paused(), Stopped(), Deleted())}
