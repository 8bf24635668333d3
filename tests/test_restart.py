"""Restart policies, enforced by the shim: on-failure with a maximum, always with a crash loop and its back-off
(measured from the shim's journal), unless-stopped and user stops, update --restart, wait across restarts, and
restarts counted while the manager is down. Real runc and busybox."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from shimproto import journal
from tests.harness import OUTAGE, wait_for


def shim_events(env, id: str) -> list[dict]:
    return journal.load(os.path.join(env.state, "shims", id, "events.journal"))


def of_init(evs: list[dict], *types: str) -> list[dict]:
    return [e for e in evs if e["type"] in types and not e.get("exec_id")]


def assert_runs_never_overlap(evs: list[dict]) -> None:
    """create, start, exit of one run, then the next: no run begins before the last one's exit."""
    kinds = [e["type"] for e in of_init(evs, "create", "start", "exit")]
    for i in range(0, len(kinds) - 2, 3):
        assert kinds[i:i + 3] == ["create", "start", "exit"], kinds


def restarts(env, id: str) -> int:
    return env.inspect(id)["restart_count"]


@pytest.mark.timeout(60)
def test_on_failure_restarts_failures_only_and_at_most_max_times(env):
    failing, fine = env.name("fail"), env.name("fine")
    env.ok("run", "-d", "--name", failing, "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3")
    env.ok("run", "-d", "--name", fine, "--restart", "on-failure", "busybox", "sh", "-c", "echo ok")
    wait_for(lambda: env.inspect(failing)["status"] == "stopped" and restarts(env, failing) == 2, 20,
             "two restarts and a final stop")
    time.sleep(1.0)  # a third restart would be due within 0.4 s
    info = env.inspect(failing)
    assert (info["restart_count"], info["restart_policy"], info["exit_code"], info["run"]) == (2, "on-failure:2", 3, 3)
    assert [x["code"] for x in info["last_exits"]] == [3, 3, 3]
    evs = shim_events(env, failing)
    assert [e["count"] for e in of_init(evs, "restart")] == [1, 2]
    assert len(of_init(evs, "exit")) == 3
    assert_runs_never_overlap(evs)
    assert env.ok("logs", failing).out == "run\n" * 3  # same log, appended to by every run
    wait_for(lambda: env.inspect(fine)["status"] == "stopped", 10, "the zero exit")
    time.sleep(0.5)
    assert (env.inspect(fine)["restart_count"], env.inspect(fine)["exit_code"]) == (0, 0)


@pytest.mark.timeout(90)
def test_always_restarts_a_crash_loop_with_a_doubling_back_off(env):
    id = env.name("loop")
    env.ok("run", "-d", "--name", id, "--restart", "always", "busybox", "sh", "-c", "exit 1")
    seen_restarting = []

    def five_restarts() -> bool:
        row = [r for r in env.ok("ps").out.splitlines() if r.startswith(id)]
        if row and "Restarting (1)" in row[0]:
            seen_restarting.append(row[0])
        return restarts(env, id) >= 5

    wait_for(five_restarts, 30, "five restarts", interval=0.1)
    evs = shim_events(env, id)
    exits, starts = of_init(evs, "exit"), of_init(evs, "start")
    assert len(starts) >= 5
    for n, ev in enumerate(of_init(evs, "restart")[:len(starts) - 1]):  # those whose next run began
        expected = 0.1 * 2 ** n
        assert ev["count"] == n + 1 and ev["delay_ms"] == int(expected * 1000)
        gap = (starts[n + 1]["time"] - exits[n]["time"]) / 1e9
        assert expected * 0.9 <= gap <= expected + 2.0, f"restart {n + 1}: {gap:.3f}s after the exit"
    assert seen_restarting, "ps never showed the back-off"
    assert_runs_never_overlap(shim_events(env, id))
    # a stop ends it, also in the middle of a back-off
    env.ok("stop", id)
    count = restarts(env, id)
    time.sleep(2.0)
    info = env.inspect(id)
    assert (info["status"], info["restart_count"]) == ("stopped", count)
    assert env.ok("ps", "-q", "--filter", "status=restarting").out == ""


@pytest.mark.timeout(60)
def test_the_back_off_starts_over_after_ten_seconds_of_running(env):
    id = env.name("reset")
    # the first run fails at once, every later one after 10.5 s
    env.ok("run", "-d", "--name", id, "--restart", "always", "busybox", "sh", "-c",
           "if [ -e /tmp/long ]; then sleep 10.5; fi; touch /tmp/long; exit 1")
    wait_for(lambda: restarts(env, id) >= 2, 30, "the second restart")
    delays = [e["delay_ms"] for e in of_init(shim_events(env, id), "restart")]
    assert delays[:2] == [100, 100], delays  # not 200: the second run lasted 10 s
    env.ok("rm", "-f", id)


