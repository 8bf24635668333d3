"""shimctl's own surface: docker's verbs and flags (create, start -a, restart, ps filters and human times, logs
windows and timestamps, exec -u, attach --detach-keys, stats, version, info), docker's exit codes, and a start-up
that imports only what the verb needs. The pure parts (times, keys, wording, the exit-code table) are tested
without a manager."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from shimctl import exitcodes, options, render
from shimctl.commands.ps import matches, parse_filter
from shimctl.stream import Printer, StdinPump
from shimproto import errors
from tests.harness import PY, REPO, wait_for

RFC3339_NANO = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")


def run_sleeper(env, suffix: str, *extra: str) -> str:
    id = env.name(suffix)
    env.ok("run", "-d", "--name", id, *extra, "busybox", "sleep", "100000")
    return id


def ctl_bytes(env, *args: str, input: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "shimctl", "--address", env.sock, *args], input=input, capture_output=True,
                          timeout=timeout, cwd=REPO)


# --- without a manager ---------------------------------------------------------------------------------------

def test_docker_times_are_parsed_as_docker_does():
    now = 1_800_000_000 * 10**9
    assert options.parse_time("2026-12-01T10:00:00Z", now) == 1796119200 * 10**9
    assert options.parse_time("2026-12-01T10:00:00.5+01:00", now) == (1796119200 - 3600) * 10**9 + 5 * 10**8
    assert options.parse_time("1700000000", now) == 1700000000 * 10**9
    assert options.parse_time("1700000000.25", now) == 1700000000 * 10**9 + 25 * 10**7
    assert options.parse_time("10m", now) == now - 600 * 10**9
    assert options.parse_time("1h30m", now) == now - 5400 * 10**9
    assert options.parse_time("42s", now) == now - 42 * 10**9
    for bad in ("yesterday", "10x", "1h30", ""):
        with pytest.raises(Exception, match="invalid time"):
            options.parse_time(bad, now)


def test_detach_keys_use_dockers_syntax():
    assert options.parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert options.parse_detach_keys("ctrl-a,x") == b"\x01x"
    assert options.parse_detach_keys("ctrl-@,ctrl-\\") == b"\x00\x1c"
    for bad in ("ctrl-", "ctrl-pp", "alt-x", "ab", ""):
        with pytest.raises(Exception, match="detach keys"):
            options.parse_detach_keys(bad)


def test_human_durations_and_statuses_are_worded_as_docker_does():
    assert [render.human_duration(s) for s in (0.4, 1, 42, 60, 300, 3600, 5 * 3600, 3 * 86400, 20 * 86400)] == [
        "Less than a second", "1 second", "42 seconds", "About a minute", "5 minutes", "About an hour", "5 hours",
        "3 days", "2 weeks"]
    t0 = render.parse_rfc3339("2026-12-01T10:00:00.000000000Z")
    base = {"created_at": "2026-12-01T10:00:00.000000000Z", "started_at": "2026-12-01T10:00:00.000000000Z",
            "exited_at": "2026-12-01T10:03:00.000000000Z", "exit_code": 137}
    assert render.status({**base, "status": "running"}, t0 + 300) == "Up 5 minutes"
    assert render.status({**base, "status": "paused"}, t0 + 300) == "Up 5 minutes (Paused)"
    assert render.status({**base, "status": "stopped"}, t0 + 182) == "Exited (137) 2 seconds ago"
    assert render.status({**base, "status": "created"}, t0 + 5) == "Created"
    assert render.ago(base["created_at"], t0 + 180) == "3 minutes ago"


def test_exit_code_table_follows_docker():
    code = exitcodes.code
    for column in (exitcodes.CREATE, exitcodes.LAUNCH):
        assert code(column, errors.CommandNotFound("x")) == 127
        assert code(column, errors.CannotInvoke("x")) == 126
        assert code(column, errors.RuntimeFailed("x")) == 125
        assert code(column, errors.Unavailable("x")) == 125
    assert code(exitcodes.CREATE, errors.NotFound("no such image")) == 125
    assert code(exitcodes.LAUNCH, errors.NotFound("no such container")) == 1  # docker start nosuch: 1
    assert code(exitcodes.LAUNCH, errors.InvalidState("not running")) == 1  # docker exec into a stopped one: 1
    others = (errors.CommandNotFound("x"), errors.RuntimeFailed("x"), errors.NotFound("x"))
    assert {code(exitcodes.OTHER, e) for e in others} == {1}
    assert code(exitcodes.CREATE, exitcodes.Usage("x")) == 125 and code(exitcodes.OTHER, exitcodes.Usage("x")) == 2
    assert {code(column, errors.ManagerNotRunning("x")) for column in (exitcodes.CREATE, exitcodes.OTHER)} == {125}


def test_ps_filters_or_within_a_key_and_across_keys():
    rows = [{"id": "web-1", "status": "running"}, {"id": "web-2", "status": "stopped"},
            {"id": "db", "status": "running"}, {"id": "new", "status": "created"}]

    def ids(*texts: str) -> list[str]:
        fs = [parse_filter(t) for t in texts]
        return [r["id"] for r in rows if matches(r, fs)]

    assert ids("status=running") == ["web-1", "db"]
    assert ids("status=exited") == ids("status=stopped") == ["web-2"]
    assert ids("status=running", "status=created") == ["web-1", "db", "new"]
    assert ids("name=web") == ["web-1", "web-2"]
    assert ids("name=web", "status=running") == ["web-1"]
    assert ids("name=web", "name=db", "status=running") == ["web-1", "db"]
    assert ids("status=dead") == []
    for bad in ("color=red", "status=sleepy", "name"):
        with pytest.raises(Exception, match="invalid filter"):
            parse_filter(bad)


def test_detach_keys_are_found_across_reads_and_never_sent():
    pump = StdinPump(None, "c", "", b"\x10\x11", None)  # type: ignore[arg-type]
    assert pump.scan(b"abc\x10") == (b"abc", False)  # held back: may begin the keys
    assert pump.scan(b"x") == (b"\x10x", False)  # it did not: sent after all
    assert pump.scan(b"12\x10") == (b"12", False)
    assert pump.scan(b"\x11rest") == (b"", True)
    assert StdinPump(None, "c", "", b"", None).scan(b"\x10\x11") == (b"\x10\x11", False)  # type: ignore[arg-type]


def test_timestamps_prefix_each_line_once_partial_records_included():
    p = Printer(timestamps=True)
    stamp = b"T "
    assert p._stamp("stdout", b"par", stamp) == b"T par"
    assert p._stamp("stdout", b"tial\n", stamp) == b"tial\n"  # the rest of a line already stamped
    assert p._stamp("stdout", b"a\nb\n", stamp) == b"T a\nT b\n"


# --- start-up cost ---------------------------------------------------------------------------------------------

def test_ps_imports_only_its_own_verb_and_no_asyncio(env):
    run_sleeper(env, "imp")
    probe = ("import sys\nfrom shimctl.__main__ import main\n"
             f"rc = main(['--address', {env.sock!r}, 'ps'])\n"
             "verbs = sorted(m for m in sys.modules if m.startswith('shimctl.commands.'))\n"
             "print('RESULT', rc, 'asyncio' in sys.modules, ','.join(verbs))\n")
    r = subprocess.run([PY, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=30)
    result = r.stdout.strip().splitlines()[-1].split()
    assert result[:2] == ["RESULT", "0"], r.stderr
    assert result[3] == "shimctl.commands.ps"  # one verb module imported, not all
    assert result[2] == "False", "shimctl ps imported asyncio"


def test_run_d_imports_neither_the_spec_model_nor_dataclasses(env):
    probe = ("import sys\nfrom shimctl.__main__ import main\n"
             f"rc = main(['--address', {env.sock!r}, 'run', '-d', '--name', 'imp2', 'busybox', 'sleep', '100'])\n"
             "print('RESULT', rc, *(m in sys.modules for m in ('shimproto.spec', 'dataclasses', 'asyncio', "
             "'shutil')))\n")
    r = subprocess.run([PY, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.stdout.strip().splitlines()[-1].split() == ["RESULT", "0", "False", "False", "False", "False"], r.stderr
    assert env.inspect("imp2")["status"] == "running"


def test_help_is_wrapped_to_the_terminal_width_without_shutil():
    """argparse's formatter gets its width from us (COLUMNS, else the terminal, else 80), not from shutil."""
    def usage(columns: str) -> list[str]:
        env = {**os.environ, "COLUMNS": columns}
        out = subprocess.run([PY, "-m", "shimctl", "run", "--help"], capture_output=True, text=True, cwd=REPO,
                             env=env, timeout=30, check=True).stdout
        return out.split("\n\n")[0].splitlines()

    narrow, wide = usage("50"), usage("200")
    assert len(narrow) > 2 * len(wide) > 2 and max(map(len, wide)) > 100
    assert sum(len(line) <= 48 for line in narrow) >= len(narrow) - 2  # but a token longer than what is left


