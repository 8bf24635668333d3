"""Live-restore: SIGKILL the manager while containers run; they keep running in their shims, and a new manager on
the same dirs finds them, with exits and log lines from while it was down."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.harness import PY, REPO, wait_for
from tests.test_logs import waiting_for_a_reply

COUNTER = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.02; done"
EXIT_ON_USR1 = "trap 'echo bye; exit 7' USR1; echo ready; while true; do sleep 0.05; done"
RESTORE_WITHIN = 8.0


def log_lines(env, id: str) -> list[str]:
    with open(os.path.join(env.root, "containers", id, "container.log"), "rb") as f:
        return f.read().decode().splitlines()


def test_containers_outlive_a_manager_sigkill_and_are_found_again(env):
    counter, exiter, victim = env.name("count"), env.name("exit7"), env.name("victim")
    env.ok("run", "-d", "--name", counter, "busybox", "sh", "-c", COUNTER)
    env.ok("run", "-d", "--name", exiter, "busybox", "sh", "-c", EXIT_ON_USR1)
    env.ok("run", "-d", "--name", victim, "busybox", "sleep", "1000")
    wait_for(lambda: "ready" in env.ctl("logs", exiter).out, 10, "the trap to be installed")
    before = {id: env.inspect(id) for id in (counter, exiter, victim)}

    assert env.kill_manager(signal.SIGKILL) == -signal.SIGKILL

    for info in before.values():  # same shims, same container processes
        assert psutil.pid_exists(info["shim_pid"]) and psutil.pid_exists(info["pid"])
    # while the manager is down: one container exits on its own, one is killed, one keeps logging
    lines_at_kill = len(log_lines(env, counter))
    os.kill(before[exiter]["pid"], signal.SIGUSR1)
    os.kill(before[victim]["pid"], signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(before[exiter]["pid"]), 10, "the exiter to exit")
    wait_for(lambda: len(log_lines(env, counter)) > lines_at_kill + 20, 10, "log lines while the manager is down")
    lines_while_down = len(log_lines(env, counter))

    t0 = time.monotonic()
    env.start_manager()
    ps = {c["id"]: c for c in env.ok("ps", "-a", "--format", "json").json()}
    took = time.monotonic() - t0
    print(f"restart to ps listing all: {took:.3f}s")
    # generous: restore asks each shim once; it must not sit out a shim timeout (10 s) or an event poll (30 s)
    assert took < RESTORE_WITHIN, f"restart to a full listing took {took:.1f}s (> {RESTORE_WITHIN}s)"

    assert ps[counter]["status"] == "running"
    assert ps[counter]["pid"] == before[counter]["pid"]
    assert ps[counter]["shim_pid"] == before[counter]["shim_pid"]
    assert (ps[exiter]["status"], ps[exiter]["exit_code"]) == ("stopped", 7)
    assert (ps[victim]["status"], ps[victim]["exit_code"]) == ("stopped", 137)
    assert env.ok("wait", exiter).out.strip() == "7"
    assert env.ok("logs", exiter).out == "ready\nbye\n"

    # every line, in order, including those written while the manager was down
    out = env.ok("logs", counter).out.splitlines()
    assert len(out) >= lines_while_down
    assert out == [f"line {i}" for i in range(len(out))]

    # the restored containers take commands
    env.ok("kill", "-s", "TERM", counter)  # sh as PID 1 ignores TERM: still running
    assert env.inspect(counter)["status"] == "running"
    env.ok("kill", counter)
    assert env.ok("wait", counter).out.strip() == "137"
    env.ok("rm", exiter, victim, counter)
    assert env.ok("ps", "-a", "-q").out == ""


def test_a_waiting_client_survives_a_manager_restart(env):
    if os.uname().machine != "x86_64":
        pytest.skip("tells a long-poll in flight from poll(2)'s arguments in /proc/PID/syscall (x86_64 numbering)")
    id = env.name("w")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", EXIT_ON_USR1)
    wait_for(lambda: "ready" in env.ctl("logs", id).out, 10, "the trap to be installed")
    pid = env.inspect(id)["pid"]
    waiter = subprocess.Popen([PY, "-m", "shimctl", "--address", env.sock, "wait", id], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the wait is in flight when the manager dies (else this only shows a client that connects late)
        wait_for(lambda: waiting_for_a_reply(waiter.pid) or waiter.poll() is not None, 20,
                 "the waiter to be waiting on its long-poll")
        assert waiter.poll() is None, waiter.communicate()
        env.kill_manager(signal.SIGKILL)
        os.kill(pid, signal.SIGUSR1)
        wait_for(lambda: not psutil.pid_exists(pid), 10, "the container to exit")
        env.start_manager()
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert (waiter.returncode, out.strip()) == (0, "7"), err


def test_sigterm_stops_the_manager_and_leaves_containers_running(env):
    id = env.name("t")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    info = env.inspect(id)
    assert env.kill_manager(signal.SIGTERM) == 0
    assert not os.path.exists(os.path.join(env.state, "shimd.pid"))
    assert psutil.pid_exists(info["pid"]) and psutil.pid_exists(info["shim_pid"])
    env.start_manager()
    assert env.inspect(id)["pid"] == info["pid"]


def test_a_second_manager_on_the_same_state_is_refused(env):
    r = subprocess.run([PY, "-m", "manager", "--root", env.root, "--state", env.state], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "another shimd-manager" in r.stderr
    assert env.ctl("ps").rc == 0
