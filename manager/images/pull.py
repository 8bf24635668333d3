"""The life of a transfer into the store (a pull or an import): one class per state, the legal moves in one table.

    fetching --fetched--> unpacking --stored--> done
        \\--fail--> failed   /--fail--> failed

fetching: skopeo writes an OCI layout under ingest/ (nothing of it is listed; a crash leaves only ingest/, emptied
when the store opens). unpacking: blobs checked and moved into blobs/, new layers unpacked, then the index written
(the commit point). A failure removes the ingest directory and collects what was moved but never listed.
"""

from __future__ import annotations

import os
import time

from shimproto.errors import InvalidState

FETCHING, UNPACKING, DONE, FAILED = "fetching", "unpacking", "done", "failed"

TRANSITIONS: dict[tuple[str, str], str] = {
    (FETCHING, "fetched"): UNPACKING,
    (FETCHING, "fail"): FAILED,
    (UNPACKING, "stored"): DONE,
    (UNPACKING, "fail"): FAILED,
}


class State:
    name = ""
    finished = False

    def progress(self, t: Transfer) -> int:
        """Bytes of the image in hand so far."""
        return t.bytes


class Fetching(State):
    name = FETCHING

    def progress(self, t: Transfer) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(os.path.join(t.layout, "blobs")):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    pass
        return total


class Unpacking(State):
    name = UNPACKING


class Done(State):
    name = DONE
    finished = True


class Failed(State):
    name = FAILED
    finished = True


STATES: dict[str, State] = {s.name: s for s in (Fetching(), Unpacking(), Done(), Failed())}


class Transfer:
    """One pull or import as the store sees it, for progress and for refusing a second one of the same source."""

    def __init__(self, source: str, layout: str) -> None:
        self.source = source
        self.layout = layout
        self.state: State = STATES[FETCHING]
        self.bytes = 0
        self.started = time.monotonic()
        self.error = ""

    def move(self, event: str) -> None:
        nxt = TRANSITIONS.get((self.state.name, event))
        if nxt is None:
            raise InvalidState(f"transfer of {self.source}: cannot {event} while {self.state.name}")
        if self.state.name == FETCHING:
            self.bytes = self.state.progress(self)
        self.state = STATES[nxt]

    def view(self) -> dict:
        return {"source": self.source, "state": self.state.name, "bytes": self.state.progress(self),
                "seconds": round(time.monotonic() - self.started, 3), "error": self.error}
