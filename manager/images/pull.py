"""The life of a transfer into the store (a pull or an import): one class per state, the legal moves in one table.

    fetching --fetched--> unpacking --stored--> done
        \\--fail--> failed   /--fail--> failed

fetching: skopeo writes an OCI layout under ingest/ (nothing of it is listed; a crash leaves only ingest/, emptied
when the store opens). unpacking: blobs checked and moved into blobs/, new layers unpacked, then the index written
(the commit point). A failure removes the ingest directory and collects what was moved but never listed.
"""

from __future__ import annotations

import os
import re
import time

from shimproto.errors import InvalidState

COPYING_BLOB = re.compile(r"^Copying blob (?:sha256:)?([0-9a-f]{12,64})", re.M)  # skopeo copy's line for each blob
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

    def layers(self, t: Transfer) -> tuple[int, int]:
        """(layers fetched, layers known)."""
        return t.layers, t.layers


class Fetching(State):
    name = FETCHING

    def progress(self, t: Transfer) -> int:
        """Bytes in the layout so far: its blobs and the files skopeo is still writing (in the layout's top)."""
        total = 0
        for dirpath, _dirs, files in os.walk(t.layout):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    pass
        return total

    def layers(self, t: Transfer) -> tuple[int, int]:
        """(done, known): skopeo names each blob it starts on a progress line; one is done when its file is in the
        layout's blobs (skopeo renames it there whole)."""
        try:
            with open(t.progress_path, errors="replace") as f:
                started = COPYING_BLOB.findall(f.read())
        except FileNotFoundError:
            return 0, 0
        try:
            have = os.listdir(os.path.join(t.layout, "blobs", "sha256"))
        except FileNotFoundError:
            have = []
        return sum(any(h.startswith(b) for h in have) for b in started), len(started)


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
        self.progress_path = os.path.join(os.path.dirname(layout), "progress")  # skopeo's stdout
        self.bytes = 0
        self.layers = 0
        self.started = time.monotonic()
        self.error = ""

    def move(self, event: str) -> None:
        nxt = TRANSITIONS.get((self.state.name, event))
        if nxt is None:
            raise InvalidState(f"transfer of {self.source}: cannot {event} while {self.state.name}")
        if self.state.name == FETCHING:
            self.bytes = self.state.progress(self)
            self.layers = self.state.layers(self)[1]
        self.state = STATES[nxt]

    def view(self) -> dict:
        done, known = self.state.layers(self)
        return {"source": self.source, "state": self.state.name, "bytes": self.state.progress(self),
                "layers_done": done, "layers": known, "seconds": round(time.monotonic() - self.started, 3),
                "error": self.error}
