"""MountFlags=slave: systemd gives every start of the manager a new mount namespace, slave of the host. Containers
made by one manager instance must be inspectable, stoppable and removable by the next, with no "device or resource
busy" and no mount left in any namespace. Shims mount in mount namespaces of their own, so this holds by design."""

from __future__ import annotations

import glob
import os

SLAVE = ["unshare", "--mount", "--propagation", "slave", "--"]


def mounts_mentioning(text: str) -> list[str]:
    """Every mount, in every mount namespace on the machine, whose line mentions text."""
    seen, out = set(), []
    for path in glob.glob("/proc/[0-9]*/mountinfo"):
        try:
            ns = os.readlink(path.replace("mountinfo", "ns/mnt"))
            if ns in seen:
                continue
            seen.add(ns)
            with open(path) as f:
                out += [f"{ns} {line.split()[4]}" for line in f if text in line]
        except OSError:
            continue
    return out


def test_containers_of_one_manager_namespace_are_managed_by_the_next(bare_env, shared_root):
    env = bare_env
    env.start_manager(wrap=SLAVE)
    first_ns = os.readlink(f"/proc/{env.proc.pid}/ns/mnt")
    # hold the first namespace open, so the next one cannot be given the same inode number
    hold = os.open(f"/proc/{env.proc.pid}/ns/mnt", os.O_RDONLY)
    a, b = env.name("a"), env.name("b")
    for id in (a, b):
        env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", "echo data > /file; sleep 100000")
    shim = env.inspect(a)["shim_pid"]
    # the writable root is mounted in the shim's own namespace only
    assert os.readlink(f"/proc/{shim}/ns/mnt") != first_ns
    assert any("overlay" in line for line in open(f"/proc/{shim}/mountinfo"))
    assert not [m for m in mounts_mentioning(env.base) if m.startswith(first_ns)]

    env.kill_manager()
    env.start_manager(wrap=SLAVE)
    assert os.readlink(f"/proc/{env.proc.pid}/ns/mnt") != first_ns
    os.close(hold)
    assert env.ok("exec", a, "cat", "/file").out == "data\n"
    env.ok("stop", "-t", "0", a)
    assert env.inspect(a)["status"] == "stopped"
    r = env.ctl("rm", a)
    assert r.rc == 0, r.err
    r = env.ctl("rm", "-f", b)
    assert r.rc == 0, r.err
    assert "busy" not in env.manager_log().lower()
    assert mounts_mentioning(env.base) == []
    assert env.container_ids_on_disk() == []
