"""Upgrades do not strand shims: a container started by the last release's manager and shim (commit 298a60d,
before the template and the protocol version existed) is restored, listed, stopped and removed by this tree's
manager on the same --root/--state. The old tree comes from `git archive`, and runs with this venv."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile

import psutil
import pytest

from shimproto.client import Client
from shimproto.version import MIN_SHIM_PROTOCOL, PROTOCOL, of_ping
from tests.harness import PY, REPO, Result, wait_for

OLD_RELEASE = "298a60d"


@pytest.fixture(scope="module")
def old_tree():
    """This repository's tree at OLD_RELEASE, extracted to a directory of its own."""
    d = tempfile.mkdtemp(prefix="shimd-old-release-")
    try:
        archive = subprocess.run(["git", "-C", REPO, "archive", OLD_RELEASE], capture_output=True, check=True)
        subprocess.run(["tar", "x", "-C", d], input=archive.stdout, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot extract {OLD_RELEASE}: {e}")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def old_ctl(env, tree: str, *args: str) -> Result:
    """The old release's shimctl (it speaks the old create)."""
    r = subprocess.run([PY, "-m", "shimctl", "--address", env.sock, *args], capture_output=True, text=True,
                       timeout=60, cwd=tree, stdin=subprocess.DEVNULL)
    return Result(r.returncode, r.stdout, r.stderr)


def shim_ping(sock: str) -> dict:
    c = Client(sock, timeout=10)
    try:
        return c.call("ping", {})  # type: ignore[return-value]
    finally:
        c.close()


def test_a_newer_manager_reattaches_to_a_shim_of_the_last_release(bare_env, old_tree):
    env = bare_env
    env.start_manager(wrap=["env", "-C", old_tree])  # the old manager, run from the old tree
    assert "protocol" not in shim_ping(env.sock)
    running, exited = env.name("old"), env.name("oldexit")
    for id, cmd in ((running, ["sleep", "1000"]), (exited, ["sh", "-c", "echo bye; exit 5"])):
        r = old_ctl(env, old_tree, "run", "-d", "--name", id, "busybox", *cmd)
        assert r.rc == 0, r.err
    wait_for(lambda: old_ctl(env, old_tree, "wait", exited).out.strip() == "5", 15, "the old container to exit")
    before = env.inspect(running)
    shim = psutil.Process(before["shim_pid"])
    assert os.readlink(f"/proc/{shim.pid}/cwd") == "/" and "template" not in shim.cmdline()
    shim_sock = os.path.join(env.state, "shims", running, "shim.sock")
    assert of_ping(shim_ping(shim_sock)) == 1 >= MIN_SHIM_PROTOCOL  # the old shim does not say: protocol 1

    assert env.kill_manager(signal.SIGTERM) == 0  # the upgrade: stop the old manager, start the new one
    assert shim.is_running()
    env.start_manager()
    assert shim_ping(env.sock)["protocol"] == PROTOCOL

    ps = {c["id"]: c for c in env.ok("ps", "-a", "--format", "json").json()}
    assert (ps[running]["status"], ps[running]["shim_pid"], ps[running]["pid"]) == \
        ("running", before["shim_pid"], before["pid"])
    assert (ps[exited]["status"], ps[exited]["exit_code"]) == ("stopped", 5)
    assert env.ok("logs", exited).out == "bye\n"
    assert env.ok("exec", running, "echo", "upgraded").out == "upgraded\n"
    r = env.ctl("start", exited)  # its old shim has no restart: said in one line, nothing harmed
    assert r.rc == 1 and "its shim predates restart (protocol 1)" in r.err and len(r.err.splitlines()) == 1
    assert env.inspect(exited)["exit_code"] == 5
    env.ok("stop", "-t", "1", running)
    assert env.inspect(running)["status"] == "stopped"
    env.ok("rm", running, exited)
    wait_for(lambda: not shim.is_running() or shim.status() == psutil.STATUS_ZOMBIE, 10, "the old shim to exit")
    assert not os.path.exists(os.path.join(env.state, "shims", running))
    assert env.ok("ps", "-a", "--format", "json").json() == []
    # and the new manager's own shims speak the new protocol
    new = env.name("new")
    env.ok("run", "-d", "--name", new, "busybox", "sleep", "1000")
    assert shim_ping(os.path.join(env.state, "shims", new, "shim.sock"))["protocol"] == PROTOCOL
    env.ok("rm", "-f", new)
