"""The single waiter: the only code in the shim that collects child exit statuses.

SIGCHLD wakes the event loop; `reap` collects every exited child with wait4(-1, WNOHANG) and hands each status to
(1) every open Subscription, which keeps exits of pids nobody knew yet (an init that dies before `runc create`
has even written its pid file), and (2) the future of a pid someone is watching. Everything the shim spawns goes
through `run`/`spawn` here, which subscribe before the fork. Exits nobody asked for are orphans reparented to us as
subreaper: reaping them is the whole point, so they are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from .. import sys as _sys

log = logging.getLogger("shimd.reaper")
SLOW = 2.0  # seconds: a runtime call slower than this is logged


class Subscription:
    """Collects every exit reaped while it is open."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper
        self.exits: dict[int, int] = {}
        self._wanted: dict[int, asyncio.Future] = {}

    def _deliver(self, pid: int, status: int) -> None:
        self.exits[pid] = status
        fut = self._wanted.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_result(status)

    async def wait(self, pid: int) -> int:
        """Wait status of pid, which must have started while this subscription was open."""
        if pid in self.exits:
            return self.exits[pid]
        fut = asyncio.get_running_loop().create_future()
        self._wanted[pid] = fut
        return await fut

    def __enter__(self) -> Subscription:
        self._reaper._subs.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._reaper._subs.discard(self)
        for fut in self._wanted.values():
            fut.cancel()


class Reaper:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._watches: dict[int, asyncio.Future] = {}
        self.orphans_reaped = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # anything that exited before the handler was in place

    def reap(self) -> None:
        for pid, status in _sys.reap_all():
            delivered = False
            for sub in list(self._subs):
                sub._deliver(pid, status)
                delivered = True
            fut = self._watches.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(status)
                delivered = True
            if not delivered:
                self.orphans_reaped += 1
                log.debug("reaped orphan pid %d status %d", pid, status)

    def subscribe(self) -> Subscription:
        return Subscription(self)

    def watch(self, pid: int, sub: Subscription | None = None) -> asyncio.Future:
        """Future of pid's wait status. Pass the subscription that was open when pid started, so an exit that
        was reaped before this call is not lost."""
        fut = asyncio.get_running_loop().create_future()
        if sub is not None and pid in sub.exits:
            fut.set_result(sub.exits[pid])
        else:
            self._watches[pid] = fut
        return fut

    def spawn(self, sub: Subscription, argv: list[str], *, stdin: int | None = None, stdout: int | None = None,
              stderr: int | None = None, env: dict[str, str] | None = None, group: bool = False) -> int:
        """Start argv under an open subscription; the caller then awaits sub.wait(pid)."""
        return _sys.spawn(argv, stdin, stdout, stderr, env, group)

    async def run(self, argv: list[str], *, stdin: int | None = None, stdout: int | None = None,
                  stderr: int | None = None, env: dict[str, str] | None = None, group: bool = False) -> int:
        """The runtime's Monitor: run argv to completion, return its exit code (128 + signal for a signal).

        With group, argv runs in a process group of its own, and a wait cut short (the task cancelled: the shim
        shuts down mid-create) kills the whole group and waits until it is gone: a CNI plugin killed alone left its
        iptables child to add the masquerade rule after the DEL that was to undo it (chaos seed 2007543241)."""
        t0 = time.monotonic()
        with self.subscribe() as sub:
            pid = self.spawn(sub, argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, group=group)
            try:
                status = await sub.wait(pid)
            except BaseException:
                if group:
                    await _end_group(pid)
                raise
        took = time.monotonic() - t0
        if took > SLOW:
            log.warning("slow: %s took %.1fs", " ".join(a for a in argv if not a.startswith("/")), took)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code


async def _end_group(pgid: int, grace: float = 5.0) -> None:
    """SIGKILL process group pgid and wait (at most grace) until none of it is left: its members are ours or,
    orphaned, our subreaper's, so the reaper reaps each; a zombie still counts as a member until then."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _sys.kill_group(pgid, signal.SIGKILL):
            return
        await asyncio.sleep(0.01)
    log.warning("process group %d outlived SIGKILL for %.0fs", pgid, grace)
