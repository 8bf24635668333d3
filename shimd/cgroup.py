"""Finding a container's memory cgroup and reading its OOM counter (cgroup v1 here; v2 where that is the layout)."""

from __future__ import annotations

import os


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
