"""Health checks run by the shim: transitions both ways with events, a hung check killed at its timeout with
everything it started, the API answering meanwhile, checks going on while the manager is down, bad flags, and
docker's merge with an image's HEALTHCHECK. Real runc and busybox."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from shimproto import journal
from shimproto.errors import InvalidArgument
from shimproto.policy import HealthCheck, check_health, merge_health
from tests.harness import wait_for

# PID 1 is a shell that reaps what a killed check leaves to it (busybox sleep would not)
LOOP = "while true; do sleep 1; done"
REAPING = "touch /tmp/ok; " + LOOP


def health(env, id: str) -> dict:
    return env.inspect(id)["health"] or {}


def health_events(env, id: str) -> list[str]:
    evs = journal.load(os.path.join(env.state, "shims", id, "events.journal"))
    return [e["status"] for e in evs if e["type"] == "health_status"]


def ps_status(env, id: str) -> str:
    return next(r for r in env.ok("ps").out.splitlines() if r.startswith(id))


@pytest.mark.timeout(60)
def test_health_goes_starting_healthy_unhealthy_healthy_with_an_event_each_time(env):
    id = env.name("h")
    env.ok("run", "-d", "--name", id, "--health-cmd", "echo checked; test -e /tmp/ok", "--health-interval", "0.3s",
           "--health-retries", "2", "busybox", "sh", "-c", REAPING)
    assert env.inspect(id)["health"]["status"] in ("starting", "healthy")
    wait_for(lambda: health(env, id).get("status") == "healthy", 10, "healthy")
    assert "(healthy)" in ps_status(env, id)
    env.ok("exec", id, "rm", "/tmp/ok")
    wait_for(lambda: health(env, id).get("status") == "unhealthy", 10, "unhealthy")
    h = health(env, id)
    assert h["failing_streak"] >= 2 and "(unhealthy)" in ps_status(env, id)
    assert 1 <= len(h["log"]) <= 5 and h["log"][-1]["exit_code"] == 1 and h["log"][-1]["output"] == "checked\n"
    env.ok("exec", id, "touch", "/tmp/ok")
    wait_for(lambda: health(env, id).get("status") == "healthy", 10, "healthy again")
    assert health(env, id)["failing_streak"] == 0
    assert health_events(env, id) == ["starting", "healthy", "unhealthy", "healthy"]
    got = [json.loads(x) for x in env.ok("events", "--since", "0", "--no-follow", "--format", "json",
                                         "--filter-id", id).out.splitlines()]
    assert [e["status"] for e in got if e["type"] == "health_status"] == health_events(env, id)
    assert not [e for e in got if e.get("exec_id", "").startswith("health")]  # checks are not user execs
    env.ok("rm", "-f", id)


@pytest.mark.timeout(60)
def test_a_hung_check_is_killed_at_its_timeout_with_its_children_and_never_blocks_the_api(env):
    id = env.name("hang")
    env.ok("run", "-d", "--name", id, "--health-cmd", "sleep 100; true", "--health-interval", "0.2s",
           "--health-timeout", "0.5s", "--health-retries", "2", "busybox", "sh", "-c", REAPING)
    t0 = time.monotonic()
    slowest = 0.0
    while health(env, id).get("status") != "unhealthy":  # while checks hang, the API answers at once
        t = time.monotonic()
        env.ok("top", id)
        slowest = max(slowest, time.monotonic() - t)
        assert time.monotonic() - t0 < 20, "never unhealthy"
    assert slowest < 2.0, f"a call took {slowest:.2f}s while a check hung"
    log = health(env, id)["log"]
    assert log[-1]["exit_code"] == -1 and "exceeded timeout (0.5s)" in log[-1]["output"]
    ends = [log_time(x["end"]) - log_time(x["start"]) for x in log]
    assert all(0.45 < d < 3.0 for d in ends), ends
    assert all(log_time(b["start"]) >= log_time(a["end"]) for a, b in zip(log, log[1:], strict=False)), log
    env.ok("update", "--restart", "no", id)  # any call: the shim is not held up
    # no check's process outlives its timeout: at most the one in flight runs
    pid = env.inspect(id)["pid"]
    time.sleep(0.3)
    sleepers = [p for p in psutil.Process(pid).children(recursive=True) if "100" in " ".join(p.cmdline())]
    assert len(sleepers) <= 2, sleepers  # the check in flight: its sh and its sleep
    env.ok("rm", "-f", id)


def log_time(text: str) -> float:
    from shimctl.render import parse_rfc3339

    return parse_rfc3339(text)


@pytest.mark.timeout(60)
def test_checks_go_on_and_are_recorded_while_the_manager_is_down(env):
    id = env.name("down")
    env.ok("run", "-d", "--name", id, "--health-cmd", "test -e /tmp/ok", "--health-interval", "0.3s",
           "--health-retries", "1", "busybox", "sh", "-c", "touch /tmp/ok; sleep 3; rm /tmp/ok; " + LOOP)
    wait_for(lambda: health(env, id).get("status") == "healthy", 10, "healthy")
    env.kill_manager(signal.SIGKILL)
    wait_for(lambda: health_events(env, id)[-1:] == ["unhealthy"], 15, "unhealthy with no manager")
    env.start_manager()
    assert health(env, id)["status"] == "unhealthy"
    assert "(unhealthy)" in ps_status(env, id)
    env.ok("rm", "-f", id)


@pytest.mark.timeout(60)
def test_bad_health_and_restart_flags_are_refused_with_one_line(env):
    cases = [
        (["--restart", "sometimes"], "invalid restart policy 'sometimes'"),
        (["--restart", "always:3"], "only on-failure takes a maximum"),
        (["--restart", "on-failure:x"], "the maximum must be a number"),
        (["--restart", "always", "--rm"], "--restart and --rm"),
        (["--no-healthcheck", "--health-cmd", "true"], "--no-healthcheck conflicts"),
        (["--health-interval", "soon"], "invalid duration 'soon'"),
        (["--health-retries", "-1"], "--health-retries"),
        (["--health-timeout", "1ns", "--health-cmd", "true"], "Timeout must be at least 1ms"),
    ]
    for flags, needle in cases:
        r = env.ctl("run", "-d", *flags, "busybox", "true")
        assert r.rc == 125, (flags, r)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (flags, r.err)
    assert env.ok("ps", "-a", "-q").out == "" and env.container_ids_on_disk() == []


def test_the_image_healthcheck_merges_under_the_command_line_as_docker_does():
    image = {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 5 * 10**9, "Retries": 7}
    assert merge_health(None, image)["Test"] == ["CMD-SHELL", "curl -f localhost"]
    mine = merge_health({"Test": [], "Interval": 10**9}, image)
    assert (mine["Test"][1], mine["Interval"], mine["Retries"]) == ("curl -f localhost", 10**9, 7)
    assert merge_health({"Test": ["NONE"]}, image)["Test"] == ["NONE"]
    assert HealthCheck.of(merge_health({"Test": ["NONE"]}, image)).args is None
    c = HealthCheck.of({"Test": ["CMD", "true"], "Timeout": 2 * 10**9})
    assert (c.args, c.interval, c.timeout, c.retries, c.start_period) == (["true"], 30.0, 2.0, 3, 0.0)
    with pytest.raises(InvalidArgument, match="Test must be"):
        check_health({"Test": ["CMD-SHELL"]})
    from manager.images import config
    from shimproto.spec import ContainerSpec

    spec = ContainerSpec(args=[], image="x")
    config.apply(spec, {"config": {"Cmd": ["sh"], "Healthcheck": image}})
    assert spec.healthcheck is not None and spec.healthcheck["Retries"] == 7
