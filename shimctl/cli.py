"""The connection to the manager that every verb shares: its address, a client made on first use, and the list
of calls that may be sent again after a manager restart."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from shimproto.errors import ManagerNotRunning, ShimdError, Unavailable

if TYPE_CHECKING:
    from shimproto.client import Client

DEFAULT_ADDRESS = "/run/shimd/shimd.sock"
POLL = 20.0  # seconds a long-poll (wait, logs -f) may take on the manager's side
# calls that may be sent again after the manager was restarted under us (queries and cursor-based polls)
IDEMPOTENT = frozenset({"list", "inspect", "wait", "logs", "events", "stats", "top", "ping", "version", "info",
                        "images", "image_inspect", "export", "transfers"})


class Cli:
    def __init__(self, address: str) -> None:
        self.address = address
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self.connect()
        return self._client

    def connect(self) -> Client:
        """A connection of its own (stdin and resize are sent while the main one waits on a long-poll)."""
        try:
            os.stat(self.address)
            allowed = os.access(self.address, os.R_OK | os.W_OK)
        except FileNotFoundError:
            raise ManagerNotRunning(f"cannot connect to the shimd manager at {self.address}: no such socket "
                                    f"(is shimd-manager running?)") from None
        except PermissionError:
            allowed = False
        if not allowed:
            raise Unavailable(f"permission denied on the shimd manager socket {self.address}: run as root "
                              f"or as a member of the group set as socket_group in the manager's config")
        from shimproto.client import Client  # only verbs that talk to the manager pay for zmq

        return Client(self.address)

    def call(self, method: str, params: dict | None = None, timeout: float | None = None,
             via: Client | None = None) -> object:
        """One call on our main connection, or on `via` (one from connect())."""
        return (via or self.client).call(method, params, timeout, idempotent=method in IDEMPOTENT)


def for_each(ids: list[str], fn: Callable[[str], object]) -> int:
    """fn(id) for every id, printing the id when it worked and one line when it did not; 1 if any failed."""
    rc = 0
    for id in ids:
        try:
            fn(id)
            print(id, flush=True)
        except ShimdError as e:
            print(f"shimctl: {e.message}", file=sys.stderr)
            rc = 1
    return rc
