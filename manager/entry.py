"""A container as the manager sees it: one class per state of its entry, the legal moves in one table.

The entry's state says who owns the container's shim at this moment, which is what the manager's code used to
work out from four flags. It is not the container's status (created, running, ...): that is what the shim's
events say, kept by the EventLog, and shown as `status`.

    restoring  read from disk by a starting manager; its shim not yet looked at
    creating   a create is under way and owns the shim (its death is the create's to handle)
    attached   the shim serves the container; its death makes the entry lost
    lost       the shim died; the exit it recorded (or "shim-lost") is settled
    deleting   a delete is under way and owns the shim
    relaunching  its shim went with the host (a reboot) and its restart policy has it run again: a new shim is
               being made and owns it (manager/relaunch.py)
    removed    gone for good: no longer in the registry's table
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shimproto.errors import InvalidState, NotFound, Unavailable
from shimproto.version import PROTOCOL

if TYPE_CHECKING:
    from shimproto.rpc import AsyncClient

    from .store import Meta

RESTORING = "restoring"
CREATING = "creating"
ATTACHED = "attached"
LOST = "lost"
DELETING = "deleting"
REMOVED = "removed"
RELAUNCHING = "relaunching"

# (state, event) -> next state. Anything not listed is illegal.
TRANSITIONS: dict[tuple[str, str], str] = {
    (RESTORING, "attach"): ATTACHED,
    (RESTORING, "lose"): LOST,
    (RESTORING, "delete"): DELETING,  # a delete intent found on disk: finish it
    (RESTORING, "roll_back"): REMOVED,  # a create intent found on disk: undo it
    (CREATING, "created"): ATTACHED,
    (CREATING, "roll_back"): REMOVED,
    (ATTACHED, "lose"): LOST,
    (ATTACHED, "delete"): DELETING,
    (LOST, "delete"): DELETING,
    (LOST, "relaunch"): RELAUNCHING,
    (RELAUNCHING, "created"): ATTACHED,
    (RELAUNCHING, "lose"): LOST,  # the new shim could not run it: lost as before, with its last exit
    (DELETING, "delete_failed"): ATTACHED,  # the shim refused and still serves the container
    (DELETING, "removed"): REMOVED,
}


class EntryState:
    name = ""
    listed = True  # found by id and listed
    reachable = False  # its shim may be called
    watches_shim = False  # a shim death makes the entry lost (else an operation under way handles it)

    def check_call(self, e: Entry) -> None:
        if not self.reachable:
            raise Unavailable(f"the shim of {e.id} is gone")

    def check_delete(self, e: Entry) -> None:
        raise InvalidState(f"container {e.id} is {self.name}: cannot delete it now")


class Restoring(EntryState):
    name = RESTORING
    reachable = True


class Creating(EntryState):
    name = CREATING
    listed = False
    reachable = True


class Attached(EntryState):
    name = ATTACHED
    reachable = True
    watches_shim = True

    def check_delete(self, e: Entry) -> None:
        pass


class Lost(EntryState):
    name = LOST

    def check_delete(self, e: Entry) -> None:
        pass


class Deleting(EntryState):
    name = DELETING
    reachable = True


class Relaunching(EntryState):
    name = RELAUNCHING
    reachable = True


class Removed(EntryState):
    name = REMOVED
    listed = False


STATES: dict[str, EntryState] = {s.name: s for s in (Restoring(), Creating(), Attached(), Lost(), Deleting(),
                                                     Relaunching(), Removed())}


@dataclass
class Entry:
    meta: Meta
    state: EntryState = field(default_factory=lambda: STATES[RESTORING])
    client: AsyncClient | None = None
    shim_pid: int = 0
    pidfd: int = -1
    status: dict = field(default_factory=lambda: {"status": "unknown"})  # the EventLog's view (read only here)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pump: asyncio.Task | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set once a lost shim's exit is known
    shim_gone: asyncio.Event = field(default_factory=asyncio.Event)  # set when the connected shim's pidfd fires
    protocol: int = PROTOCOL  # what its shim speaks (an older shim outlives a manager upgrade)

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def exit(self) -> dict | None:
        return self.status.get("exit")

    @property
    def lost(self) -> bool:
        return self.state.name == LOST

    @property
    def removed(self) -> bool:
        return self.state.name == REMOVED

    def move(self, event: str) -> None:
        try:
            self.state = STATES[TRANSITIONS[(self.state.name, event)]]
        except KeyError:
            raise InvalidState(f"container {self.id}: cannot {event.replace('_', ' ')} while {self.state.name}") \
                from None

    def check_listed(self) -> Entry:
        if not self.state.listed:
            raise NotFound(f"no such container: {self.id}")
        return self
