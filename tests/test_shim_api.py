"""The shim's own API, driven directly (no manager): one shim per test in its own temp --state, launched as the
manager launches it, talked to with shimproto.rpc.Client. Covers the one create request (ShimCreate), the /etc
files, exec -e/-w/-u, commands not found or not invokable, log tail/since/until/timestamps, repeated calls by key,
and restart. Every test proves the shim, the container and its mounts and runtime state are gone afterwards."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from shimproto.errors import CannotInvoke, CommandNotFound, InvalidArgument, InvalidState
from shimproto.rpc import Client
from shimproto.spec import ContainerSpec, ShimCreate
from tests.harness import PY, REPO, leftovers, new_env, our_processes, remove_base, tag_of, wait_for


class Shim:
    def __init__(self, base: str, id: str) -> None:
        self.base, self.id = base, id
        self.state = os.path.join(base, "state", "shims", id)
        self.runc_root = os.path.join(base, "state", "runc")
        self.dir = os.path.join(base, "root", "containers", id)
        os.makedirs(self.state, mode=0o711)
        os.makedirs(self.dir, mode=0o711)
        r, w = os.pipe()
        subprocess.run([PY, "-m", "shimd", "start", "--id", id, "--state", self.state, "--runtime-root",
                        self.runc_root, "--ready-fd", str(w)], pass_fds=(w,), check=True, cwd=REPO,
                       stdin=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            line = f.readline().strip()
        assert line.startswith("ok "), line
        self.pid = int(line.split()[1])
        self.client = Client(os.path.join(self.state, "shim.sock"), timeout=30)

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "container.log")

    def call(self, method: str, **params: object) -> object:
        return self.client.call(method, params, idempotent=method in ("wait", "logs", "state"))

    def create(self, args: list[str], **spec: object) -> dict:
        from manager import images

        lower = images.resolve(os.path.join(self.base, "root"), "busybox")
        req = ShimCreate(spec=ContainerSpec(args=args, image="busybox", id=self.id, **spec),  # type: ignore[arg-type]
                         lower=lower, upper=os.path.join(self.dir, "fs", "upper"),
                         work=os.path.join(self.dir, "fs", "work"), log_path=self.log_path,
                         cgroups_path=f"/shimd/{self.id}", files_dir=self.dir)
        return self.call("create", **req.to_wire())  # type: ignore[return-value]

    def wait(self, exec_id: str = "") -> dict:
        while True:
            r = self.call("wait", exec_id=exec_id, timeout=20)
            if r["exited"]:  # type: ignore[index]
                return r["exit"]  # type: ignore[index]

    def output(self, exec_id: str = "", **opts: object) -> bytes:
        r = self.call("logs", exec_id=exec_id, **opts)
        return b"".join(rec[1] for rec in r["records"])  # type: ignore[index]

    def run(self, *args: str, **params: object) -> tuple[dict, bytes]:
        """exec args attached, wait for it: (exit, its output)."""
        eid = f"e{time.monotonic_ns()}"
        self.call("exec", exec_id=eid, args=list(args), attach=True, **params)
        exit = self.wait(eid)
        return exit, self.output(eid)

    def close(self) -> None:
        try:
            self.client.call("shutdown", {"force": True}, timeout=30)
        except Exception:
            pass
        self.client.close()
        subprocess.run([PY, "-m", "shimd", "delete", "--id", self.id, "--state", self.state, "--runtime-root",
                        self.runc_root], cwd=REPO, capture_output=True)


@pytest.fixture
def shim():
    env = new_env()
    shims: list[Shim] = []

    def make(suffix: str = "c") -> Shim:
        s = Shim(env.base, f"{tag_of(env.base)}-{suffix}")
        shims.append(s)
        return s

    yield make
    for s in shims:
        s.close()
    wait_for(lambda: not our_processes(env.base), 15, "shims and containers to exit")
    assert leftovers(env.base) == []
    remove_base(env.base)


# --- one request model, /etc files ------------------------------------------------------------------------------

def test_create_takes_the_shim_create_request_and_provides_hostname_hosts_and_resolv_conf(shim):
    s = shim()
    s.create(["/bin/cat", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"], env=["A=1"], hostname="box1")
    s.call("start")
    assert s.wait()["code"] == 0
    out = s.output().decode()
    assert out.startswith("box1\n127.0.0.1\tlocalhost\n")
    assert "::1\tlocalhost ip6-localhost ip6-loopback\n" in out and "ff02::2\tip6-allrouters\n" in out
    assert "127.0.1.1\tbox1\n" in out
    with open("/etc/resolv.conf") as f:
        host = [ln for ln in f.read().splitlines() if ln.startswith("nameserver")]
    for ln in host:
        assert (ln in out) != ln.split()[1].startswith(("127.", "::1")), ln
    for name in ("hostname", "hosts", "resolv.conf"):
        assert os.path.isfile(os.path.join(s.dir, name))


def test_empty_hostname_is_the_container_id_and_empty_env_the_default_path(shim):
    s = shim()
    s.create(["sh", "-c", "hostname; echo $PATH"])
    s.call("start")
    s.wait()
    assert s.output().decode().splitlines() == [s.id, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_create_refuses_a_request_in_the_old_shape(shim):
    s = shim()
    with pytest.raises(InvalidArgument, match="spec"):
        s.call("create", lower="/", upper="/u", work="/w", log_path="/l", args=["true"])


# --- commands that cannot run: 127 / 126 ------------------------------------------------------------------------

@pytest.mark.parametrize("args,error", [(["nocmd"], CommandNotFound), (["/nope"], CommandNotFound),
                                        (["/etc"], CannotInvoke), (["/etc/passwd"], CannotInvoke)])
def test_a_command_not_found_or_not_invokable_is_a_typed_error_at_create(shim, args, error):
    s = shim()
    with pytest.raises(error, match=args[0]):
        s.create(args)


def test_an_exec_of_a_missing_command_is_command_not_found(shim):
    s = shim()
    s.create(["sleep", "1000"])
    s.call("start")
    with pytest.raises(CommandNotFound):
        s.call("exec", exec_id="x", args=["nocmd"])
    with pytest.raises(CannotInvoke):
        s.call("exec", exec_id="y", args=["/etc"])
    assert s.call("state")["execs"] == []  # type: ignore[index]


# --- exec -e -w -u -----------------------------------------------------------------------------------------------

def test_exec_env_is_merged_into_the_containers_and_cwd_is_used(shim):
    s = shim()
    s.create(["sleep", "1000"], env=["PATH=/bin:/usr/bin", "A=container", "B=kept"])
    s.call("start")
    exit, out = s.run("sh", "-c", "echo $A $B $C; pwd; echo $PATH", env=["A=exec", "C=new"], cwd="/tmp")
    assert exit["code"] == 0
    assert out.decode().splitlines() == ["exec kept new", "/tmp", "/bin:/usr/bin"]


@pytest.mark.parametrize("user,expect", [("", "0 0"), ("65534", "65534 65534"), ("nobody", "65534 65534"),
                                         ("1234", "1234 0"), ("1234:5", "1234 5"), ("nobody:tty", "65534 5"),
                                         ("root:nogroup", "0 65534")])
def test_exec_user_by_id_or_name(shim, user, expect):
    s = shim()
    s.create(["sleep", "1000"])
    s.call("start")
    _, out = s.run("sh", "-c", "echo $(id -u) $(id -g)", user=user)
    assert out.decode().strip() == expect


@pytest.mark.parametrize("user,word", [("nosuchuser", "nosuchuser"), ("root:nosuchgroup", "nosuchgroup"),
                                       ("1:", "1:")])
def test_exec_with_an_unknown_user_is_invalid_argument_naming_it(shim, user, word):
    s = shim()
    s.create(["sleep", "1000"])
    s.call("start")
    with pytest.raises(InvalidArgument, match=word):
        s.call("exec", exec_id="u", args=["true"], user=user)


# --- repeated calls by key ---------------------------------------------------------------------------------------

def test_write_stdin_twice_with_one_key_delivers_the_data_once(shim):
    s = shim()
    s.create(["cat"], stdin=True)
    s.call("start")
    s.call("write_stdin", data=b"once\n", key="k1")
    s.call("write_stdin", data=b"once\n", key="k1")
    s.call("write_stdin", data=b"twice\n", key="k2")
    s.call("close_stdin", key="k3")
    s.call("close_stdin", key="k3")
    assert s.wait()["code"] == 0
    assert s.output() == b"once\ntwice\n"


def test_exec_twice_with_one_key_starts_one_process_and_the_repeat_describes_it(shim):
    s = shim()
    s.create(["sleep", "1000"])
    s.call("start")
    first = s.call("exec", exec_id="x1", args=["sh", "-c", "echo ran >> /tmp/count; echo out"], attach=True,
                   key="exec-1")
    s.wait("x1")
    again = s.call("exec", exec_id="x1", args=["sh", "-c", "echo ran >> /tmp/count; echo out"], attach=True,
                   key="exec-1")
    assert (again["exec_id"], again["pid"]) == (first["exec_id"], first["pid"])  # type: ignore[index]
    assert again["status"] == "stopped" and again["exit"]["code"] == 0  # type: ignore[index]
    assert s.output("x1") == b"out\n"
    with open(os.path.join(s.dir, "fs", "upper", "tmp", "count")) as f:
        assert f.read() == "ran\n"


def test_a_repeat_that_arrives_while_the_first_runs_gets_the_first_outcome(shim):
    import asyncio

    import zmq.asyncio

    from shimproto.rpc import AsyncClient

    s = shim()
    s.create(["sleep", "1000"])
    s.call("start")

    async def both() -> list:
        ctx = zmq.asyncio.Context()
        c = AsyncClient(ctx, os.path.join(s.state, "shim.sock"), "the shim", timeout=30)
        try:
            params = {"exec_id": "p1", "args": ["sleep", "1000"], "key": "par"}
            return await asyncio.gather(c.call("exec", params), c.call("exec", params))
        finally:
            c.close()
            ctx.term()

    a, b = asyncio.run(both())
    assert a["pid"] == b["pid"] and a["exec_id"] == b["exec_id"] == "p1"
    assert [e["exec_id"] for e in s.call("state")["execs"]] == ["p1"]  # type: ignore[index]


def test_a_repeated_failed_call_gets_the_same_typed_error_and_keys_are_checked(shim):
    s = shim()
    s.create(["sleep", "1000"])
    for _ in range(2):
        with pytest.raises(InvalidState, match="cannot pause a created container"):
            s.call("pause", key="p")
    s.call("start", key="s")
    assert s.call("start", key="s")["status"] == "running"  # type: ignore[index]  # the repeat is no error
    with pytest.raises(InvalidArgument, match="already used for a start call"):
        s.call("pause", key="s")
    with pytest.raises(InvalidArgument, match="longer than 64"):
        s.call("kill", signal=0, key="k" * 65)


# --- restart -----------------------------------------------------------------------------------------------------

def test_restart_runs_the_stopped_container_again_on_the_same_root_and_log(shim):
    s = shim()
    s.create(["sh", "-c", "echo run >> /runs; cat /runs; exit 3"])
    with pytest.raises(InvalidState, match="cannot restart a created container"):
        s.call("restart")
    s.call("start")
    assert s.wait()["code"] == 3
    first_pid = s.call("state")["pid"]  # type: ignore[index]
    d = s.call("restart", start=True)
    assert d["pid"] != first_pid  # type: ignore[index]
    assert s.wait()["code"] == 3
    assert s.output() == b"run\nrun\nrun\n"
    types = [e["type"] for e in s.call("events", since=0, timeout=0)["events"]]  # type: ignore[index]
    assert types == ["create", "start", "exit", "create", "start", "exit"]
    d = s.call("restart")  # without start: created, waiting for start
    assert d["status"] == "created"  # type: ignore[index]
    s.call("start")
    assert s.wait()["code"] == 3
    assert s.output().count(b"run\n") == 6


def test_restart_of_a_running_container_is_refused(shim):
    s = shim()
    s.create(["sleep", "1000"])
    s.call("start")
    with pytest.raises(InvalidState, match="cannot restart a running container"):
        s.call("restart", start=True)


def test_restart_keeps_stdin_and_the_exit_file_is_the_new_runs(shim):
    s = shim()
    s.create(["cat"], stdin=True)
    s.call("start")
    s.call("close_stdin")
    s.wait()
    s.call("restart", start=True)
    assert not os.path.exists(os.path.join(s.state, "exit.json"))
    s.call("write_stdin", data=b"second\n")
    s.call("close_stdin")
    assert s.wait()["code"] == 0
    assert s.output() == b"second\n"


# --- logs: tail, since, until, timestamps ------------------------------------------------------------------------

def test_logs_tail_timestamps_and_time_range_through_the_shim(shim):
    s = shim()
    s.create(["sh", "-c", "for i in 1 2 3 4 5; do echo $i; done; sleep 0.3; echo late"])
    s.call("start")
    s.wait()
    r = s.call("logs", tail=2, timestamps=True)
    assert [rec[1] for rec in r["records"]] == [b"5\n", b"late\n"]  # type: ignore[index]
    assert all(len(rec) == 3 and rec[2] > 0 for rec in r["records"])  # type: ignore[index]
    assert r["eof"] is True  # type: ignore[index]
    late = r["records"][-1][2]  # type: ignore[index]
    assert s.output(since=late) == b"late\n"
    assert s.output(until=late - 1) == b"1\n2\n3\n4\n5\n"
    r = s.call("logs", follow=True, until=late - 1, timeout=5)
    assert r["eof"] is True  # type: ignore[index]
    with pytest.raises(InvalidArgument, match="since and until"):
        s.call("logs", since=-1)


def test_restart_of_a_terminal_container_gets_a_new_terminal_and_keeps_its_limits(shim):
    s = shim()
    s.create(["sh", "-c", "tty; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
                          "cat /sys/fs/cgroup/memory.max"], tty=True, memory_limit=64 << 20)
    s.call("start")
    s.wait()
    s.call("restart", start=True)
    assert s.wait()["code"] == 0
    out = s.output().replace(b"\r", b"").decode().split()
    assert out[0].startswith("/dev/pts/") and out[2].startswith("/dev/pts/")
    assert out[1] == out[3] == str(64 << 20)
    assert not [n for n in os.listdir(s.state) if n.endswith(".console")]


def test_a_restart_that_cannot_create_the_new_run_leaves_the_container_stopped(shim):
    s = shim()
    s.create(["/bin/sh", "-c", "rm /bin/sh; exit 4"])  # the first run removes its own command
    s.call("start")
    assert s.wait()["code"] == 4
    for _ in range(2):  # and again: the runtime container is gone already
        with pytest.raises(CommandNotFound, match="/bin/sh"):
            s.call("restart", start=True)
        d = s.call("state")
        assert (d["status"], d["exit"]["code"]) == ("stopped", 4)  # type: ignore[index]
    assert s.call("delete")["exit"]["code"] == 4  # type: ignore[index]
    wait_for(lambda: not os.path.exists(os.path.join(s.state, "bundle")), 10, "the shim's state to go")
