"""Probes of issue 14 that stay in CI: what one client can make a manager hold (point 7), odd input that once got
a traceback or an internal error (point 6), crafted ids over the raw API, the modes of what holds secrets (point 5)
checked as a user other than root."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

import msgpack
import psutil
import zmq

from shimproto.rpc import MAX_PENDING
from shimproto.wire import MAX_CONTAINERS


def _dealer(env) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 30_000)
    s.connect(f"ipc://{env.sock}")
    return ctx, s


def _rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_a_frame_of_a_million_empty_maps_is_refused_without_the_memory_it_would_take(env):
    before = _rss_mib(env.manager_pid())
    ctx, s = _dealer(env)
    try:
        body = msgpack.packb({"id": 1, "method": "list", "params": {"x": [{}] * 3_000_000}})
        assert 2_000_000 < len(body) < 8 * 2**20
        s.send(body)
        reply = msgpack.unpackb(s.recv(), raw=False)
    finally:
        ctx.destroy(0)
    assert reply["id"] is None or reply["id"] == 1
    assert reply["error"]["code"] == "invalid_argument"
    assert f"more than {MAX_CONTAINERS} maps and arrays" in reply["error"]["message"]
    assert _rss_mib(env.manager_pid()) - before < 60  # it took ~200 MiB before the bound
    assert env.ok("ps").rc == 0


def test_calls_in_flight_are_capped_per_connection_and_the_manager_keeps_serving(env):
    id = env.name("waited")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    before = _rss_mib(env.manager_pid())
    ctx, s = _dealer(env)
    try:
        n = MAX_PENDING + 200
        for rid in range(n):  # long polls that would each wait 30 s
            s.send(msgpack.packb({"id": rid, "method": "wait", "params": {"id": id, "timeout": 30}}))
        refused = []
        deadline = time.monotonic() + 30
        while len(refused) < 200 and time.monotonic() < deadline:
            reply = msgpack.unpackb(s.recv(), raw=False)
            if "error" in reply:
                refused.append(reply)
        assert len(refused) == 200 and all(r["error"]["code"] == "unavailable" for r in refused)
        assert f"long polls in flight on this connection (at most {MAX_PENDING})" in refused[0]["error"]["message"]
        assert min(r["id"] for r in refused) >= MAX_PENDING  # the first MAX_PENDING were taken
        # another connection is served meanwhile, and memory stays bounded
        assert env.ok("ps").rc == 0
        assert _rss_mib(env.manager_pid()) - before < 60
    finally:
        ctx.destroy(0)
    env.ok("rm", "-f", id)


def test_odd_numbers_and_paths_get_one_clear_line(env, tmp_path):
    comma = tmp_path / "a,b"
    comma.mkdir()
    huge = "99999999999999999999"  # past what a request can carry (int64): refused by the CLI, naming the flag
    for args, want in ((["--memory", huge], "--memory"), (["--memory", "1e400"], "--memory"),
                       (["--pids-limit", huge], "--pids-limit"), (["--cpu-shares", huge], "--cpu-shares"),
                       (["--stop-timeout", huge], "--stop-timeout"), (["--memory-swap", huge], "--memory-swap"),
                       (["--health-cmd", "true", "--health-retries", huge], "--health-retries"),
                       (["--health-cmd", "true", "--health-interval", "99999999999999h"], "--health-interval"),
                       (["--log-opt", f"max-file={huge}"], "max-file"), (["--log-opt", "max-size=1e400"], "max-size"),
                       (["--memory", "1k"], "memory limit"), (["--pids-limit", "0"], "pids limit"),  # the manager's
                       (["--rootfs", str(comma)], "overlay cannot take a path with")):
        r = env.ctl("run", "-d", *args, *([] if "--rootfs" in args else ["busybox"]), "true")
        assert r.rc == 125 and want in r.err and len(r.err.strip().splitlines()) == 1, (args, r.err)
        assert "Traceback" not in r.err


def test_crafted_ids_over_the_raw_api_write_nothing_outside(env):
    ctx, s = _dealer(env)
    try:
        for rid, bad in enumerate(["../../etc", "/abs", "a/b", "", ".hidden", "x" * 65, "a\x00b"]):
            for method in ("inspect", "delete", "kill", "wait", "logs"):
                s.send(msgpack.packb({"id": rid, "method": method, "params": {"id": bad, "force": True}}))
                reply = msgpack.unpackb(s.recv(), raw=False)
                assert reply["error"]["code"] in ("invalid_argument", "not_found"), (method, bad, reply)
    finally:
        ctx.destroy(0)
    assert sorted(os.listdir(os.path.join(env.root, "containers"))) == []


def test_two_managers_never_touch_each_others_containers(env, bare_env):
    b = bare_env
    b.start_manager()
    id = env.name("web")  # the same name in both managers
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    b.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    mine, theirs = env.inspect(id), b.inspect(id)
    assert mine["cgroup"] != theirs["cgroup"] and mine["cgroup"].endswith(f"/{id}")
    b.ok("update", "--memory", "8m", id)
    limit = f"/sys/fs/cgroup/memory{mine['cgroup']}/memory.limit_in_bytes"
    if os.path.exists(limit):  # cgroup v1 here
        assert int(open(limit).read()) != 8 << 20
    b.ok("rm", "-f", id)
    after = env.inspect(id)
    assert after["status"] == "running" and after["pid"] == mine["pid"] and psutil.pid_exists(mine["pid"])
    env.ok("rm", "-f", id)


def test_secrets_are_root_only_on_disk(env):
    """Point 5: config.json (every -e value), the writable layer, shim.log, meta.json and container.log are root's
    alone; the root and state directories let others pass (the socket) but not list."""
    c = env.name("secret")
    env.ok("run", "-d", "--name", c, "-e", "TOKEN=hunter2", "busybox", "sh", "-c",
           "echo written > /in-upper; echo logged; sleep 600")
    cdir, sdir = os.path.join(env.root, "containers", c), os.path.join(env.state, "shims", c)
    files = {os.path.join(sdir, "bundle", "config.json"): 0o600, os.path.join(sdir, "shim.log"): 0o600,
             os.path.join(cdir, "meta.json"): 0o600, os.path.join(cdir, "container.log"): 0o600,
             os.path.join(sdir, "bundle"): 0o700, cdir: 0o700, sdir: 0o700, os.path.join(cdir, "fs"): 0o700,
             os.path.join(env.root, "containers"): 0o700, os.path.join(env.state, "shims"): 0o700,
             env.root: 0o711, env.state: 0o711}
    deadline = time.monotonic() + 10
    while "logged" not in open(os.path.join(cdir, "container.log")).read():
        assert time.monotonic() < deadline, "the container's output never reached its log"
        time.sleep(0.05)
    assert {p: oct(os.stat(p).st_mode & 0o7777) for p in files} == {p: oct(m) for p, m in files.items()}
    upper = os.path.join(cdir, "fs", "upper")
    assert os.path.exists(os.path.join(upper, "in-upper"))
    nobody = pwd.getpwnam("nobody")
    probe = ("import os, sys\n"
             "for p in sys.argv[1:]:\n"
             "    try:\n"
             "        os.listdir(p) if os.path.isdir(p) else open(p).read()\n"
             "        print('read', p)\n"
             "    except PermissionError:\n"
             "        pass\n")
    os.chmod(env.base, 0o711)  # the test's temp dir is 0700: let nobody get as far as the manager's own modes
    try:
        r = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                            sys.executable, "-c", probe, *[p for p in files if p not in (env.root, env.state)],
                            upper, os.path.join(upper, "in-upper"), env.root, env.state],
                           capture_output=True, text=True, timeout=30)
    finally:
        os.chmod(env.base, 0o700)
    assert r.returncode == 0 and r.stdout == "", r
