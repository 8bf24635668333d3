"""Every task operation against the real runc: exec (plain, stdin, tty), attach, resize, close stdin, pause and
resume, update, stats, top, OOM, event ordering, and the offline cleanup of a dead shim."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import psutil
import pytest

from shimproto.client import Client
from tests.harness import PY, REPO, wait_for


def api(env) -> Client:
    return Client(env.sock, timeout=30)


def run_sleeper(env, suffix: str = "c", *extra: str) -> str:
    id = env.name(suffix)
    env.ok("run", "-d", "--name", id, *extra, "busybox", "sleep", "100000")
    return id


def test_exec_streams_output_and_exits_with_the_process_code(env):
    id = run_sleeper(env)
    r = env.ctl("exec", "-e", "FOO=bar", "-w", "/tmp", id, "sh", "-c", 'echo "$FOO $(pwd)"; echo e >&2; exit 5')
    assert (r.rc, r.out, r.err) == (5, "bar /tmp\n", "e\n")
    assert env.inspect(id)["execs"] == []  # an attached exec is removed once its code was collected


def test_exec_with_stdin(env):
    id = run_sleeper(env)
    r = env.ctl("exec", "-i", id, "sh", "-c", "tr a-z A-Z; echo end", input="hello\nworld\n")
    assert (r.rc, r.out) == (0, "HELLO\nWORLD\nend\n")


def test_exec_with_a_real_pty_and_resize(env):
    id = run_sleeper(env)
    r = env.ctl("exec", "-t", id, "sh", "-c", "tty; [ -t 0 ] && echo stdin-is-a-tty")
    assert r.rc == 0
    assert r.out.replace("\r", "").splitlines() == ["/dev/pts/0", "stdin-is-a-tty"]
    # a long-running tty exec: resize it and read the size back from inside
    c = api(env)
    c.call("exec", {"id": id, "exec_id": "tty1", "args": ["sh", "-c", "read x; stty size"], "tty": True,
                    "stdin": True})
    c.call("resize", {"id": id, "exec_id": "tty1", "rows": 33, "cols": 101})
    c.call("write_stdin", {"id": id, "exec_id": "tty1", "data": b"go\r"})
    assert c.call("wait", {"id": id, "exec_id": "tty1", "timeout": 20})["exit_code"] == 0
    out = b"".join(r[1] for r in c.call("logs", {"id": id, "exec_id": "tty1"})["records"])
    assert b"33 101" in out
    c.call("delete", {"id": id, "exec_id": "tty1"})


def test_detached_exec_runs_and_its_exit_is_kept(env):
    id = run_sleeper(env)
    c = api(env)
    c.call("exec", {"id": id, "exec_id": "bg", "args": ["sh", "-c", "exit 9"], "detach": True})
    res = wait_for(lambda: (r := c.call("wait", {"id": id, "exec_id": "bg", "timeout": 5}))["exited"] and r, 20,
                   "the detached exec to exit")
    assert res["exit_code"] == 9
    assert [e["exec_id"] for e in env.inspect(id)["execs"]] == ["bg"]


def test_exec_refused_in_a_stopped_container_and_duplicate_exec_id(env):
    id = run_sleeper(env)
    c = api(env)
    c.call("exec", {"id": id, "exec_id": "one", "args": ["sleep", "100"], "detach": True})
    r = subprocess.run([PY, "-c", f"""
from shimproto.client import Client
try:
    Client({env.sock!r}).call("exec", {{"id": {id!r}, "exec_id": "one", "args": ["true"]}})