def test_every_create_flag_lands_in_a_spec_field_the_manager_accepts():
    from dataclasses import fields

    from shimctl.__main__ import parser
    from shimctl.commands import create
    from shimproto.spec import ContainerSpec

    argv = ["run", "-d", "--name", "x", "-e", "A=1", "-w", "/w", "--entrypoint", "sh", "-u", "1:2", "-l", "k=v",
            "--stop-signal", "SIGINT", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "9", "--cpus",
            "0.5", "--cpu-shares", "512", "--shm-size", "8m", "--ulimit", "nofile=10:20", "--cap-add", "NET_ADMIN",
            "--cap-drop", "MKNOD", "--security-opt", "no-new-privileges", "--device", "/dev/null:/dev/xnull:rw",
            "--sysctl", "kernel.msgmax=8192", "--init", "--stop-timeout", "3", "-i", "-t", "--hostname", "h",
            "--network", "none", "-v", "/tmp:/t:ro", "--tmpfs", "/run", "--read-only", "--add-host", "a:1.2.3.4",
            "--dns", "9.9.9.9", "--log-opt", "max-size=1m", "--log-opt", "max-file=3", "--restart", "on-failure:2",
            "--health-cmd", "true", "busybox", "sleep", "1"]
    wire = create.spec(parser(argv).parse_args(argv), "run", auto_remove=False)
    assert set(wire) <= {f.name for f in fields(ContainerSpec)}, set(wire) - {f.name for f in fields(ContainerSpec)}
    s = ContainerSpec.from_wire(wire)
    assert (s.image, s.args, s.memory_limit, s.memory_swap, s.pids_limit, s.user, s.labels, s.log_max_files,
            s.sysctls, s.devices, s.restart) == ("busybox", ["sleep", "1"], 64 << 20, 128 << 20, 9, "1:2",
                                                 {"k": "v"}, 3, {"kernel.msgmax": "8192"},
                                                 ["/dev/null:/dev/xnull:rw"], "on-failure:2")
    assert s.healthcheck and s.healthcheck["Test"] == ["CMD-SHELL", "true"]


