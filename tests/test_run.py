"""Running containers end to end: shimctl -> manager -> shim -> runc, with the built-in busybox image."""

from __future__ import annotations

import os
import shutil

import psutil

from tests.harness import wait_for, zombies_of


def test_run_streams_output_and_exits_with_the_container_code(env):
    r = env.ctl("run", "--name", env.name("a"), "busybox", "sh", "-c", "echo hello; echo oops >&2; exit 3")
    assert r.rc == 3
    assert r.out == "hello\n"
    assert r.err == "oops\n"
    info = env.inspect(env.name("a"))
    assert info["status"] == "stopped" and info["exit_code"] == 3 and info["exited_at"]


def test_run_zero_exit_and_output_without_trailing_newline(env):
    r = env.ctl("run", "--rm", "busybox", "printf", "no-newline")
    assert (r.rc, r.out) == (0, "no-newline")


def test_detached_run_prints_id_and_container_runs_in_its_shim(env):
    id = env.name("sleeper")
    r = env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    assert r.out.strip() == id
    info = env.inspect(id)
    assert info["status"] == "running"
    shim = psutil.Process(info["shim_pid"])
    assert "--id" in shim.cmdline() and id in shim.cmdline() and env.state in " ".join(shim.cmdline())
    init = psutil.Process(info["pid"])
    assert init.ppid() == shim.pid  # the shim is subreaper: it adopted the init from runc
    assert shim.ppid() != env.proc.pid  # detached: not a child of the manager
    assert os.getsid(shim.pid) != os.getsid(env.proc.pid)  # a session of its own
    ps = env.ok("ps", "--format", "json").json()
    assert [c["id"] for c in ps] == [id]
    for key in ("id", "status", "pid", "shim_pid", "exit_code", "exited_at", "created_at", "bundle"):
        assert key in info


def test_kill_gives_128_plus_signal(env):
    id = env.name("k")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    env.ok("kill", id)
    assert env.ok("wait", id).out.strip() == "137"
    assert env.inspect(id)["exit_code"] == 137


def test_kill_with_named_signal_reaches_a_handler(env):
    id = env.name("trap")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c",
           "trap 'echo got-usr1; exit 42' USR1; echo ready; while true; do sleep 0.05; done")
    wait_for(lambda: "ready" in env.ctl("logs", id).out, 10, "the trap to be installed")
    env.ok("kill", "-s", "USR1", id)
    assert env.ok("wait", id).out.strip() == "42"
    assert env.ok("logs", id).out == "ready\ngot-usr1\n"


def test_rm_removes_everything_and_rm_of_running_needs_force(env):
    id = env.name("r")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    shim = env.inspect(id)["shim_pid"]
    r = env.ctl("rm", id)
    assert r.rc == 1 and "stop it first or use force" in r.err
    env.ok("rm", "-f", id)
    wait_for(lambda: not psutil.pid_exists(shim) or psutil.Process(shim).status() == psutil.STATUS_ZOMBIE,
             10, "the shim to exit after rm")
    assert env.container_ids_on_disk() == []
    assert not os.path.exists(os.path.join(env.state, "shims", id))
    assert env.ctl("inspect", id).rc == 1


def test_detached_run_with_rm_removes_after_exit(env):
    id = env.name("auto")
    env.ok("run", "-d", "--rm", "--name", id, "busybox", "sh", "-c", "sleep 0.3")
    wait_for(lambda: env.ctl("inspect", id).rc == 1, 15, "the container to remove itself")
    assert env.container_ids_on_disk() == []


def test_each_container_gets_its_own_writable_root(env):
    a, b = env.name("wa"), env.name("wb")
    for id in (a, b):
        env.ok("run", "--name", id, "busybox", "sh", "-c", f"echo {id} > /mine; echo x >> /etc/passwd")
    assert env.ok("run", "--rm", "busybox", "sh", "-c", "cat /mine 2>/dev/null; tail -1 /etc/passwd").out == \
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    image = env.inspect(a)["rootfs"]
    assert not os.path.exists(os.path.join(image, "mine"))
    # the shim mounted the overlay in its own mount namespace: nothing of it is visible on the host
    with open("/proc/self/mountinfo") as f:
        assert env.base not in f.read()


def test_rootfs_dir_is_used_read_only_under_an_overlay(env):
    tree = os.path.join(env.base, "mytree")
    env.ok("run", "--rm", "busybox", "true")  # builds the image tree
    shutil.copytree(os.path.join(env.root, "images", "busybox", "rootfs"), tree, symlinks=True)
    with open(os.path.join(tree, "marker"), "w") as f:
        f.write("from-my-tree\n")
    r = env.ctl("run", "--rm", "--rootfs", tree, "sh", "-c", "cat /marker; echo changed > /marker")
    assert (r.rc, r.out) == (0, "from-my-tree\n")
    assert open(os.path.join(tree, "marker")).read() == "from-my-tree\n"


def test_the_shim_reaps_runc_and_the_init_and_leaves_no_zombies(env):
    id = env.name("z")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", "(sleep 0.1 &); sleep 1000")
    info = env.inspect(id)
    env.ok("kill", id)  # runc kill is one more child of the shim to reap
    assert env.ok("wait", id).out.strip() == "137"
    shim = psutil.Process(info["shim_pid"])
    assert shim.is_running()  # the shim outlives its container until rm
    assert zombies_of({shim.pid}) == []
    assert [c.pid for c in shim.children()] == []
