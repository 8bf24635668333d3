"""Finding a container's memory cgroup, reading its OOM counter and watching for OOMs (cgroup v1 here; v2 where
that is the layout)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from . import sys as _sys


def _mounts() -> list[tuple[str, str, str]]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split()[:3]
            out.append((left.split()[4], fstype, opts))
    return out


def memory_dir(pid: int) -> tuple[str, int] | None:
    """(directory, cgroup version) of pid's memory cgroup, or None if it has none we can find."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    mounts = _mounts()
    for line in lines:
        hid, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            for mp, fstype, opts in mounts:
                if fstype == "cgroup" and "memory" in opts.split(","):
                    return os.path.join(mp, path.lstrip("/")), 1
    for line in lines:
        hid, ctrls, path = line.split(":", 2)
        if hid == "0":
            for mp, fstype, _ in mounts:
                if fstype == "cgroup2":
                    d = os.path.join(mp, path.lstrip("/"))
                    if os.path.exists(os.path.join(d, "memory.events")):
                        return d, 2
    return None


def oom_kills(memcg: tuple[str, int] | None) -> int:
    """How many processes the kernel OOM-killed in this cgroup so far (0 if unknown)."""
    if memcg is None:
        return 0
    d, version = memcg
    name = "memory.oom_control" if version == 1 else "memory.events"
    try:
        with open(os.path.join(d, name)) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


class OomWatch:
    """The OOM side of one run of a container: its memory cgroup's kill counter and, on cgroup v1, an eventfd the
    kernel signals on every OOM (cgroup v2 has no live event here; the exit-time counter still reports it)."""

    def __init__(self, pid: int, on_oom: Callable[[], None], log: logging.LoggerAdapter) -> None:
        self.memcg = memory_dir(pid)
        self._on_oom = on_oom
        self._fds: tuple[int, int] | None = None
        if self.memcg is None or self.memcg[1] != 1:
            return
        try:
            self._fds = _sys.oom_eventfd_v1(self.memcg[0])
        except OSError as e:
            log.warning("no OOM notifications: %s", e)
            return
        asyncio.get_running_loop().add_reader(self._fds[0], self._readable)

    def _readable(self) -> None:
        try:
            os.read(self._fds[0], 8)  # type: ignore[index]
        except BlockingIOError:
            return
        if self.memcg is not None and not os.path.isdir(self.memcg[0]):
            # the kernel signals the eventfd when the cgroup is removed too (runc delete): that is no OOM
            self.close()
            return
        self._on_oom()

    def kills(self) -> int:
        return oom_kills(self.memcg)

    def close(self) -> None:
        if self._fds is not None:
            asyncio.get_running_loop().remove_reader(self._fds[0])
            for fd in self._fds:
                os.close(fd)
            self._fds = None