def test_help_lists_every_verb(env):
    out = env.ok("--help").out
    for verb in ("run", "create", "start", "restart", "ps", "logs", "exec", "attach", "stats", "version", "info"):
        assert re.search(rf"^\s+{verb}\s", out, re.M), verb


# --- create, start, restart ------------------------------------------------------------------------------------

def test_create_then_start_attached_gives_output_and_exit_code(env):
    id = env.name("cr")
    r = env.ok("create", "--name", id, "-e", "WHO=world", "busybox", "sh", "-c", 'echo "hello $WHO"; exit 4')
    assert r.out.strip() == id
    assert env.inspect(id)["status"] == "created"
    assert env.ok("ps", "-a", "--filter", "status=created", "-q").out.split() == [id]
    r = env.ctl("start", "-a", id)
    assert (r.rc, r.out) == (4, "hello world\n")
    assert env.inspect(id)["exit_code"] == 4


def test_start_interactive_sends_our_stdin(env):
    id = env.name("si")
    env.ok("create", "-i", "--name", id, "busybox", "sh", "-c", "tr a-z A-Z")
    r = env.ctl("start", "-a", "-i", id, input="shout\n")
    assert (r.rc, r.out) == (0, "SHOUT\n")


def test_start_of_an_exited_container_runs_it_again(env):
    id = env.name("again")
    assert env.ctl("run", "--name", id, "busybox", "sh", "-c", "echo ran").rc == 0
    assert env.ok("start", id).out.strip() == id
    wait_for(lambda: env.ctl("logs", id).out == "ran\nran\n", 20, "the second run's output")
    assert env.ok("wait", id).out.strip() == "0"
    r = env.ctl("start", "-a", id)  # attached: only what this run prints
    assert (r.rc, r.out) == (0, "ran\n")
    assert env.ok("logs", id).out == "ran\nran\nran\n"


def test_restart_gives_a_running_container_a_new_process(env):
    a, b = run_sleeper(env, "ra"), run_sleeper(env, "rb")
    pids = {id: env.inspect(id)["pid"] for id in (a, b)}
    assert env.ok("restart", "-t", "1", a, b).out.split() == [a, b]
    for id in (a, b):
        info = env.inspect(id)
        assert info["status"] == "running" and info["pid"] not in (0, pids[id])


# --- several ids -----------------------------------------------------------------------------------------------

