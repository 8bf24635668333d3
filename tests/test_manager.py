"""The manager's promise: kill it at any instant, start it again, and nothing is lost, leaked or reported twice.
Also its daemon behaviour: events, sd_notify, configuration, access control, concurrency and hung shims."""

from __future__ import annotations

import json
import os
import pwd
import queue
import signal
import socket
import struct
import subprocess
import threading
import time

import psutil
import pytest

from manager.faults import POINTS
from shimproto.client import Client
from shimproto.errors import DeadlineExceeded
from tests.harness import OUTAGE, PY, REPO, our_processes, wait_for

EXIT_ON_USR1 = "trap 'exit 7' USR1; echo ready; while true; do sleep 0.05; done"


def events(env, **kw) -> list[dict]:
    return Client(env.sock).call("events", {"since": 0, "timeout": 0, **kw})["events"]


def test_exit_while_the_manager_is_down_past_15s_is_reported_once_with_its_code(env):
    id = env.name("long")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", EXIT_ON_USR1)
    wait_for(lambda: "ready" in env.ctl("logs", id).out, 10, "the trap")
    pid = env.inspect(id)["pid"]
    env.kill_manager()
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: not psutil.pid_exists(pid), 10, "the exit")
    time.sleep(OUTAGE)  # the scenario itself: the manager stays down (containerd drops exits after ~15s)
    env.start_manager()
    assert env.ok("wait", id).out.strip() == "7"
    out = env.ok("events", "--since", "0", "--no-follow", "--format", "json").out
    exits = [e for e in map(json.loads, out.splitlines()) if e["type"] == "exit" and e["id"] == id]
    assert len(exits) == 1 and exits[0]["exit"]["code"] == 7
    # a second restart replays nothing twice
    env.kill_manager()
    env.start_manager()
    again = [e for e in events(env) if e["type"] == "exit" and e["id"] == id]
    assert again == exits


def test_events_stream_is_exactly_once_and_in_order_across_restarts(env):
    ids = [env.name(f"e{i}") for i in range(3)]
    seen: list[dict] = []
    for i, id in enumerate(ids):
        env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", f"sleep {i * 0.2}; exit {i + 1}")
        env.kill_manager()
        env.start_manager()
    for i, id in enumerate(ids):
        assert env.ok("wait", id).out.strip() == str(i + 1)
    env.kill_manager()
    env.start_manager()
    env.ok("rm", *ids)
    since = 0
    while batch := Client(env.sock).call("events", {"since": since, "timeout": 0})["events"]:
        seen += batch
        since = batch[-1]["gseq"]
    assert [e["gseq"] for e in seen] == list(range(1, len(seen) + 1))
    for id in ids:
        mine = [(e["seq"], e["type"]) for e in seen if e["id"] == id]
        assert [t for _, t in mine] == ["create", "start", "exit", "delete"], mine
        assert [s for s, _ in mine] == [1, 2, 3, 4]


