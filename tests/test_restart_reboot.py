"""Reboot recovery: every process of a manager's tree is killed (manager, template, shims, containers), its state
dir wiped as a reboot empties a tmpfs, and a new manager runs again the containers whose policy asks for it, on the
same writable layer and log. Real runc and busybox."""

from __future__ import annotations

import os
import shutil
import signal

import psutil
import pytest

from tests import leaks
from tests.harness import our_processes, wait_for

SERVICE = "echo run >> /data/runs; cat /data/runs | wc -l; while true; do sleep 1; done"


@pytest.mark.timeout(120)
def test_a_reboot_runs_always_and_unless_stopped_again_but_not_what_the_user_stopped(env):
    always, unless, stopped_always, stopped_unless, plain = (env.name(s) for s in ("al", "us", "sal", "sus", "no"))
    for id, policy in ((always, "always"), (unless, "unless-stopped"), (stopped_always, "always"),
                       (stopped_unless, "unless-stopped"), (plain, "no")):
        env.ok("run", "-d", "--name", id, "--restart", policy, "busybox", "sh", "-c",
               "mkdir -p /data; " + SERVICE)
    env.ok("stop", "-t", "0", stopped_always, stopped_unless)
    wait_for(lambda: env.ok("logs", always).out == "1\n", 10, "the first run's output")
    pids = {id: env.inspect(id)["pid"] for id in (always, unless, plain)}

    # the host goes down: every process of the tree dies at once, the tmpfs state with it
    for p in our_processes(env.base):
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    wait_for(lambda: not our_processes(env.base), 10, "every process of the tree to be gone")
    env.proc = None
    shutil.rmtree(env.state)
    for parent in leaks.parents():  # and a boot starts with empty cgroup hierarchies
        for id in (always, unless, stopped_always, stopped_unless, plain):
            if os.path.isdir(os.path.join(parent, id)):
                os.rmdir(os.path.join(parent, id))

    env.start_manager()
    wait_for(lambda: all(env.inspect(id)["status"] == "running" for id in (always, unless, stopped_always)), 30,
             "the containers to run again")
    for id in (always, unless, stopped_always):
        info = env.inspect(id)
        assert info["pid"] not in pids.values() and psutil.pid_exists(info["shim_pid"])
    # the same writable layer and log: the second run found the first one's file and wrote after its output
    wait_for(lambda: env.ok("logs", always).out == "1\n2\n", 10, "the second run's output in the same log")
    # unless-stopped stopped by the user stays stopped; so does a container with no policy
    for id in (stopped_unless, plain):
        assert env.inspect(id)["status"] == "stopped", env.inspect(id)
    assert env.inspect(plain)["exit_reason"] == "shim-lost"
    assert sorted(env.ok("ps", "-q").out.split()) == sorted([always, unless, stopped_always])
    # they take commands as any container does
    env.ok("stop", "-t", "0", always)
    assert env.inspect(always)["status"] == "stopped"
    assert os.path.exists(os.path.join(env.root, "containers", always, "stopped-by-user"))
    env.ok("rm", "-f", always, unless, stopped_always, stopped_unless, plain)