def test_kill_stop_and_rm_take_several_ids(env):
    a, b, c, d = (run_sleeper(env, s) for s in ("ka", "kb", "sa", "sb"))
    assert env.ok("kill", a, b).out.split() == [a, b]
    assert env.ok("stop", "-t", "0.2", c, d).out.split() == [c, d]
    for id in (a, b, c, d):
        assert env.ok("wait", id).out.strip() == "137"
    r = env.ctl("rm", a, "nosuch", b)
    assert r.rc == 1 and r.out.split() == [a, b] and r.err.strip() == "shimctl: no such container: nosuch"
    assert env.ok("rm", c, d).out.split() == [c, d]
    assert env.ok("ps", "-a", "-q").out.split() == []


# --- ps --------------------------------------------------------------------------------------------------------

def test_ps_quiet_filters_and_human_times(env):
    web, db = run_sleeper(env, "web"), run_sleeper(env, "db")
    done = env.name("done")
    assert env.ctl("run", "--name", done, "busybox", "sh", "-c", "exit 3").rc == 3
    assert sorted(env.ok("ps", "-q").out.split()) == sorted([web, db])
    assert env.ok("ps", "-q", "--filter", "status=exited").out.split() == [done]
    assert env.ok("ps", "-q", "-f", "name=web", "-f", "name=db").out.split() == [web, db]
    assert env.ok("ps", "-q", "-f", "name=web", "-f", "status=exited").out.split() == []
    env.ok("pause", db)
    table = env.ok("ps", "-a").out.splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PID", "PORTS"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert re.search(r"(Less than a second|\d+ seconds?) ago\s+Up (Less than a second|\d+ seconds?)\s+\d+$", rows[web])
    assert re.search(r"Up .* \(Paused\)", rows[db])
    assert re.search(r"Exited \(3\) (Less than a second|\d+ seconds?) ago", rows[done])
    full = {c["id"]: c for c in env.ok("ps", "-a", "--format", "json").json()}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", full[done]["exited_at"])
    env.ok("unpause", db)


def test_bad_filter_is_a_usage_error(env):
    r = env.ctl("ps", "--filter", "colour=red")
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1 and "invalid filter" in r.err


# --- logs ------------------------------------------------------------------------------------------------------

def test_logs_tail_since_until_and_timestamps(env):
    id = env.name("lg")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", "echo one; echo two; sleep 1.2; echo three; echo err >&2")
    env.ok("wait", id)
    assert env.ok("logs", id).out == "one\ntwo\nthree\n"
    assert env.ok("logs", "--tail", "2", id).out == "three\n"  # stderr's "err" is the other last line
    r = ctl_bytes(env, "logs", "-t", id)
    out = r.stdout.splitlines()
    assert [line[31:] for line in out] == [b"one", b"two", b"three"]
    assert all(RFC3339_NANO.match(line) for line in out), out
    assert RFC3339_NANO.match(r.stderr) and r.stderr.endswith(b" err\n")
    third = out[2][:30].decode()
    assert env.ok("logs", "--since", third, id).out == "three\n"
    assert env.ok("logs", "--until", out[1][:30].decode(), id).out == "one\ntwo\n"
    assert env.ok("logs", "--since", "1h", id).out == "one\ntwo\nthree\n"
    assert env.ok("logs", "--since", str(int(time.time()) + 3600), id).out == ""
    bad = env.ctl("logs", "--since", "someday", id)
    assert bad.rc == 2 and "invalid time" in bad.err


# --- exec ------------------------------------------------------------------------------------------------------

def test_exec_env_workdir_and_user(env):
    id = run_sleeper(env, "ex")
    r = env.ctl("exec", "-e", "A=1", "-w", "/tmp", "-u", "1000:1001", id, "sh", "-c",
                'echo "$A $(pwd) $(id -u):$(id -g)"')
    assert (r.rc, r.out) == (0, "1 /tmp 1000:1001\n"), r.err
    assert env.ok("exec", "-u", "nobody", id, "id", "-un").out == "nobody\n"


# --- exit codes ------------------------------------------------------------------------------------------------

def test_run_exit_codes_127_126_and_125(env):
    r = env.ctl("run", "--rm", "busybox", "/no/such/command")
    assert r.rc == 127 and len(r.err.strip().splitlines()) == 1, r.err
    r = env.ctl("run", "--rm", "busybox", "/etc")
    assert r.rc == 126 and len(r.err.strip().splitlines()) == 1, r.err
    r = env.ctl("create", "busybox-nope", "true")
    assert r.rc == 125 and "no such image" in r.err
    assert env.ok("ps", "-a", "-q").out.split() == []


