"""The shim's new behaviour end to end through shimctl and the manager: /etc files, exec -e/-w/-u, exit codes 126
and 127, logs --tail/--timestamps, restart of an exited container."""

from __future__ import annotations

import os


def test_run_provides_etc_hostname_hosts_and_resolv_conf(env):
    r = env.ok("run", "--rm", "--name", env.name("h"), "busybox", "cat", "/etc/hostname", "/etc/hosts",
               "/etc/resolv.conf")
    lines = r.out.splitlines()
    assert lines[0] == env.name("h")
    assert "127.0.0.1\tlocalhost" in lines and f"127.0.1.1\t{env.name('h')}" in lines
    assert not any(ln.startswith("nameserver 127.") for ln in lines)


def test_exec_env_workdir_and_user(env):
    id = env.name("x")
    env.ok("run", "-d", "--name", id, "-e", "A=container", "busybox", "sleep", "1000")
    r = env.ok("exec", "-e", "A=exec", "-e", "B=2", "-w", "/tmp", "-u", "nobody", id, "sh", "-c",
               "echo $A $B; pwd; id -u; echo $PATH")
    assert r.out.splitlines()[:3] == ["exec 2", "/tmp", "65534"]
    assert "/bin" in r.out.splitlines()[3]
    bad = env.ctl("exec", "-u", "ghost", id, "true")
    assert bad.rc != 0 and "ghost" in bad.err


def test_a_missing_command_exits_127_and_a_directory_126(env):
    assert env.ctl("run", "--rm", "busybox", "nocmd").rc == 127
    assert env.ctl("run", "--rm", "busybox", "/etc").rc == 126
    id = env.name("m")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    r = env.ctl("exec", id, "nocmd")
    assert r.rc == 127, r.err
    assert env.ctl("exec", id, "/etc").rc == 126


def test_logs_tail_and_timestamps(env):
    id = env.name("l")
    env.ok("run", "--name", id, "busybox", "sh", "-c", "for i in 1 2 3 4 5; do echo $i; done")
    assert env.ok("logs", "--tail", "2", id).out == "4\n5\n"
    stamped = env.ok("logs", "-t", "--tail", "1", id).out
    assert stamped.endswith(" 5\n") and stamped[:4].isdigit()


def test_restart_runs_an_exited_container_again_and_appends_to_its_log(env):
    id = env.name("r")
    assert env.ctl("run", "--name", id, "busybox", "sh", "-c", "echo hi; exit 3").rc == 3
    env.ok("restart", id)
    assert env.ok("wait", id).out.strip() == "3"
    assert env.ok("logs", id).out == "hi\nhi\n"
    assert os.path.isfile(os.path.join(env.root, "containers", id, "hostname"))