class Lines:
    """A child's stdout read line by line in a thread, so a test can wait for the next line with a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.t = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self.t.start()

    def _pump(self, f) -> None:
        for line in f:
            self.q.put(line)
        self.q.put("")  # EOF

    def next(self, timeout: float, what: str) -> str:
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from None
        assert line, f"the stream ended while waiting for {what}"
        return line


# The claim: the manager holds a pidfd of each shim and is woken by the shim's death. Without it, the dead shim is
# noticed only when its event long-poll (EVENT_POLL, 30 s) or some call to it fails; this bound tells them apart
# with room for a loaded CI machine (the exit also waits for the offline cleanup, a `shimd delete` run).
NOTICED_WITHIN = 5.0


def test_a_dead_shim_is_noticed_at_once_and_its_container_killed(env):
    id = env.name("pidfd")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    info = env.inspect(id)
    follower = subprocess.Popen([PY, "-m", "shimctl", "--address", env.sock, "events", "--format", "json",
                                 "--filter-id", id], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        lines = Lines(follower)
        # subscribed: the follower prints an event we cause after it took its starting point ("now"); an exec
        # made before that is never shown, so cause one until it is (bounded)
        for _ in range(20):
            env.ok("exec", id, "true")
            try:
                ev = json.loads(lines.next(2, "an exec's event at the follower"))
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("the follower never showed an exec's events")
        while ev["type"] != "exit" or not ev["exec_id"]:
            assert ev["exec_id"], f"the container's event before its shim was killed: {ev}"
            ev = json.loads(lines.next(20, "the exec's exit at the follower"))
        while not lines.q.empty():  # the events of execs the follower caught late
            assert json.loads(lines.next(1, "an exec's event"))["exec_id"]
        t0 = time.monotonic()
        os.kill(info["shim_pid"], signal.SIGKILL)
        line = json.loads(lines.next(30, "the container's exit event after its shim was killed"))
        took = time.monotonic() - t0
    finally:
        follower.kill()
        follower.wait()
    assert line["type"] == "exit" and line["exit"]["reason"] == "shim-lost" and line["exit"]["code"] == 255, line
    assert not line["exec_id"], line
    assert took < NOTICED_WITHIN, f"shim SIGKILL -> exit event at a client took {took:.2f}s (> {NOTICED_WITHIN}s)"
    print(f"shim SIGKILL -> exit event at a client: {took * 1000:.0f} ms")
    wait_for(lambda: not psutil.pid_exists(info["pid"]), 10, "the orphaned container to be killed")
    assert env.inspect(id)["status"] == "stopped"


@pytest.mark.parametrize("point", [p for p in POINTS if p.startswith(("create", "delete")) and p != "create:failed"])
def test_a_manager_killed_at_any_step_of_create_or_delete_converges(bare_env, point):
    env = bare_env
    id = env.name("f")
    op, _ = point.split(":")
    if op == "delete":
        env.start_manager()
        env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
        env.kill_manager(signal.SIGTERM)
    env.start_manager(env={"SHIMD_FAULTS": point})
    if op == "create":
        rc = env.ctl_killing_the_manager("run", "-d", "--name", id, "busybox", "sleep", "100000")
    else:
        rc = env.ctl_killing_the_manager("rm", "-f", id)
    assert rc == -signal.SIGKILL, f"{point} was not reached"
    env.start_manager()
    if point in ("create:created", "create:started"):
        # the call carried a request key and the shim holds the container: it is kept for a client that repeats
        # the call (tests/test_repeat.py); this one gave up, so the container is there as if the call had answered
        assert env.inspect(id)["status"] == ("running" if point == "create:started" else "created")
        env.ok("rm", "-f", id)
    # converged: a create is rolled back (or kept, above), a delete rolled forward; nothing else is left anywhere
    assert env.ctl("inspect", id).rc == 1
    assert env.container_ids_on_disk() == []
    assert os.listdir(os.path.join(env.state, "shims")) == []
    wait_for(lambda: not [p for p in our_processes(env.base) if "manager" not in " ".join(p.cmdline())], 10,
             "the shim and container to be gone")
    assert os.listdir(os.path.join(env.state, "runc")) == []
    kinds = [e["type"] for e in events(env, id=id)]
    assert kinds == [] or kinds[-1] == "delete"
    # and the id can be used again
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    assert env.inspect(id)["status"] == "running"


def test_a_shim_launched_just_before_the_manager_died_is_not_left_running(env):
    """The manager died after launching a shim but before the shim wrote its pid file: the next manager rolls the
    create back without knowing that shim's pid. Cleaning up its directory must not leave it running unreachable."""
    id = env.name("early")
    env.kill_manager(signal.SIGKILL)
    shim_dir = os.path.join(env.state, "shims", id)
    subprocess.run([PY, "-m", "shimd", "start", "--id", id, "--state", shim_dir, "--runtime", "runc",
                    "--runtime-root", os.path.join(env.state, "runc")], cwd=REPO, check=True, timeout=30)
    pid_file = os.path.join(shim_dir, "shim.pid")
    wait_for(lambda: os.path.exists(pid_file), 10, "the shim to write its pid")
    with open(pid_file) as f:
        pid = int(f.read())
    os.unlink(pid_file)  # as if the manager had looked before the shim wrote it
    os.makedirs(os.path.join(env.state, "intents"), exist_ok=True)
    with open(os.path.join(env.state, "intents", id), "w") as f:
        f.write("create")
    env.start_manager()
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
             "the shim to be killed")
    assert not os.path.exists(shim_dir)
    assert env.ctl("inspect", id).rc == 1
    env.ok("run", "--rm", "--name", id, "busybox", "true")  # and the id is free