def test_exec_exit_codes_127_and_126(env):
    id = run_sleeper(env, "exc")
    assert env.ctl("exec", id, "/no/such/command").rc == 127
    assert env.ctl("exec", id, "/etc").rc == 126
    assert env.inspect(id)["status"] == "running"


# --- attach ----------------------------------------------------------------------------------------------------

def test_attach_detach_keys_leave_the_container_running(env):
    id = env.name("det")
    env.ok("run", "-d", "-i", "--name", id, "busybox", "sh", "-c", "while read l; do echo got:$l; done; echo eof")
    r = ctl_bytes(env, "attach", id, input=b"hello\n\x10\x11", timeout=30)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "got:hello" in env.ctl("logs", id).out, 10, "the line sent before detaching")
    assert env.inspect(id)["status"] == "running"
    assert "eof" not in env.ok("logs", id).out  # detaching does not close the container's stdin
    r = ctl_bytes(env, "attach", "--detach-keys", "ctrl-x,x", id, input=b"\x10\x11\n\x18x", timeout=30)
    assert r.returncode == 0
    wait_for(lambda: env.ctl("logs", id).out.count("got:") == 2, 10, "ctrl-p ctrl-q sent through as data")
    assert env.inspect(id)["status"] == "running"


# --- stats, version, info --------------------------------------------------------------------------------------

def test_stats_no_stream_prints_one_table(env):
    id = run_sleeper(env, "st")
    lines = env.ok("stats", "--no-stream", id).out.splitlines()
    assert lines[0].split()[:2] == ["CONTAINER", "ID"] and len(lines) == 2 and lines[1].split()[0] == id


def test_stats_refreshes_until_interrupted(env):
    id = run_sleeper(env, "sr")
    # SIGINT as a terminal gives it: a suite started in the background by a shell inherits SIGINT ignored, and
    # Python keeps an ignored SIGINT ignored
    p = subprocess.Popen([PY, "-m", "shimctl", "--address", env.sock, "stats", id], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        headers = 0
        while headers < 3:
            line = p.stdout.readline()  # type: ignore[union-attr]
            assert line, p.stderr.read()  # type: ignore[union-attr]
            headers += line.startswith("CONTAINER ID")
    finally:
        p.send_signal(signal.SIGINT)
        rc = p.wait(10)
    assert rc == 0


def test_version_and_info(env):
    v = env.ok("version", "--format", "json").json()
    m = v["manager"]
    assert v["client"]["version"] == m["version"] and m["api_version"] >= 1
    assert m["runtime"] == "runc" and re.match(r"\d+\.\d+", m["runtime_version"])
    text = env.ok("version").out
    assert "Client:" in text and f"Runtime:          runc {m['runtime_version']}" in text
    run_sleeper(env, "i1")
    p = run_sleeper(env, "i2")
    env.ok("pause", p)
    assert env.ctl("run", "--name", env.name("i3"), "busybox", "true").rc == 0
    env.ok("create", "--name", env.name("i4"), "busybox", "true")
    i = env.ok("info", "--format", "json").json()
    assert (i["containers"], i["running"], i["paused"], i["stopped"]) == (4, 1, 1, 2)
    assert (i["root"], i["state"], i["runtime"]) == (env.root, env.state, "runc")
    assert i["cgroup_version"] == (2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1)
    text = env.ok("info").out
    assert "Containers: 4" in text and f"Root Dir: {env.root}" in text
    env.ok("unpause", p)


def test_version_prints_the_client_without_a_manager(bare_env):
    started = time.monotonic()
    r = bare_env.ctl("version")
    assert time.monotonic() - started < 5
    assert r.rc == 125 and r.out.startswith("Client:") and len(r.err.strip().splitlines()) == 1
    assert "is shimd-manager running?" in r.err
    assert json.loads(bare_env.ctl("version", "--format", "json").out or "null") is None


def test_a_number_no_request_can_carry_is_a_usage_error_naming_its_flag():
    """Checked before any manager is asked (none runs here): a traceback from the encoder otherwise."""
    huge = "99999999999999999999"
    for args, flag in ((["update", "--pids-limit", huge, "x"], "--pids-limit"),
                       (["events", "--since", huge], "--since"),
                       (["run", "-d", "--shm-size", "1e400", "busybox"], "--shm-size")):
        r = subprocess.run([PY, "-m", "shimctl", "--address", "/nonexistent/shimd.sock", *args], capture_output=True,
                           text=True, cwd=REPO, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode in (2, 125) and flag in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r)
