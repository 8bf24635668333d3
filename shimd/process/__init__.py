"""Process states: one class per state, each implementing only what that state allows; transitions in one table.

The base class refuses everything with a typed InvalidState that names the operation and the state, so "cannot
start a stopped container" is said in exactly one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shimproto.errors import InvalidState
from shimproto.model import CREATED, PAUSED, RUNNING, STOPPED

if TYPE_CHECKING:
    from ..container import Container

DELETED = "deleted"

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
}


def next_state(state: str, event: str) -> str:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidState(f"cannot {event} a {state} container") from None


class State:
    name = ""

    def _refuse(self, op: str) -> InvalidState:
        return InvalidState(f"cannot {op} a {self.name} container")

    async def start(self, c: Container) -> None:
        raise self._refuse("start")

    async def kill(self, c: Container, sig: int, all: bool) -> None:
        raise self._refuse("kill")

    async def delete(self, c: Container) -> None:
        raise self._refuse("delete")


class Created(State):
    name = CREATED

    async def start(self, c: Container) -> None:
        await c.do_start()

    async def kill(self, c: Container, sig: int, all: bool) -> None:
        await c.do_kill(sig, all)

    async def delete(self, c: Container) -> None:
        await c.do_delete(force=True)


class Running(State):
    name = RUNNING

    async def kill(self, c: Container, sig: int, all: bool) -> None:
        await c.do_kill(sig, all)


class Paused(State):
    name = PAUSED

    async def kill(self, c: Container, sig: int, all: bool) -> None:
        await c.do_kill(sig, all)


class Stopped(State):
    name = STOPPED

    async def delete(self, c: Container) -> None:
        await c.do_delete(force=False)


class Deleted(State):
    name = DELETED


STATES: dict[str, State] = {s.name: s for s in (Created(), Running(), Paused(), Stopped(), Deleted())}