except Exception as e:
    print(type(e).__name__, e)"""], capture_output=True, text=True, cwd=REPO)
    assert "AlreadyExists" in r.stdout and "exec id 'one' is already in use" in r.stdout
    env.ok("kill", id)
    env.ok("wait", id)
    r = env.ctl("exec", id, "true")
    assert r.rc == 1 and "cannot exec in a stopped container" in r.err


def test_run_interactive_reads_our_stdin_until_eof(env):
    r = env.ctl("run", "--rm", "-i", "busybox", "sh", "-c", "wc -l; echo bye", input="a\nb\nc\n")
    assert (r.rc, r.out.split()) == (0, ["3", "bye"])


def test_run_with_a_terminal(env):
    r = env.ctl("run", "--rm", "-t", "busybox", "sh", "-c", "tty; exit 4")
    assert r.rc == 4 and r.out.strip() == "/dev/pts/0"


def test_attach_streams_from_now_to_several_attachers_and_sends_stdin(env):
    id = env.name("att")
    env.ok("run", "-d", "-i", "--name", id, "busybox", "sh", "-c",
           "echo before; while read line; do echo got:$line; done; echo stdin-closed; exit 3")
    wait_for(lambda: "before" in env.ctl("logs", id).out, 10, "the first line")
    # attacher 1 follows through the API from "now", exactly as `shimctl attach` does
    c = api(env)
    first = c.call("logs", {"id": id, "cursor": -1, "follow": False})
    assert first["records"] == []
    seen: list[bytes] = []

    def follow() -> None:
        cur, f = first["cursor"], api(env)
        while True:
            res = f.call("logs", {"id": id, "cursor": cur, "follow": True, "timeout": 5})
            seen.extend(data for _, data in res["records"])
            cur = res["cursor"]
            if res["eof"]:
                return

    t = threading.Thread(target=follow)
    t.start()
    # attacher 2 is the CLI, which also sends its stdin; EOF on ours closes the container's
    talker = subprocess.run([PY, "-m", "shimctl", "--address", env.sock, "attach", id], cwd=REPO,
                            input=b"one\ntwo\n", capture_output=True, timeout=60)
    assert talker.returncode == 3, talker.stderr
    assert talker.stdout.decode().splitlines() == ["got:one", "got:two", "stdin-closed"]  # nothing from before
    t.join(30)
    assert b"".join(seen).decode().splitlines() == ["got:one", "got:two", "stdin-closed"]


def test_close_stdin_through_the_api(env):
    id = env.name("cs")
    env.ok("run", "-d", "-i", "--name", id, "busybox", "sh", "-c", "cat; echo eof-seen")
    c = api(env)
    c.call("write_stdin", {"id": id, "data": b"payload\n"})
    c.call("close_stdin", {"id": id})
    assert env.ok("wait", id).out.strip() == "0"
    assert env.ok("logs", id).out == "payload\neof-seen\n"
    r = env.ctl("attach", id)
    assert r.rc == 1 and "cannot attach to a stopped container" in r.err


def test_pause_and_unpause(env):
    id = env.name("p")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo $i; sleep 0.01; done")
    wait_for(lambda: env.ctl("logs", id).out.count("\n") > 5, 10, "output")
    env.ok("pause", id)
    assert env.inspect(id)["status"] == "paused"
    n = len(env.ok("logs", id).out)
    time.sleep(0.3)  # proving the absence of output needs an interval; nothing is waited on here
    assert len(env.ok("logs", id).out) == n
    assert "cannot exec in a paused container" in env.ctl("exec", id, "true").err
    assert "cannot pause a paused container" in env.ctl("pause", id).err
    cg = env.inspect(id)["cgroup"]  # this manager's cgroup parent (issue 14: never shared with another manager)
    assert "frozen" in open(f"/sys/fs/cgroup/freezer{cg}/freezer.state").read().lower()
    env.ok("unpause", id)
    assert env.inspect(id)["status"] == "running"
    wait_for(lambda: len(env.ok("logs", id).out) > n, 10, "output after unpause")
    assert "cannot resume a running container" in env.ctl("unpause", id).err
    env.ok("pause", id)
    env.ok("kill", id)  # SIGKILL reaches a frozen container
    assert env.ok("wait", id).out.strip() == "137"
    assert "cannot pause a stopped container" in env.ctl("pause", id).err


def test_update_stats_and_top(env):
    id = run_sleeper(env, "u", "--memory", "64m", "--pids-limit", "20")
    cg = env.inspect(id)["cgroup"]
    mem = f"/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes"
    pids = f"/sys/fs/cgroup/pids{cg}/pids.max"
    assert (open(mem).read().strip(), open(pids).read().strip()) == (str(64 << 20), "20")
    env.ok("update", "--memory", "128m", "--pids-limit", "30", id)
    assert (open(mem).read().strip(), open(pids).read().strip()) == (str(128 << 20), "30")
    env.ok("exec", "-d", id, "sleep", "1000")
    st = env.ok("stats", "--format", "json", id).json()[0]
    assert st["memory_limit"] == 128 << 20 and st["pids_limit"] == 30 and st["pids"] == 2
    assert st["memory_bytes"] > 0 and st["cpu_ns"] > 0
    top = env.ok("top", id).out.splitlines()
    assert top[0].split() == ["PID", "PPID", "CMD"]
    cmds = sorted(line.split(None, 2)[2] for line in top[1:])
    assert cmds == ["sleep 1000", "sleep 100000"]
    bad = env.ctl("update", "--memory", "1k", id)
    assert bad.rc == 1 and "below the minimum" in bad.err


def test_oom_kill_is_reported_as_137_with_oom_killed(env):
    id = env.name("oom")
    r = env.ctl("run", "--name", id, "--memory", "16m", "busybox", "sh", "-c",
                "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived")
    assert r.rc == 137, r.err
    info = env.inspect(id)
    assert info["oom_killed"] is True and info["exit_code"] == 137
    events = api(env).call("events", {"id": id, "since": 0, "timeout": 1})["events"]
    assert "oom" in [e["type"] for e in events]


def test_events_are_ordered_and_replayable(env):
    id = run_sleeper(env, "ev")
    c = api(env)
    for n in range(3):
        c.call("exec", {"id": id, "exec_id": f"x{n}", "args": ["sleep", "1000"], "detach": True})
    env.ok("kill", id)  # the kernel kills the execs with the init; their exits must come first
    env.ok("wait", id)
    evs = c.call("events", {"id": id, "since": 0, "timeout": 1})["events"]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    types = [(e["type"], e["exec_id"]) for e in evs]
    assert types[:2] == [("create", ""), ("start", "")]
    init_exit = types.index(("exit", ""))
    assert init_exit == len(types) - 1
    for n in range(3):
        assert types.index(("exec-added", f"x{n}")) < types.index(("exec-started", f"x{n}")) < \
            types.index(("exit", f"x{n}")) < init_exit
    assert evs[-1]["exit"]["code"] == 137
    # replay from any sequence number gives the same tail
    assert c.call("events", {"id": id, "since": 4, "timeout": 1})["events"] == evs[4:]
    # the journal is on disk too
    assert os.path.getsize(os.path.join(env.state, "shims", id, "events.journal")) > 0


def test_a_dead_shims_recorded_exit_is_reported_not_a_made_up_one(env):
    id = env.name("dead")
    assert env.ctl("run", "--name", id, "busybox", "sh", "-c", "exit 42").rc == 42
    shim = env.inspect(id)["shim_pid"]
    os.kill(shim, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(shim) or psutil.Process(shim).status() == psutil.STATUS_ZOMBIE, 10,
             "the shim to die")
    info = env.inspect(id)
    assert (info["status"], info["exit_code"], info["exit_reason"]) == ("stopped", 42, "")
    assert env.ok("wait", id).out.strip() == "42"
    env.ok("rm", id)
    assert not os.path.exists(os.path.join(env.state, "shims", id))


def test_a_running_container_whose_shim_dies_is_cleaned_up_as_shim_lost(env):
    id = run_sleeper(env, "lost")
    info = env.inspect(id)
    os.kill(info["shim_pid"], signal.SIGKILL)
    wait_for(lambda: env.inspect(id)["status"] == "stopped", 20, "the lost shim to be noticed")
    info2 = env.inspect(id)
    assert info2["exit_reason"] == "shim-lost" and info2["exit_code"] == 255
    wait_for(lambda: not psutil.pid_exists(info["pid"]), 10, "the orphaned container to be killed")
    env.ok("rm", id)


def test_offline_delete_reports_the_recorded_exit(env):
    id = env.name("off")
    assert env.ctl("run", "--name", id, "busybox", "sh", "-c", "exit 7").rc == 7
    shim = env.inspect(id)["shim_pid"]
    env.kill_manager()
    os.kill(shim, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(shim) or psutil.Process(shim).status() == psutil.STATUS_ZOMBIE, 10,
             "the shim to die")
    r = subprocess.run([PY, "-m", "shimd", "delete", "--id", id, "--state", os.path.join(env.state, "shims", id),
                        "--runtime-root", os.path.join(env.state, "runc")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["code"] == 7
    assert not os.path.exists(os.path.join(env.state, "shims", id))
    env.start_manager()
    info = env.inspect(id)  # the manager finds the metadata without a shim: stopped, exit unknown
    assert info["status"] == "stopped"


@pytest.mark.parametrize("verb", ["pause", "unpause", "stats", "top"])
def test_operations_on_unknown_container(env, verb):
    r = env.ctl(verb, "nosuch")
    assert r.rc == 1 and r.err.strip() == "shimctl: no such container: nosuch"
