"""The warm template: a process that has imported everything a shim needs and forks a shim per request.

    python -m shimd template --control-fd N --parent PID

The manager starts it with one end of a SOCK_SEQPACKET socketpair as --control-fd. The template imports the shim's
modules (zmq, msgpack, asyncio, python-daemon, runtime, the shim itself), freezes what it holds out of the garbage
collector's reach (gc.freeze: the collector would otherwise write to every object's header in each child and
unshare the pages), writes "ready" and then serves requests: one datagram of JSON
`{"id", "state", "runtime", "runtime_root", "debug", "not_after"}` carrying the write end of the manager's ready pipe
(SCM_RIGHTS). For each it forks a child that becomes a shim exactly as a cold `python -m shimd start` does: its
command line is rewritten to the cold one (the manager, `shimd delete` and the tests find shims by it), then
`shimd.__main__.start` (handed in, not imported: importing it again as shimd.__main__ cost 0.7 MiB per shim)
daemonizes it (python-daemon: fork, setsid, fork; every other fd closed), and `serve` makes it subreaper, gives
it its own mount namespace, binds its socket and reports "ok <pid>" on the pipe.

Spares: when no request has come for SPARE_AFTER, the template makes one spare ahead (Spare below): a child that
has already detached, become subreaper and taken its own mount namespace, and waits for a request. The next request
goes to it (the same datagram and pipe, over the spare's own socketpair) and it goes on exactly as a forked shim
would from there (`shimd.__main__.spare`), which saves the fork and the detaching (about 11 ms of each start). A
spare that is gone when a request comes costs nothing but the usual fork. An idle spare exits when its link to
the template closes, so it never outlives its template.

What the template never does: create a thread, a zmq context or an event loop (a fork would copy them half-made),
hold a socket or lock of the manager (it gets only the socketpair and, briefly, each ready pipe), wait on a
process (SIGCHLD is ignored, so the kernel reaps each first child as it exits after its own fork: no zombie, and
the shim package keeps its single waiter), or outlive its manager (parent-death signal SIGKILL). Closing the
control socket stops it. Whatever it is doing when killed, a launch either completes (the child holds the pipe)
or the manager sees the pipe's EOF with no report and starts that shim cold.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable

from shimproto.model import check_id
from shimproto.version import TEMPLATE_CANNOT_RENAME

from . import sys as _sys

MAX_REQUEST = 64 * 1024
SPARE_AFTER = 0.05  # seconds without a request before a new spare is made (a burst is forked directly)


def preload() -> None:
    """Import what a shim imports, so a forked child finds it done (and shares those pages with its siblings)."""
    import asyncio  # noqa: F401
    import asyncio.unix_events  # noqa: F401
    import logging  # noqa: F401

    import daemon  # noqa: F401
    import msgpack  # noqa: F401
    import psutil  # noqa: F401
    import zmq  # noqa: F401
    import zmq.asyncio  # noqa: F401

    import runtime.errors  # noqa: F401
    import runtime.opts  # noqa: F401
    import runtime.runc  # noqa: F401
    import shimproto.rpc  # noqa: F401
    import shimproto.spec  # noqa: F401

    from . import cgroup, container, etcfiles, keys, reaper, service, users  # noqa: F401
    from .io import console, fifo, log, stdio  # noqa: F401
    from .process import context, process  # noqa: F401


def _cold_argv(req: dict, ready_fd: int) -> list[str]:
    argv = [sys.executable, "-m", "shimd", "start", "--id", req["id"], "--state", req["state"],
            "--runtime", req["runtime"]]
    if req.get("runtime_root"):
        argv += ["--runtime-root", req["runtime_root"]]
    for path in req.get("shared") or ():
        argv += ["--shared", path]
    argv += ["--ready-fd", str(ready_fd)]
    return argv + (["--debug"] if req.get("debug") else [])


def take_cold_line(req: dict, ready_fd: int) -> None:
    """Take the command line a cold `python -m shimd start` of req would have (the manager, `shimd delete` and the
    tests find shims by it)."""
    check_id(req["id"])
    argv = _cold_argv(req, ready_fd)
    _sys.set_cmdline(argv)
    sys.argv = [sys.argv[0], *argv[3:]]  # what `python -m shimd start ...` has: __main__.py's path, then args


def _become_shim(ctl: socket.socket, req: dict, ready_fd: int, start: Callable[[dict, int], int]) -> None:
    """In the forked child: turn into what `python -m shimd start` would be, then run its code. Never returns."""
    code = 1
    try:
        ctl.close()
        _child_defaults()
        take_cold_line(req, ready_fd)
        code = start(req, ready_fd)
    except BaseException as e:  # noqa: B036 - the child must never return into the template's loop
        try:
            os.write(ready_fd, f"error template child: {type(e).__name__}: {e}\n".encode())
        except BaseException:  # noqa: B036
            pass
    finally:
        os._exit(code)


class Spare:
    """A shim made ahead of its request: forked, detached, subreaper, in its own mount namespace, and waiting on
    its end of a socketpair for a request and its ready pipe (what `shimd.__main__.spare` does). Handing it one
    saves the fork and the detaching from a start. The template keeps the other end: closing it (the template
    exits or dies) makes an idle spare exit."""

    def __init__(self, link: socket.socket, pid: int) -> None:
        self.link = link
        self.pid = pid

    @classmethod
    def make(cls, ctl: socket.socket, parent: int, become: Callable[[socket.socket], int]) -> Spare | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = _sys.fork()
        except OSError:
            ours.close(), theirs.close()  # type: ignore[func-returns-value]
            return None
        if pid == 0:
            code = 1
            try:
                ctl.close()
                ours.close()
                _child_defaults()
                # found as its manager's (tests, leak checks) until it becomes a shim and takes a shim's line
                _sys.set_cmdline([sys.executable, "-m", "shimd", "template", "--spare", "--parent", str(parent)])
                code = become(theirs)
            finally:
                os._exit(code)
        theirs.close()
        return cls(ours, pid)

    def hand(self, msg: bytes, ready_fd: int) -> bool:
        """Give the spare its request; False if it is gone (the caller forks a shim instead)."""
        try:
            socket.send_fds(self.link, [msg], [ready_fd])
            return True
        except OSError:
            return False
        finally:
            self.link.close()


def receive(link: socket.socket) -> tuple[dict, int] | None:
    """In a spare: wait for (request, ready fd) from the template; None when the template closed our link."""
    try:
        msg, fds, _, _ = socket.recv_fds(link, MAX_REQUEST, 1)
    except OSError:
        return None
    finally:
        link.close()
    if not msg or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(msg), fds[0]


def _child_defaults() -> None:
    """What a child of the template restores: SIGCHLD delivered (the shim waits for its processes), SIGINT raises."""
    _sys.default_child_exits()
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _waiting(ctl: socket.socket, timeout: float) -> bool:
    return bool(select.select([ctl], [], [], timeout)[0])


def serve(ctl_fd: int, parent: int, start: Callable[[dict, int], int], memory_merge: bool = False,
          spare: Callable[[socket.socket], int] | None = None) -> int:
    """Serve fork requests on ctl_fd until it closes; start(request, ready_fd) is the cold shim's start, handed in
    by shimd/__main__.py (the module `python -m shimd` runs: importing it again here would load a second copy).

    spare(link): what a spare shim runs (shimd.__main__.spare); None makes no spares, every shim is forked on its
    request. memory_merge: offer our pages, and so every forked shim's, to the kernel's samepage merging before
    importing anything. Most of a shim's private memory is copies of our pages that it wrote a reference count on
    and then put back as they were; ksmd merges those back. "ready" says it worked, "ready <reason>" why not."""
    _sys.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the manager died before the death signal was armed
        return 0
    ctl = socket.socket(fileno=ctl_fd)
    try:
        _sys.set_cmdline([sys.executable, "-m", "shimd", "template", "--control-fd", str(ctl_fd),
                          "--parent", str(parent)])
    except OSError as e:
        ctl.send(f"error {e}".encode())
        return TEMPLATE_CANNOT_RENAME
    ready = b"ready"
    if memory_merge:
        try:
            _sys.set_memory_merge()
        except OSError as e:
            ready = f"ready {e}".encode()
    preload()
    _sys.ignore_child_exits()
    gc.collect()
    gc.freeze()
    ctl.send(ready)
    ready_spare: Spare | None = None
    while True:
        if spare is not None and ready_spare is None and not _waiting(ctl, SPARE_AFTER):
            ready_spare = Spare.make(ctl, parent, spare)
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, MAX_REQUEST, 4)
        except ConnectionError:
            return 0
        if not msg:  # the manager closed its end: stop (an idle spare sees its link close and exits)
            for fd in fds:
                os.close(fd)
            return 0
        try:
            req = json.loads(msg)
            ok = isinstance(req, dict) and len(fds) == 1 and all(isinstance(req.get(k), str)
                                                                 for k in ("id", "state", "runtime"))
            # a request that waited past its deadline (we were stopped or starved) is one the manager has given
            # up on and rolled back: a shim forked now would serve a removed container
            ok = ok and time.monotonic() < float(req.get("not_after", "inf"))
        except (ValueError, TypeError):
            ok = False
        handed = False
        if ok and ready_spare is not None:
            handed = ready_spare.hand(msg, fds[0])
            ready_spare = None
        try:
            if ok and not handed and _sys.fork() == 0:
                _become_shim(ctl, req, fds[0], start)
        except OSError:  # EAGAIN, ENOMEM: the pipe's EOF tells the manager, which starts this one cold
            pass
        for fd in fds:  # ours closes at once: only the child holds the pipe now, so its death reads as EOF
            os.close(fd)
