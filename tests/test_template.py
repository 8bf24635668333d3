"""The warm template (shimd/template.py, manager/launcher.py's Template): shims forked from it are the shims a cold
`python -m shimd start` makes, the template holds nothing and starts nothing before it forks, it is restarted
when killed, dies with its manager, and a manager without a template (or with a dead one) still starts shims cold.

`kill_template(env)` is the fault the chaos suite can inject: it SIGKILLs the template of env's manager at
whatever moment it is called and returns the pid it killed (0 when none was serving)."""

from __future__ import annotations

import os
import select
import signal
import threading

import psutil

from shimproto.client import Client
from tests.harness import spares_of, wait_for


def ping(env) -> dict:
    c = Client(env.sock, timeout=10)
    try:
        return c.call("ping", {})  # type: ignore[return-value]
    finally:
        c.close()


def template_pid(env, timeout: float = 15.0) -> int:
    """The pid of env's serving template, waiting for one (after a start or a restart)."""
    return wait_for(lambda: ping(env)["template"], timeout, "the template to serve")  # type: ignore[return-value]


def kill_template(env) -> int:
    """SIGKILL env's template now, whatever it is doing (the chaos fault); the pid killed, 0 if none served."""
    pid = int(ping(env)["template"])
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return 0
    return pid


def wait_exit(pid: int, timeout: float = 10.0) -> bool:
    """Has pid exited within timeout (seen through a pidfd, reaping nothing)?"""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def shared_dirty_kib(pid: int) -> int:
    """Anonymous memory pid shares dirty with another process: with its template, for a forked shim."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Shared_Dirty:"))


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def is_subreaper_of_init(env, id: str) -> bool:
    info = env.inspect(id)
    return psutil.Process(info["pid"]).ppid() == info["shim_pid"]


def test_the_template_has_one_thread_and_no_zmq_context_or_event_loop(env):
    t = template_pid(env)
    assert os.listdir(f"/proc/{t}/task") == [str(t)]
    fds = {fd: os.readlink(f"/proc/{t}/fd/{fd}") for fd in os.listdir(f"/proc/{t}/fd")}
    # zmq contexts and asyncio loops show as eventfd/eventpoll; the manager's sockets and files would show too
    assert not [x for x in fds.values() if "eventfd" in x or "eventpoll" in x], fds
    # the manager's control socket, and the link to its spare once it has made one
    assert 1 <= len([x for x in fds.values() if x.startswith("socket:")]) <= 2, fds
    assert not [x for x in fds.values() if env.base in x], fds
    assert psutil.Process(t).ppid() == env.manager_pid()
    assert env.base not in " ".join(psutil.Process(t).cmdline())  # the leak checks find a test's processes so


def test_a_shim_forked_from_the_template_is_what_a_cold_shim_is(env):
    t = template_pid(env)
    id = env.name("warm")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    info = env.inspect(id)
    shim = psutil.Process(info["shim_pid"])
    # forked from the template: it still shares the template's written pages (a cold shim shares none)
    assert shared_dirty_kib(shim.pid) > 2048
    assert shim.ppid() not in (t, env.manager_pid())  # double fork: the template is never its parent
    assert os.getsid(shim.pid) not in (os.getsid(t), os.getsid(env.manager_pid()))
    cmd = shim.cmdline()  # the cold shim's command line, which the manager and `shimd delete` look for
    assert cmd[1:5] == ["-m", "shimd", "start", "--id"] and cmd[5] == id and env.state in cmd[7]
    assert os.readlink(f"/proc/{shim.pid}/ns/mnt") != os.readlink(f"/proc/{env.manager_pid()}/ns/mnt")
    assert is_subreaper_of_init(env, id)
    assert [os.readlink(f"/proc/{shim.pid}/fd/{n}") for n in (0, 1, 2)] == ["/dev/null"] * 3
    assert not socket_inodes(shim.pid) & socket_inodes(t)  # holds no end of the template's socket
    assert len(os.listdir(f"/proc/{t}/task")) == 1
    # the same code paths after start: exec, logs, stop, rm
    assert env.ok("exec", id, "echo", "hi").out == "hi\n"
    env.ok("stop", "-t", "1", id)
    assert env.inspect(id)["exit_code"] in (137, 143)
    env.ok("rm", id)
    assert wait_exit(shim.pid)


def test_shims_survive_sigkill_of_the_template_and_of_the_manager(env):
    id = env.name("survivor")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    before = env.inspect(id)
    t = kill_template(env)
    assert t and wait_exit(t)
    t2 = wait_for(lambda: ping(env)["template"] not in (0, t) and ping(env)["template"], 15,
                  "the manager to restart its template")
    assert psutil.pid_exists(before["shim_pid"]) and env.inspect(id)["status"] == "running"
    env.kill_manager(signal.SIGKILL)
    assert wait_exit(t2)  # the template dies with its manager (parent-death signal)
    assert psutil.pid_exists(before["shim_pid"]) and psutil.pid_exists(before["pid"])
    env.start_manager()
    after = env.inspect(id)
    assert (after["status"], after["shim_pid"], after["pid"]) == ("running", before["shim_pid"], before["pid"])
    other = env.name("after")
    env.ok("run", "-d", "--name", other, "busybox", "sleep", "1000")
    assert shared_dirty_kib(env.inspect(other)["shim_pid"]) > 2048  # from the new manager's template
    env.ok("rm", "-f", id, other)


def test_a_launch_queued_at_a_template_that_is_killed_starts_cold(env):
    t = template_pid(env)
    os.kill(t, signal.SIGSTOP)  # the request waits in its socket, the pipe's write end with it
    id = env.name("queued")
    out: list = []
    runner = threading.Thread(target=lambda: out.append(env.ctl("run", "-d", "--name", id, "busybox", "sleep",
                                                                "1000")))
    runner.start()
    wait_for(lambda: id in env.ctl("ps", "-a").out or "create" in _intents(env), 10, "the create to be under way")
    os.kill(t, signal.SIGKILL)  # its queue and the pipe in it go with it: EOF, no report
    runner.join(30)
    assert out and out[0].rc == 0, out and out[0].err
    info = env.inspect(id)
    assert info["status"] == "running" and is_subreaper_of_init(env, id)
    assert "starting it cold" in env.manager_log()
    assert template_pid(env) != t
    env.ok("rm", "-f", id)


def _intents(env) -> str:
    d = os.path.join(env.state, "intents")
    return " ".join(open(os.path.join(d, n)).read() for n in os.listdir(d)) if os.path.isdir(d) else ""


def test_without_a_template_shims_start_cold_and_behave_the_same(bare_env):
    env = bare_env
    env.start_manager(env={"SHIMD_TEMPLATE": "0"})
    assert ping(env)["template"] == 0
    assert [p for p in psutil.Process(env.manager_pid()).children() if "template" in p.cmdline()] == []
    id = env.name("cold")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    info = env.inspect(id)
    assert shared_dirty_kib(info["shim_pid"]) < 1024  # not forked from anything that wrote pages
    assert os.readlink(f"/proc/{info['shim_pid']}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert is_subreaper_of_init(env, id)
    assert env.ok("exec", id, "echo", "cold").out == "cold\n"
    env.ok("rm", "-f", id)


def test_a_clean_stop_kills_the_template_and_leaves_the_shims(env):
    t = template_pid(env)
    id = env.name("stays")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    shim = env.inspect(id)["shim_pid"]
    assert env.kill_manager(signal.SIGTERM) == 0
    assert wait_exit(t)
    assert psutil.pid_exists(shim)
    env.start_manager()
    assert env.inspect(id)["status"] == "running"
    env.ok("rm", "-f", id)


def test_a_request_the_template_reads_after_the_manager_gave_up_forks_no_shim(env):
    t = template_pid(env)
    os.kill(t, signal.SIGSTOP)  # starved past the launch's deadline
    late = env.name("late")
    r = env.ctl("run", "-d", "--name", late, "busybox", "sleep", "1000")
    assert r.rc == 125 and "did not report ready" in r.err, r.err
    os.kill(t, signal.SIGCONT)
    after = env.name("after")  # read after the stale request: when this one runs, the stale one was dropped
    env.ok("run", "-d", "--name", after, "busybox", "sleep", "1000")
    assert shared_dirty_kib(env.inspect(after)["shim_pid"]) > 2048
    assert [c["id"] for c in env.ok("ps", "-a", "--format", "json").json()] == [after]
    assert not [p for p in psutil.process_iter(["cmdline"]) if late in (p.info["cmdline"] or [])]
    assert ping(env)["template"] == t
    env.ok("rm", "-f", after)


def test_the_template_keeps_a_detached_spare_that_becomes_the_next_shim(env):
    t = template_pid(env)
    # found once it has detached (its command line is set just before)
    spare = wait_for(lambda: [p for p in spares_of(env) if p.ppid() not in (t, env.manager_pid())
                              and os.getsid(p.pid) != os.getsid(t)], 10, "a detached spare shim")[0]
    assert os.getsid(spare.pid) not in (os.getsid(t), os.getsid(env.manager_pid()))
    # its mount namespace is copied when a request comes, so it holds every host mount made until then
    assert os.readlink(f"/proc/{spare.pid}/ns/mnt") == os.readlink(f"/proc/{t}/ns/mnt")
    assert [os.readlink(f"/proc/{spare.pid}/fd/{n}") for n in (0, 1, 2)] == ["/dev/null"] * 3
    assert len(os.listdir(f"/proc/{spare.pid}/task")) == 1  # no zmq context, no loop before its request
    id = env.name("spare")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    info = env.inspect(id)
    assert info["shim_pid"] == spare.pid  # the spare became this container's shim
    cmd = spare.cmdline()
    assert cmd[1:5] == ["-m", "shimd", "start", "--id"] and cmd[5] == id
    assert is_subreaper_of_init(env, id)
    assert os.readlink(f"/proc/{spare.pid}/ns/mnt") != os.readlink(f"/proc/{t}/ns/mnt")
    assert not socket_inodes(spare.pid) & socket_inodes(t)
    assert env.ok("exec", id, "echo", "hi").out == "hi\n"
    nxt = wait_for(lambda: spares_of(env), 10, "the next spare")[0]
    assert nxt.pid != spare.pid
    env.ok("rm", "-f", id)


def test_an_idle_spare_exits_with_its_template_and_a_dead_spare_costs_nothing(env):
    t = template_pid(env)
    spare = wait_for(lambda: spares_of(env), 10, "a spare shim")[0]
    os.kill(spare.pid, signal.SIGKILL)  # the next request finds it gone and is forked as before
    assert wait_exit(spare.pid)
    id = env.name("nospare")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    assert env.inspect(id)["status"] == "running" and is_subreaper_of_init(env, id)
    assert "starting it cold" not in env.manager_log()  # forked by the template, not cold
    spare = wait_for(lambda: spares_of(env), 10, "a new spare")[0]
    os.kill(t, signal.SIGKILL)
    assert wait_exit(spare.pid)  # its link to the template closed
    assert psutil.pid_exists(env.inspect(id)["shim_pid"])
    env.ok("rm", "-f", id)


def test_without_spares_shims_are_forked_on_request(bare_env):
    env = bare_env
    env.start_manager(env={"SHIMD_SPARE": "0"})
    template_pid(env)
    id = env.name("direct")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "1000")
    assert spares_of(env) == []
    assert shared_dirty_kib(env.inspect(id)["shim_pid"]) > 2048 and is_subreaper_of_init(env, id)
    env.ok("rm", "-f", id)
