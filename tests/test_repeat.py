"""A call in flight when the manager dies gets one effect and its real answer (issue 8, item 10), and a client with
no manager at all is told so at once (item 11).

The manager is made to SIGKILL itself at a fault point in the middle of a `shimctl` command; the test starts a new
manager while the command still waits; the command must then finish with its real answer (exit 0, the real
output), and what it asked for must have happened exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from shimproto.client import Client
from tests.harness import PY, REPO, wait_for

COUNT_ONCE = "echo x >> /count; wc -l < /count"  # prints how many times it ran in this container
TERM_ONCE = "trap 'echo term; exit 3' TERM; echo ready; while true; do sleep 0.1; done"


def events(env, id: str) -> list[dict]:
    return Client(env.sock).call("events", {"since": 0, "timeout": 0, "id": id}, idempotent=True)["events"]


COUNTING_RUNTIME = """#!/bin/sh
# runc, counting the processes it starts: one line per `runc start` or `runc exec` in $0.count
for a in "$@"; do
  case "$a" in start|exec) echo "$a" >> "$0.count"; break ;; esac
done
exec runc "$@"
"""


def counting(env) -> list[str]:
    """Start env's manager on a runc that counts what it starts; returns the flags that name that runtime."""
    path = os.path.join(env.base, "counting-runc")
    with open(path, "w") as f:
        f.write(COUNTING_RUNTIME)
    os.chmod(path, 0o755)
    env.start_manager("--runtime", path)
    return ["--runtime", path]


def started(env, what: str) -> int:
    try:
        with open(os.path.join(env.base, "counting-runc.count")) as f:
            return f.read().split().count(what)
    except FileNotFoundError:
        return 0


def _interrupted(env, flags: list[str], point: str, *args: str) -> subprocess.CompletedProcess:
    """Run shimctl with the manager armed to die at point; restart the manager once it died; the command's
    result."""
    env.kill_manager(signal.SIGTERM)
    env.start_manager(*flags, env={"SHIMD_FAULTS": point})
    cmd = subprocess.Popen([PY, "-m", "shimctl", "--address", env.sock, *args], cwd=REPO, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert env.proc.wait(30) == -signal.SIGKILL, f"{point} was not reached"
        env.proc = None
        env.start_manager(*flags)
        out, err = cmd.communicate(timeout=60)
    finally:
        if cmd.poll() is None:
            cmd.kill()
            cmd.wait()
    return subprocess.CompletedProcess(args, cmd.returncode, out, err)


@pytest.mark.parametrize("point", ["create:intent", "create:launched", "create:created", "create:started"])
def test_run_interrupted_at_any_step_runs_the_container_once(bare_env, point):
    env = bare_env
    flags = counting(env)
    id = env.name("run")
    r = _interrupted(env, flags, point, "run", "-d", "--name", id, "busybox", "sh", "-c", "echo started; sleep 999999")
    assert (r.returncode, r.stdout.strip()) == (0, id), r.stderr
    wait_for(lambda: "started" in env.ctl("logs", id).out, 10, "the container's output")
    assert env.inspect(id)["status"] == "running"
    assert started(env, "start") == 1, f"the container was started {started(env, 'start')} times"
    assert [ev["type"] for ev in events(env, id)].count("start") == 1


FAILING_START = """#!/bin/sh
# runc whose `start` always fails, as a runtime may
for a in "$@"; do
  case "$a" in start) echo "injected: runc start failed" >&2; exit 1 ;; create|exec|kill|delete|state) break ;; esac
done
exec runc "$@"
"""


def test_a_run_whose_start_failed_before_the_manager_died_fails_again_and_leaves_nothing(bare_env):
    env = bare_env
    path = os.path.join(env.base, "failing-runc")
    with open(path, "w") as f:
        f.write(FAILING_START)
    os.chmod(path, 0o755)
    env.start_manager("--runtime", path)
    id = env.name("nostart")
    # the manager dies after the shim created the container and its start failed, before the rollback; the next
    # one keeps the container for the client, whose repeat gets the same failure and must not leave it behind
    r = _interrupted(env, ["--runtime", path], "create:failed", "run", "-d", "--name", id, "busybox", "true")
    assert r.returncode == 125 and "failing-runc start: exited with status 1" in r.stderr, (r.returncode, r.stderr)
    assert env.ctl("inspect", id).rc == 1
    assert env.container_ids_on_disk() == []


def test_an_unnamed_run_interrupted_after_start_is_one_container(bare_env):
    env = bare_env
    flags = counting(env)
    r = _interrupted(env, flags, "create:started", "run", "-d", "busybox", "sleep", "100000")
    assert r.returncode == 0, r.stderr
    assert env.ctl("ps", "-q").out.split() == [r.stdout.strip()]
    assert started(env, "start") == 1


def test_exec_interrupted_after_it_started_runs_once_and_gets_its_output(bare_env):
    env = bare_env
    flags = counting(env)
    id = env.name("exec")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    r = _interrupted(env, flags, "exec:started", "exec", id, "sh", "-c", COUNT_ONCE)
    assert (r.returncode, r.stdout.strip()) == (0, "1"), r.stderr
    assert started(env, "exec") == 1
    assert env.ok("exec", id, "cat", "/count").out == "x\n"


def test_stop_interrupted_after_the_signal_sends_it_once(bare_env):
    env = bare_env
    flags = counting(env)
    id = env.name("stop")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", TERM_ONCE)
    wait_for(lambda: "ready" in env.ctl("logs", id).out, 10, "the trap")
    r = _interrupted(env, flags, "stop:signalled", "stop", "-t", "20", id)
    assert (r.returncode, r.stdout.strip()) == (0, id), r.stderr
    assert env.inspect(id)["exit_code"] == 3
    assert env.ctl("logs", id).out.count("term") == 1


@pytest.mark.parametrize("point", ["delete:intent", "delete:killed", "delete:shim-deleted", "delete:files-removed"])
def test_rm_interrupted_at_any_step_answers_as_if_it_had_not_been(bare_env, point):
    env = bare_env
    flags = counting(env)
    id = env.name("rm")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    r = _interrupted(env, flags, point, "rm", "-f", id)
    assert (r.returncode, r.stdout.strip()) == (0, id), r.stderr
    assert env.ctl("inspect", id).rc == 1
    assert env.container_ids_on_disk() == []


def test_with_no_manager_a_command_says_so_within_a_second(bare_env):
    env = bare_env
    env.start_manager()
    env.kill_manager(signal.SIGKILL)  # its pid file stays behind, naming a dead process
    for args in (("ps",), ("run", "--rm", "busybox", "true")):
        t0 = time.monotonic()
        r = env.ctl(*args, timeout=30)
        took = time.monotonic() - t0
        assert r.rc == 125, (args, r.rc, r.err)
        assert f"cannot connect to the shimd manager at {env.sock}: is shimd-manager running?" in r.err
        assert took < 5, f"shimctl {args[0]} took {took:.1f}s to say the manager is not running"
    os.unlink(os.path.join(env.state, "shimd.pid"))  # and with no pid file at all
    assert env.ctl("ps", timeout=30).rc == 125