@pytest.mark.timeout(60)
def test_unless_stopped_restarts_a_crash_but_not_a_user_stop_or_kill(env):
    id = env.name("us")
    env.ok("run", "-d", "--name", id, "--restart", "unless-stopped", "busybox", "sleep", "1000")
    pid = env.inspect(id)["pid"]
    os.kill(pid, signal.SIGKILL)  # a crash, not the user's doing
    wait_for(lambda: env.inspect(id)["status"] == "running" and env.inspect(id)["pid"] != pid, 10, "the restart")
    assert restarts(env, id) == 1
    env.ok("stop", "-t", "1", id)
    time.sleep(1.0)
    info = env.inspect(id)
    assert (info["status"], info["restart_count"]) == ("stopped", 1)
    assert os.path.exists(os.path.join(env.root, "containers", id, "stopped-by-user"))
    env.ok("start", id)  # a user start: the policy's care again, its count from 0
    assert (env.inspect(id)["status"], restarts(env, id)) == ("running", 0)
    assert not os.path.exists(os.path.join(env.root, "containers", id, "stopped-by-user"))
    env.ok("kill", id)
    assert env.ok("wait", id).out.strip() == "137"
    time.sleep(1.0)
    assert (env.inspect(id)["status"], restarts(env, id)) == ("stopped", 0)


@pytest.mark.timeout(60)
def test_update_restart_on_a_running_container_and_rm_f_in_a_back_off(env):
    id = env.name("upd")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    env.ok("update", "--restart", "always", id)
    assert env.inspect(id)["restart_policy"] == "always"
    assert '"restart": "always"' in open(os.path.join(env.root, "containers", id, "meta.json")).read()
    pid = env.inspect(id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: env.inspect(id)["pid"] not in (0, pid) and env.inspect(id)["status"] == "running", 10,
             "the restart the new policy asked for")
    r = env.ctl("update", "--restart", "sometimes", id)
    assert r.rc == 1 and "invalid restart policy 'sometimes'" in r.err and len(r.err.strip().splitlines()) == 1
    assert env.inspect(id)["restart_policy"] == "always"
    # a crash loop removed with rm -f while it backs off: nothing left, nothing restarted after
    loop = env.name("loop")
    env.ok("run", "-d", "--name", loop, "--restart", "always", "busybox", "sh", "-c", "exit 2")
    wait_for(lambda: env.inspect(loop)["status"] == "restarting" and restarts(env, loop) >= 4, 20, "a back-off")
    assert env.ctl("rm", loop).rc == 1  # docker: a restarting container is removed with -f only
    env.ok("rm", "-f", loop)
    assert loop not in env.ok("ps", "-a", "-q").out.split()


@pytest.mark.timeout(60)
def test_wait_and_an_attached_run_answer_the_run_they_followed(env):
    id = env.name("w")
    r = env.ctl("run", "--name", id, "--restart", "on-failure:1", "busybox", "sh", "-c", "echo once; exit 3")
    assert r.rc == 3 and r.out.startswith("once\n"), r
    wait_for(lambda: env.inspect(id)["status"] == "stopped" and restarts(env, id) == 1, 10, "the one restart")
    loop = env.name("wl")
    env.ok("run", "-d", "--name", loop, "--restart", "always", "busybox", "sh", "-c", "sleep 0.3; exit 4")
    assert env.ok("wait", loop).out.strip() == "4"  # docker's: the next exit, though a restart follows
    env.ok("rm", "-f", loop, id)


@pytest.mark.timeout(OUTAGE + 120)
def test_restarts_go_on_and_are_counted_while_the_manager_is_down(env):
    id = env.name("down")
    env.ok("run", "-d", "--name", id, "--restart", "always", "busybox", "sh", "-c", "echo up; sleep 1; exit 1")
    wait_for(lambda: restarts(env, id) >= 1, 10, "the first restart")
    shim_pid = env.inspect(id)["shim_pid"]
    env.kill_manager(signal.SIGKILL)
    before = len(of_init(shim_events(env, id), "restart"))
    time.sleep(OUTAGE)
    evs = shim_events(env, id)
    during = len(of_init(evs, "restart")) - before
    assert during >= 3, f"only {during} restarts in {OUTAGE:g}s without a manager"
    assert psutil.pid_exists(shim_pid)
    env.start_manager()
    info = env.inspect(id)
    last = of_init(shim_events(env, id), "restart")[-1]["count"]
    assert info["restart_count"] in (last, last + 1)  # one more may have come since we read the journal
    assert info["shim_pid"] == shim_pid
    # the manager's event log took every restart exactly once, in order
    import json

    got = [json.loads(x) for x in env.ok("events", "--since", "0", "--no-follow", "--format", "json",
                                         "--filter-id", id).out.splitlines()]
    counts = [e["count"] for e in got if e["type"] == "restart"]
    assert counts == list(range(1, len(counts) + 1)) and counts[-1] >= last
    exits = [e for e in got if e["type"] == "exit"]
    assert len(exits) == len({e["seq"] for e in exits}) and len(exits) >= len(counts)
    assert_runs_never_overlap(shim_events(env, id))
    env.ok("rm", "-f", id)