@pytest.mark.parametrize("point", ["restore:scanned", "restore:half"])
def test_a_manager_killed_during_restore_converges(env, point):
    ids = [env.name(f"r{i}") for i in range(4)]
    for id in ids:
        env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    pids = {id: env.inspect(id)["pid"] for id in ids}
    env.kill_manager()
    env.start_manager.__func__  # noqa: B018 (documentation: the faulty start below must die)
    proc = subprocess.Popen([PY, "-m", "manager", "--root", env.root, "--state", env.state], cwd=REPO,
                            env={**os.environ, "SHIMD_FAULTS": point}, stderr=subprocess.DEVNULL)
    assert proc.wait(30) == -signal.SIGKILL
    env.start_manager()
    for id in ids:
        info = env.inspect(id)
        assert (info["status"], info["pid"]) == ("running", pids[id])


def test_restore_is_ready_for_systemd_only_after_restore(bare_env):
    env = bare_env
    env.start_manager()
    id = env.name("n")
    env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    shim = env.inspect(id)["shim_pid"]
    env.kill_manager()
    path = os.path.join(env.base, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    try:
        env.start_manager(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        msgs = []
        while not any("READY=1" in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        ready = next(m for m in msgs if "READY=1" in m)
        assert "STATUS=serving 1 containers (1 running" in ready
        wd = [sock.recv(4096).decode() for _ in range(3)]
        assert all("WATCHDOG=1" in m for m in wd)
        env.kill_manager(signal.SIGTERM)
        while "STOPPING=1" not in (m := sock.recv(4096).decode()):
            assert "WATCHDOG" in m
    finally:
        sock.close()
    env.start_manager()
    # the manager's notify socket never leaks to the shim, runc or the container
    for pid in (shim, env.inspect(id)["pid"]):
        assert b"NOTIFY_SOCKET" not in open(f"/proc/{pid}/environ", "rb").read()


def test_config_file_and_flags(bare_env):
    env = bare_env
    conf = os.path.join(env.base, "config.toml")
    with open(conf, "w") as f:
        f.write(f'root = "{env.root}"\nstate = "/nonexistent/overridden"\n'
                '[container]\nlog_max_size = "64k"\nlog_max_files = 3\nstop_timeout = 0.5\n')
    env.start_manager("--config", conf)  # harness passes --root/--state flags too: flags win
    id = env.name("cfg")
    env.ok("run", "-d", "--name", id, "busybox", "sh", "-c", "seq 1 200000; sleep 100000")
    wait_for(lambda: os.path.exists(os.path.join(env.root, "containers", id, "container.log.2")), 30,
             "rotation with the configured size")
    assert not os.path.exists(os.path.join(env.root, "containers", id, "container.log.3"))
    t0 = time.monotonic()
    env.ok("stop", id)  # sleep as PID 1 ignores TERM: killed after the configured 0.5 s
    assert 0.4 < time.monotonic() - t0 < 8
    assert env.inspect(id)["exit_code"] == 137
    for bad, why in (('root = 5\n', "root must be a string"), ("[container]\nlog_max_files = 1\n", ">= 2"),
                     ("nonsense = 1\n", "unknown keys"), ("x = [\n", "config file"),
                     ('memory_merge = "yes"\n', "memory_merge must be true or false")):
        with open(conf, "w") as f:
            f.write(bad)
        r = subprocess.run([PY, "-m", "manager", "--config", conf, "--state", os.path.join(env.base, "s2")],
                           capture_output=True, text=True, cwd=REPO, timeout=30)
        assert r.returncode == 1 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_only_root_may_use_the_api(env):
    assert os.stat(env.sock).st_mode & 0o777 == 0o600
    assert os.stat(env.state).st_mode & 0o002 == 0 and os.stat(env.root).st_mode & 0o002 == 0
    nobody = pwd.getpwnam("nobody")
    r = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                        PY, "-m", "shimctl", "--address", env.sock, "ps"],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"shimctl: permission denied on the shimd manager socket {env.sock}: run as root or as a member of the "
        f"group set as socket_group in the manager's config"]
    assert env.ctl("ps").rc == 0


def test_fifty_clients_at_once_and_a_hung_shim_blocks_nobody(env):
    hung, other = env.name("hung"), env.name("ok")
    for id in (hung, other):
        env.ok("run", "-d", "--name", id, "busybox", "sleep", "100000")
    errors: list[str] = []
    together = threading.Barrier(50, timeout=60)

    def client(n: int) -> None:
        c = Client(env.sock, timeout=30)
        try:
            together.wait()  # all fifty connected and calling at once, not one after another
            for _ in range(5):
                assert {x["id"] for x in c.call("list", {"all": True})} == {hung, other}
                assert c.call("inspect", {"id": other})["status"] == "running"
                try:
                    c.call("inspect", {"id": f"nosuch{n}"})
                    errors.append("inspect of an unknown id succeeded")
                except Exception as e:
                    assert "no such container" in str(e)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [t for t in threads if t.is_alive()] == [], "clients still waiting after 120 s"
    assert errors == []

    # a hung shim: its call is held in the manager until SHIM_TIMEOUT (10 s) runs out; meanwhile calls about the
    # other container, the listing, and questions about the hung one itself are sent concurrently, each on its own
    # connection, and must all be answered while that call is still pending. A manager that served calls one at a
    # time, or queued them behind the hung shim, would answer them only after it.
    shim = env.inspect(hung)["shim_pid"]
    os.kill(shim, signal.SIGSTOP)
    try:
        queued_at_shim = unread_bytes(shim)
        hung_call: dict = {}
        hung_done = threading.Event()

        def kill_the_hung_one() -> None:
            c = Client(env.sock, timeout=60)
            t0 = time.monotonic()
            try:
                c.call("kill", {"id": hung, "signal": "TERM"})
                hung_call["error"] = None
            except Exception as e:  # noqa: BLE001
                hung_call["error"] = e
            finally:
                hung_call["took"] = time.monotonic() - t0
                hung_done.set()
                c.close()

        hung_thread = threading.Thread(target=kill_the_hung_one)
        hung_thread.start()
        # the manager has passed the kill on: it sits unread in the stopped shim's socket
        wait_for(lambda: unread_bytes(shim) > queued_at_shim or hung_done.is_set(), 30,
                 "the kill of the hung shim to reach its socket")  # a loaded machine: the claim is below
        assert not hung_done.is_set(), f"the call to the hung shim returned at once: {hung_call}"

        def inspect_other(c: Client) -> None:
            assert c.call("inspect", {"id": other})["status"] == "running"

        def list_all(c: Client) -> None:
            assert {x["id"] for x in c.call("list", {"all": True})} == {hung, other}

        def signal_other(c: Client) -> None:  # goes through the other shim; sleep as PID 1 ignores TERM
            c.call("kill", {"id": other, "signal": "TERM"})

        def inspect_hung(c: Client) -> None:  # answered from the cache once the shim's short probe gives up
            info = c.call("inspect", {"id": hung})
            assert info["status"] == "running" and "did not answer" in info["error"], info

        calls = [inspect_other, list_all, signal_other, inspect_hung] * 3
        done: dict[int, tuple[float, str | None]] = {}

        def one(n: int) -> None:
            c = Client(env.sock, timeout=60)
            t0 = time.monotonic()
            err = None
            try:
                calls[n](c)
            except Exception as e:  # noqa: BLE001
                err = f"{calls[n].__name__}: {e!r}"
            finally:
                c.close()
            done[n] = (time.monotonic() - t0, err)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        pending = hung_thread.is_alive() and not hung_done.is_set()
        assert len(done) == len(calls), f"{len(calls) - len(done)} concurrent calls never returned"
        assert [err for _, err in done.values() if err] == []
        assert pending, (f"the call to the hung shim ended ({hung_call}) before the concurrent calls did "
                         f"(slowest {max(t for t, _ in done.values()):.1f}s): they were not shown to run beside it")
        assert max(t for t, _ in done.values()) < 8, f"calls beside a hung shim were slow: {sorted(done.values())}"

        hung_thread.join(60)
        assert hung_done.is_set()
        print(f"\n{len(calls)} concurrent calls answered in at most {max(t for t, _ in done.values()):.2f}s while "
              f"the kill of the hung shim waited {hung_call['took']:.1f}s (unread at the shim: "
              f"{queued_at_shim} -> {unread_bytes(shim)} bytes)")
        assert isinstance(hung_call["error"], DeadlineExceeded) and "may be hung" in str(hung_call["error"]), \
            hung_call
        c = Client(env.sock, timeout=60)
        try:
            assert c.call("inspect", {"id": other})["status"] == "running"
        finally:
            c.close()
    finally:
        os.kill(shim, signal.SIGCONT)


def unread_bytes(pid: int) -> int:
    """Bytes waiting unread in the receive queues of pid's unix sockets (what `ss -x` shows as Recv-Q, asked of the
    kernel directly: iproute2 need not be installed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return sum(n for ino, n in unix_receive_queues().items() if ino in inodes)


def unix_receive_queues() -> dict[int, int]:
    """inode -> bytes in the receive queue of every unix socket on the host (NETLINK_SOCK_DIAG, UDIAG_SHOW_RQLEN)."""
    sock_diag_by_family, nlm_f_request, nlm_f_dump, nlmsg_error, nlmsg_done = 20, 1, 0x300, 2, 3
    udiag_show_rqlen, unix_diag_rqlen, netlink_sock_diag = 0x10, 4, 4
    req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, udiag_show_rqlen, 0, 0)
    msg = struct.pack("=IHHII", 16 + len(req), sock_diag_by_family, nlm_f_request | nlm_f_dump, 1, 0) + req
    out: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_sock_diag) as s:
        s.sendall(msg)
        while True:
            data = s.recv(1 << 16)
            off = 0
            while off < len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == nlmsg_done:
                    return out
                if kind == nlmsg_error:
                    raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "sock_diag dump of unix sockets")
                ino = struct.unpack_from("=I", data, off + 20)[0]  # nlmsghdr (16), family/type/state/pad (4)
                attr = off + 32  # after unix_diag_msg (16)
                while attr + 4 <= off + length:
                    alen, atype = struct.unpack_from("=HH", data, attr)
                    if atype == unix_diag_rqlen:
                        out[ino] = struct.unpack_from("=I", data, attr + 4)[0]
                    attr += max((alen + 3) & ~3, 4)
                off += (length + 3) & ~3


def test_the_manager_lifts_its_open_files_limit_to_the_hard_one(bare_env):
    env = bare_env
    env.start_manager(wrap=["prlimit", "--nofile=1024:4096", "--"])
    line = next(ln for ln in open(f"/proc/{env.proc.pid}/limits") if ln.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line
