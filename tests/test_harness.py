"""The leak checks must be able to fail: for each kind of leak, make the system leak exactly that and see the
check (tests/leaks.py, run as the per-test teardown runs it: before any cleanup) fail and name it.

Where the real code can make the leak, the bug is planted in it (SHIMD_PLANT, shimproto/plant.py); where this
design cannot make it (a mount outlives the namespace that holds it only while something holds that namespace;
container processes die with their pid namespace), the leftover is planted directly, in the shape a bug would
leave it. Each planted env is then cleaned by the same teardown, which must leave nothing for the session check.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator

import psutil

from tests import conftest, leaks
from tests.conftest import session_leftovers
from tests.harness import PY, REPO, Env, new_env, remove_base, wait_for


@contextlib.contextmanager
def planted_env(plant: str = "") -> Iterator[Env]:
    """A manager of its own (with SHIMD_PLANT=plant); torn down by the teardown's cleanup, whose findings are the
    planted leak itself, and then shown to have left nothing at all."""
    e = new_env()
    conftest._bases.append(e.base)
    try:
        e.start_manager(env={"SHIMD_PLANT": plant} if plant else None)
        yield e
    finally:
        e.cleanup()
        conftest._ids[e.base] = e.ids
        files = ("runtime state", "shim state", "container files")  # removed with the base dir

        def survivors() -> list[str]:
            return [f for f in leaks.left_behind(e.base, leaks.Listing(), e.since, e.tag) if not f.startswith(files)]

        with contextlib.suppress(AssertionError):  # a killed process the subreaper has yet to reap
            wait_for(lambda: not survivors(), 5, "the purge to finish")
        assert survivors() == []
        remove_base(e.base)


def detached(*argv: str, env: dict | None = None) -> int:
    """Start argv with its parent chain cut (its parent exits, the subreaper adopts it); returns its pid."""
    out = subprocess.run(["sh", "-c", '"$@" >/dev/null 2>&1 </dev/null & echo $!', "sh", *argv],
                         capture_output=True, text=True, check=True, env=env)
    return int(out.stdout)


def test_a_test_that_leaves_listed_containers_leaves_nothing_the_check_calls_a_leak():
    with planted_env() as e:
        e.ok("run", "-d", "--name", e.name("up"), "busybox", "sleep", "1000")
        e.ok("run", "--name", e.name("done"), "busybox", "true")
        e.ok("run", "--name", e.name("gone"), "busybox", "true")
        e.ok("rm", e.name("gone"))
        e.ok("run", "--rm", "busybox", "true")
        assert e.left_behind() == []


def test_a_shim_the_manager_does_not_list_is_named():
    with planted_env() as e:
        e.ok("run", "-d", "--name", e.name("up"), "busybox", "sleep", "1000")
        stray = e.name("stray")
        state = os.path.join(e.state, "shims", stray)
        os.makedirs(state)
        r, w = os.pipe()
        subprocess.run([PY, "-m", "shimd", "start", "--id", stray, "--state", state, "--runtime-root",
                        os.path.join(e.state, "runc"), "--ready-fd", str(w)], pass_fds=(w,), check=True, cwd=REPO)
        os.close(w)
        with os.fdopen(r) as f:
            pid = int(f.readline().split()[1])
        assert pid not in [p.pid for p in psutil.Process().children(recursive=True)]  # adopted by the subreaper
        found = e.left_behind(settle=0.5)
        assert any(f.startswith(f"shim left: {pid} ") and stray in f for f in found), found
        assert not [f for f in found if e.name("up") in f], found


def test_a_zombie_under_a_shim_is_named_though_the_shim_is_not_below_pytest():
    with planted_env() as e:
        id = e.name("c")
        e.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
        e.ok("exec", "-d", id, "sleep", "1000")
        shim = e.inspect(id)["shim_pid"]
        assert shim not in [p.pid for p in psutil.Process().children(recursive=True)]
        child = wait_for(lambda: [x["pid"] for x in e.inspect(id)["execs"] if x["pid"]], 10, "the exec's pid")[0]
        assert psutil.Process(child).ppid() == shim
        os.kill(shim, signal.SIGSTOP)  # a hung shim does not reap
        try:
            os.kill(child, signal.SIGKILL)
            wait_for(lambda: psutil.Process(child).status() == psutil.STATUS_ZOMBIE, 10, "the exec to be a zombie")
            found = e.left_behind(settle=0.5)
            assert any(f.startswith(f"zombie {child} ") and f"child of {shim} " in f for f in found), found
        finally:
            os.kill(shim, signal.SIGCONT)


def test_a_shim_template_that_outlives_its_manager_is_named():
    with planted_env() as e:
        dead = e.proc.pid
        e.kill_manager()
        # the shape of a template that missed both its death signal and its socket's EOF
        fake = subprocess.Popen([PY, "-c", "import time; time.sleep(1000)", "-m", "shimd", "template",
                                 "--control-fd", "9", "--parent", str(dead)])
        try:
            found = e.left_behind(settle=0.5)
            assert any(f.startswith(f"process left: {fake.pid} ") and f"manager {dead}, which is gone" in f
                       for f in found), found
        finally:
            fake.kill()
            fake.wait()


NO_REAPER = """
import ctypes, json, os, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, and never wait
argv = json.loads(os.environ["WRAPPED"])
os.posix_spawn(argv[0], argv, os.environ)
time.sleep(1000)
"""


def test_a_zombie_shim_under_a_subreaper_that_does_not_reap_is_named():
    with planted_env() as e:
        e.kill_manager(signal.SIGTERM)
        cmd = [PY, "-m", "manager", "--root", e.root, "--state", e.state]
        wrapper = subprocess.Popen([PY, "-c", NO_REAPER], env={**os.environ, "WRAPPED": json.dumps(cmd)}, cwd=REPO,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(e._serving, 30, "the wrapped manager to serve")
            id = e.name("c")
            e.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
            shim = e.inspect(id)["shim_pid"]
            assert psutil.Process(shim).ppid() == wrapper.pid  # adopted by the subreaper, not pytest's child
            e.ok("rm", "-f", id)
            wait_for(lambda: psutil.Process(shim).status() == psutil.STATUS_ZOMBIE, 10, "the shim to be a zombie")
            found = e.left_behind(settle=0.5)
            assert any(f.startswith(f"zombie {shim} ") for f in found), found
        finally:
            wrapper.kill()
            wrapper.wait()


def test_mounts_left_are_named_in_the_host_namespace_and_in_another_one():
    with planted_env() as e:
        host = os.path.join(e.state, "shims", e.name("gone"), "bundle", "rootfs")
        other = os.path.join(e.root, "containers", e.name("other"), "fs")
        os.makedirs(host)
        os.makedirs(other)
        subprocess.run(["mount", "-t", "tmpfs", "none", host], check=True)
        # a namespace of its own, as a slave-mode manager's or a shim's; the holder does not name the base dir
        holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                   'mount -t tmpfs none "$D" && echo ok && exec sleep 1000'],
                                  env={**os.environ, "D": other}, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "ok\n"
            assert other not in open("/proc/self/mountinfo").read()  # invisible to a look at our namespace
            found = e.left_behind(settle=0.5)
            assert f"mount left: {host}" in found, found
            assert any(f.startswith(f"mount left: {other} (mount namespace ") and str(holder.pid) in f
                       for f in found), found
        finally:
            holder.kill()
            holder.wait()
            subprocess.run(["umount", host], check=True)


def test_cgroups_left_in_every_hierarchy_are_named_for_an_unnamed_container():
    with planted_env() as e:
        e.ok("run", "--rm", "busybox", "true")
        unnamed = [id for id in leaks.container_ids(e.base) if not id.startswith(e.tag)]
        assert len(unnamed) == 1, unnamed  # from the manager's event log: the container itself is gone
        hierarchies = leaks.hierarchies()
        mounted = {os.path.basename(h) for h in hierarchies}
        assert {"cpuset", "cpuacct", "blkio", "memory", "pids"} <= mounted or "cgroup.controllers" in os.listdir(
            leaks.CGROUP_ROOT), mounted
        for h in hierarchies:  # what a runtime that does not clean up leaves, in v1 controllers and v2 alike
            os.makedirs(os.path.join(h, "shimd", unnamed[0]))  # under the default manager's parent, /shimd
        found = e.left_behind(settle=0.5)
        for h in hierarchies:
            assert f"cgroup left: {h}/shimd/{unnamed[0]}" in found, (h, found)


def test_runtime_state_and_cgroups_left_by_a_shim_that_skips_runc_delete_are_named():
    with planted_env("leave-runtime-state") as e:
        id = e.name("c")
        e.ok("run", "--name", id, "busybox", "true")
        e.ok("rm", id)
        found = e.left_behind(settle=0.5)
        assert f"runtime state left: {e.state}/runc/{id}" in found, found
        for h in leaks.hierarchies():  # under this manager's own parent (/shimd-<hash of its root>)
            assert [f for f in found if f.startswith(f"cgroup left: {h}/shimd") and f.endswith(f"/{id}")], (h, found)


def test_an_orphaned_container_process_is_found_by_its_cgroup_alone():
    with planted_env() as e:
        id = e.name("c")
        e.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
        e.ok("rm", "-f", id)
        orphan = detached("sleep", "1000")
        try:
            joined = []
            for h in leaks.hierarchies():  # a process that escaped its container's pid namespace, not its cgroups
                d = os.path.join(h, "shimd", id)
                os.makedirs(d, exist_ok=True)
                with contextlib.suppress(OSError), open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(orphan))
                    joined.append(h)
            assert joined
            table = leaks.proc_table()
            chain = [table[a].cmd for a in leaks.ancestors(table, orphan) if a in table]
            assert not [c for c in chain if e.base in c or "shimd" in c], chain  # no parent chain leads to us
            found = e.left_behind(settle=0.5)
            assert any(f.startswith(f"container process left: {orphan} sleep 1000 (in cgroup /shimd/{id}")
                       for f in found), found
        finally:
            with contextlib.suppress(OSError):
                os.kill(orphan, signal.SIGKILL)


def test_the_session_check_names_leftovers_of_this_sessions_tests_only():
    e, other = new_env(), new_env()
    conftest._bases.append(e.base)
    d = os.path.join(e.state, "shims", "x", "bundle", "rootfs")
    os.makedirs(d)
    subprocess.run(["mount", "-t", "tmpfs", "none", d], check=True)
    stray = subprocess.Popen(["sh", "-c", "sleep 60; true", e.base], start_new_session=True)
    foreign = subprocess.Popen(["sh", "-c", "sleep 60; true", other.base], start_new_session=True)
    gone = f"{e.tag}-gone"
    conftest._ids[e.base] = {gone}
    cgroups = [os.path.join(h, "shimd", gone) for h in leaks.hierarchies()]
    for c in cgroups:
        os.makedirs(c)
    zombie = subprocess.Popen(["true"])
    try:
        wait_for(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, 5, "the planted zombie")
        found = session_leftovers()
        assert any(str(stray.pid) in f for f in found) and any(d in f for f in found), found
        assert not [f for f in found if str(foreign.pid) in f or other.base in f], found
        assert all(any(c in f for f in found) for c in cgroups), found
        assert any(f.startswith(f"zombie {zombie.pid} ") for f in found), found
    finally:
        subprocess.run(["umount", d], check=True)
        for p in (stray, foreign):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        zombie.wait()
        for c in cgroups:
            os.rmdir(c)
        conftest._bases.remove(e.base)
        conftest._ids.pop(e.base)
    mine = (e.base, gone, f"zombie {zombie.pid} ", f"{stray.pid} ")
    assert not [f for f in session_leftovers() if any(m in f for m in mine)]
    remove_base(e.base)
    remove_base(other.base)
